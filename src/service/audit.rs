//! Reading the audit trail.

use crate::{
    Error,
    domain::{
        audit::{AuditEvent, AuditFilter},
        paging::{Page, PageRequest},
    },
    store::Store,
};

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
        if let (Some(start), Some(end)) = (filter.start_time, filter.end_time)
            && start >= end
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        self.store.list_events(&filter, &page).await
    }
}
