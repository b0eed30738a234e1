//! The audit trail's events.

use chrono::{DateTime, Utc};

use super::{
    ids::{AuditEventId, OrgId},
    paging::Keyed,
};

/// One audited action, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Server-assigned id (UUIDv7: sorts by time).
    pub id: AuditEventId,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The caller token's name.
    pub caller: String,
    /// What was done, such as `secret.activate`.
    pub action: String,
    /// The org concerned, if any.
    pub org_id: Option<OrgId>,
    /// The id (or name) of the thing acted on.
    pub target_id: String,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// The request the action was part of.
    pub request_id: String,
    /// Details safe to keep (never a secret), as JSON.
    pub details: String,
}

/// Filters for reading the trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this org's events.
    pub org_id: Option<OrgId>,
    /// Only this action.
    pub action: Option<String>,
    /// At or after.
    pub start_time: Option<DateTime<Utc>>,
    /// Before.
    pub end_time: Option<DateTime<Utc>>,
    /// Only events about this thing (`target_id`).
    pub target_id: Option<String>,
    /// Only events of these orgs (a caller limited to them); `None`: any.
    pub only_orgs: Option<Vec<OrgId>>,
}

impl Keyed for AuditEvent {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}
