//! Reading the audit trail.

use crate::{
    Error,
    domain::{
        audit::{AuditEvent, AuditFilter},
        ids,
        paging::{PageRequest, next_page_token},
    },
    store::Store,
};

/// A page of events, newest first.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events.
    pub events: Vec<AuditEvent>,
    /// Empty on the last page.
    pub next_page_token: String,
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
    pub async fn list(&self, filter: AuditFilter, page: PageRequest) -> Result<EventPage, Error> {
        if let Some(org_id) = &filter.org_id
            && !ids::is_id(org_id)
        {
            return Err(Error::invalid("org_id", "must be an org id (a UUID)"));
        }
        if filter.action.as_ref().is_some_and(|a| a.len() > 64) {
            return Err(Error::invalid("action", "must be at most 64 characters"));
        }
        if let (Some(start), Some(end)) = (filter.start_time, filter.end_time)
            && start >= end
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        let (events, more) = self.store.list_events(&filter, &page).await?;
        let next_page_token = match events.last() {
            Some(last) if more => next_page_token(&last.id),
            _ => String::new(),
        };
        Ok(EventPage {
            events,
            next_page_token,
        })
    }
}
