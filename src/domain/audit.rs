//! The audit trail's events.

use chrono::{DateTime, Utc};

use super::{
    caller::ReachedOrg,
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

/// What a watcher of the trail is shown: events of one org or of every org it
/// reaches, with one of `actions` (any when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Only this org's events (one the caller reaches).
    pub org_id: Option<ReachedOrg>,
    /// Only events of these orgs (a caller limited to them; events of no org are
    /// not theirs either); `None`: any.
    pub only_orgs: Option<Vec<OrgId>>,
    /// Only these actions; empty: every action.
    pub actions: Vec<String>,
}

impl WatchFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        if let Some(org_id) = &self.org_id
            && event.org_id.as_ref() != Some(org_id.id())
        {
            return false;
        }
        if let Some(only) = &self.only_orgs
            && !event.org_id.as_ref().is_some_and(|org| only.contains(org))
        {
            return false;
        }
        self.actions.is_empty() || self.actions.contains(&event.action)
    }
}

/// Filters for reading the trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this org's events (one the caller reaches).
    pub org_id: Option<ReachedOrg>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(org: Option<&str>, action: &str) -> AuditEvent {
        AuditEvent {
            id: AuditEventId::from_stored("e".into()),
            time: chrono::Utc::now(),
            caller: "c".into(),
            action: action.into(),
            org_id: org.map(|o| OrgId::from_stored(o.into())),
            target_id: "t".into(),
            outcome: "ok".into(),
            request_id: "r".into(),
            details: String::new(),
        }
    }

    #[test]
    fn a_watch_filter_shows_its_orgs_and_actions_only() {
        let org = |o: &str| OrgId::from_stored(o.into());
        let all = WatchFilter::default();
        assert!(all.matches(&event(None, "token.create")));
        assert!(all.matches(&event(Some("a"), "secret.activate")));
        let limited = WatchFilter {
            only_orgs: Some(vec![org("a")]),
            ..Default::default()
        };
        assert!(limited.matches(&event(Some("a"), "secret.activate")));
        assert!(!limited.matches(&event(Some("b"), "secret.activate")));
        assert!(
            !limited.matches(&event(None, "token.create")),
            "no org: not theirs"
        );
        let one = WatchFilter {
            org_id: Some(ReachedOrg::by_credd(org("b"))),
            actions: vec!["secret.revoke".into(), "secret.expired".into()],
            ..Default::default()
        };
        assert!(one.matches(&event(Some("b"), "secret.expired")));
        assert!(!one.matches(&event(Some("b"), "secret.activate")));
        assert!(!one.matches(&event(Some("a"), "secret.expired")));
    }
}
