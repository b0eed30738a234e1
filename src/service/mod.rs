//! Use cases: each validates through `domain`, runs its transaction through `store`,
//! and is what the gRPC adapters call.

pub mod app_registrations;
pub mod audit;
pub mod callers;
pub mod client_secrets;
pub mod clock;
pub mod directory;
pub mod events;
pub mod gateway;
pub mod hasher;
pub mod orgs;
pub mod throttle;
pub mod verify;
pub mod verify_cache;

pub use app_registrations::AppService;
pub use audit::AuditService;
pub use client_secrets::SecretService;
pub use clock::{Clock, ManualClock, SystemClock};
pub use gateway::GatewayService;
pub use orgs::OrgService;
pub use verify::VerifyService;

/// The one check of org-scoped caller tokens: `Ok` when `access` reaches
/// `org_id`, else PERMISSION_DENIED — whether the org exists or not (AIP-211),
/// so that a token cannot learn which orgs exist outside its own.
pub fn reach(
    access: &crate::domain::caller::OrgAccess,
    org_id: crate::domain::ids::OrgId,
) -> Result<crate::domain::caller::ReachedOrg, crate::Error> {
    access.admit(org_id).ok_or_else(|| {
        crate::Error::PermissionDenied("this caller token does not reach this org (org_ids)".into())
    })
}

/// For a caller limited to orgs, a thing named by its own id that was not found
/// is PERMISSION_DENIED (it may exist in an org the caller does not reach); for
/// one that reaches every org, `missing`.
pub fn missing_for(
    access: &crate::domain::caller::OrgAccess,
    missing: crate::Error,
) -> crate::Error {
    match access {
        crate::domain::caller::OrgAccess::All => missing,
        crate::domain::caller::OrgAccess::Only(_) => crate::Error::PermissionDenied(
            "this caller token does not reach the org of this resource (org_ids)".into(),
        ),
    }
}

/// Names the org in the current RPC's span (and so in its exported trace).
pub(crate) fn record_org(org_id: &crate::domain::ids::OrgId) {
    // Shown as is (an id is plain ASCII), not quoted and escaped.
    tracing::Span::current().record("org_id", tracing::field::display(org_id.as_str()));
}
