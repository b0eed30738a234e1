//! gRPC adapters: one per proto service. Each RPC converts the request, calls the
//! use case, converts the answer; no business rule lives here.

pub mod app_registrations;
pub mod audit;
pub mod auth;
pub mod caller_tokens;
pub mod client_secrets;
pub mod convert;
pub mod gateway;
pub mod health;
pub mod orgs;

pub use app_registrations::AppRegistrationsGrpc;
pub use audit::AuditGrpc;
pub use caller_tokens::CallerTokensGrpc;
pub use client_secrets::ClientSecretsGrpc;
pub use gateway::GatewayGrpc;
pub use orgs::OrgsGrpc;
