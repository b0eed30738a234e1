//! The `credd.v1.Audit` service. Its RPCs answer UNIMPLEMENTED until their issue lands.

use crate::pb::audit_server::Audit;

/// Adapter for `credd.v1.Audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditGrpc;

impl Audit for AuditGrpc {}
