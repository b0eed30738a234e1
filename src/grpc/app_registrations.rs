//! The `credd.v1.AppRegistrations` service. Its RPCs answer UNIMPLEMENTED until their issue lands.

use crate::pb::app_registrations_server::AppRegistrations;

/// Adapter for `credd.v1.AppRegistrations`.
#[derive(Debug, Clone, Default)]
pub struct AppRegistrationsGrpc;

impl AppRegistrations for AppRegistrationsGrpc {}
