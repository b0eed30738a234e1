//! The audit trail: appended inside the transaction of the change it records, read
//! newest first. Nothing here updates or deletes an event.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, Order,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};

use super::{Store, entities::audit_events, page_of};
use crate::{
    Error,
    domain::{
        audit::{AuditEvent, AuditFilter},
        caller::Actor,
        ids::{AuditEventId, OrgId},
        paging::{Page, PageRequest},
    },
};

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    action: &'static str,
    org_id: Option<OrgId>,
    target_id: String,
    actor: Actor,
    outcome: String,
    details: serde_json::Value,
}

impl NewEvent {
    /// `actor` did `action` to `target_id` (of org `org_id`), successfully.
    pub fn new(
        actor: &Actor,
        action: &'static str,
        org_id: Option<&OrgId>,
        target_id: impl AsRef<str>,
    ) -> Self {
        Self {
            action,
            org_id: org_id.cloned(),
            target_id: target_id.as_ref().to_owned(),
            actor: actor.clone(),
            outcome: "ok".to_owned(),
            details: serde_json::Value::Null,
        }
    }

    /// Adds details (never a secret).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Adds one detail to those already set.
    pub fn with_detail(mut self, key: &str, value: serde_json::Value) -> Self {
        if !self.details.is_object() {
            self.details = serde_json::json!({});
        }
        if let Some(details) = self.details.as_object_mut() {
            details.insert(key.to_owned(), value);
        }
        self
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }
}

/// Appends `event` in `txn`, so that the event commits with its change.
///
/// Its `seq` comes from the one-row audit counter: the row lock the increment
/// takes is held to the commit, so appending transactions commit in `seq` order
/// and a reader going on from the last `seq` it saw (WatchAuditEvents) misses
/// nothing. Every transaction that appends does so before it announces a change
/// (`changes::announce`), so the two counters are always locked in one order.
pub(super) async fn append(
    txn: &super::pooled::Txn,
    event: NewEvent,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let backend = txn.get_database_backend();
    let seq = txn
        .query_one_raw(Statement::from_string(
            backend,
            "UPDATE audit_counter SET value = value + 1 WHERE id = 1 RETURNING value",
        ))
        .await?
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        .ok_or_else(|| Error::Internal("the audit counter row is missing".into()))?;
    audit_events::ActiveModel {
        seq: Set(Some(seq)),
        id: Set(AuditEventId::generate().into_string()),
        time: Set(now),
        caller: Set(event.actor.caller),
        action: Set(event.action.to_owned()),
        org_id: Set(event.org_id.map(OrgId::into_string)),
        target_id: Set(event.target_id),
        outcome: Set(event.outcome),
        request_id: Set(event.actor.request_id),
        details: Set(if event.details.is_null() {
            String::new()
        } else {
            event.details.to_string()
        }),
    }
    .insert(txn)
    .await?;
    Ok(())
}

impl From<audit_events::Model> for AuditEvent {
    fn from(row: audit_events::Model) -> Self {
        AuditEvent {
            id: AuditEventId::from_stored(row.id),
            time: row.time,
            caller: row.caller,
            action: row.action,
            org_id: row.org_id.map(OrgId::from_stored),
            target_id: row.target_id,
            outcome: row.outcome,
            request_id: row.request_id,
            details: row.details,
        }
    }
}

impl Store {
    /// Appends an event that records no change of its own (such as failed
    /// verifications).
    #[tracing::instrument(name = "store.append_event", skip_all)]
    pub async fn append_event(&self, event: NewEvent, now: DateTime<Utc>) -> Result<(), Error> {
        // A transaction of its own: the counter's lock must last to the commit.
        let txn = self.begin().await?;
        append(&txn, event, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The events after `after` in commit order (`seq`), oldest first, at most
    /// `limit`, each with its `seq`.
    #[tracing::instrument(name = "store.events_after", skip_all)]
    pub async fn events_after(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(i64, AuditEvent)>, Error> {
        Ok(audit_events::Entity::find()
            .filter(audit_events::Column::Seq.gt(after))
            .order_by_asc(audit_events::Column::Seq)
            .limit(limit)
            .all(&self.conn())
            .await?
            .into_iter()
            .map(|row| (row.seq.unwrap_or_default(), AuditEvent::from(row)))
            .collect())
    }

    /// The `seq` of event `id`, if there is such an event.
    pub async fn event_seq(&self, id: &AuditEventId) -> Result<Option<i64>, Error> {
        Ok(audit_events::Entity::find_by_id(id.as_str())
            .one(&self.conn())
            .await?
            .and_then(|row| row.seq))
    }

    /// The newest event's `seq` (0 for an empty trail).
    pub async fn last_event_seq(&self) -> Result<i64, Error> {
        Ok(audit_events::Entity::find()
            .select_only()
            .column_as(audit_events::Column::Seq.max(), "last")
            .into_tuple::<Option<i64>>()
            .one(&self.conn())
            .await?
            .flatten()
            .unwrap_or(0))
    }

    /// One page of events matching `filter`, newest first.
    #[tracing::instrument(name = "store.list_events", skip_all)]
    pub async fn list_events(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, Error> {
        let mut query = audit_events::Entity::find();
        if let Some(org_id) = &filter.org_id {
            query = query.filter(audit_events::Column::OrgId.eq(org_id.as_str()));
        }
        if let Some(only) = &filter.only_orgs {
            query = query.filter(audit_events::Column::OrgId.is_in(only.iter().map(OrgId::as_str)));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit_events::Column::Action.eq(action.as_str()));
        }
        if let Some(target) = &filter.target_id {
            query = query.filter(audit_events::Column::TargetId.eq(target.as_str()));
        }
        if let Some(start) = filter.start_time {
            query = query.filter(audit_events::Column::Time.gte(start));
        }
        if let Some(end) = filter.end_time {
            query = query.filter(audit_events::Column::Time.lt(end));
        }
        page_of(
            &self.conn(),
            query,
            audit_events::Column::Id,
            Order::Desc,
            page,
            |row| Ok(AuditEvent::from(row)),
        )
        .await
    }
}
