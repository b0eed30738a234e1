//! Use cases: each validates through `domain`, runs its transaction through `store`,
//! and is what the gRPC adapters call.

pub mod app_registrations;
pub mod audit;
pub mod callers;
pub mod client_secrets;
pub mod clock;
pub mod directory;
pub mod hasher;
pub mod orgs;
pub mod throttle;
pub mod verify;
pub mod verify_cache;

pub use app_registrations::AppService;
pub use audit::AuditService;
pub use client_secrets::SecretService;
pub use clock::{Clock, ManualClock, SystemClock};
pub use orgs::OrgService;
pub use verify::VerifyService;

/// Names the org in the current RPC's span (and so in its exported trace).
pub(crate) fn record_org(org_id: &crate::domain::ids::OrgId) {
    tracing::Span::current().record("org_id", org_id.as_str());
}
