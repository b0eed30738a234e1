//! Reading the audit trail.

use std::{collections::HashMap, sync::Mutex};

use crate::{
    Error,
    domain::{
        audit::{AuditEvent, AuditFilter},
        caller::Actor,
        paging::{Page, PageRequest},
    },
    store::{Store, audit::NewEvent},
};

/// Refused calls (UNAUTHENTICATED, PERMISSION_DENIED) counted per caller — a
/// token's name, or `unknown` for no token or one that is not known: bounded by
/// the tokens that exist, whatever callers send — and written as one
/// `auth.refused` event per caller per flush (a minute), with the counts.
#[derive(Debug, Default)]
pub struct RefusalTally {
    counts: Mutex<HashMap<String, Refused>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Refused {
    unauthenticated: u64,
    permission_denied: u64,
}

impl RefusalTally {
    /// Counts one refusal of `caller` (`None`: unknown): `authenticated` false for
    /// UNAUTHENTICATED, true for PERMISSION_DENIED.
    pub fn record(&self, caller: Option<&str>, authenticated: bool) {
        if let Ok(mut counts) = self.counts.lock() {
            let entry = counts
                .entry(caller.unwrap_or("unknown").to_owned())
                .or_default();
            if authenticated {
                entry.permission_denied += 1;
            } else {
                entry.unauthenticated += 1;
            }
        }
    }

    /// Writes the counts since the last flush as `auth.refused` events.
    pub async fn flush(&self, store: &Store, now: chrono::DateTime<chrono::Utc>) {
        let counts: Vec<(String, Refused)> = match self.counts.lock() {
            Ok(mut counts) => counts.drain().collect(),
            Err(_) => return,
        };
        let actor = Actor::internal("credd");
        for (caller, refused) in counts {
            let event = NewEvent::new(&actor, "auth.refused", None, &caller)
                .outcome("refused")
                .details(serde_json::json!({
                    "caller": caller,
                    "unauthenticated": refused.unauthenticated,
                    "permission_denied": refused.permission_denied,
                }));
            if let Err(err) = store.append_event(event, now).await {
                tracing::warn!(%caller, error = %err, "could not record refused calls");
            }
        }
    }
}

/// Audit trail use cases. There is no way to change or delete an event.
#[derive(Debug, Clone)]
pub struct AuditService {
    store: Store,
}

impl AuditService {
    /// The service over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// A page of events matching `filter`, newest first.
    pub async fn list(
        &self,
        filter: AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, Error> {
        if filter.action.as_ref().is_some_and(|a| a.len() > 64) {
            return Err(Error::invalid("action", "must be at most 64 characters"));
        }
        if filter.target_id.as_ref().is_some_and(|t| t.len() > 128) {
            return Err(Error::invalid(
                "target_id",
                "must be at most 128 characters",
            ));
        }
        if let (Some(start), Some(end)) = (filter.start_time, filter.end_time)
            && start >= end
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        self.store.list_events(&filter, &page).await
    }
}
