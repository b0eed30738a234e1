//! The `credd.v1.ClientSecrets` service. Its RPCs answer UNIMPLEMENTED until their issue lands.

use crate::pb::client_secrets_server::ClientSecrets;

/// Adapter for `credd.v1.ClientSecrets`.
#[derive(Debug, Clone, Default)]
pub struct ClientSecretsGrpc;

impl ClientSecrets for ClientSecretsGrpc {}
