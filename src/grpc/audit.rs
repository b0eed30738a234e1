//! The `credd.v1.Audit` service.

use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    Error,
    domain::{
        audit::{AuditFilter, WatchFilter},
        ids::AuditEventId,
    },
    pb::{self, audit_server::Audit},
    service::{
        AuditService,
        events::{AuditFeed, WatchEnd},
    },
};

/// Adapter from `credd.v1.Audit` to [`AuditService`] and the [`AuditFeed`].
#[derive(Debug, Clone)]
pub struct AuditGrpc {
    audit: AuditService,
    feed: AuditFeed,
}

impl AuditGrpc {
    /// The adapter over `audit` and `feed`.
    pub fn new(audit: AuditService, feed: AuditFeed) -> Self {
        Self { audit, feed }
    }
}

/// The status a watch ends with, naming where to resume.
fn end_status(end: WatchEnd) -> Status {
    let resume = |last: Option<AuditEventId>| match last {
        Some(id) => format!("reconnect with after = \"{id}\""),
        None => "reconnect with the after you sent (no event was sent)".to_owned(),
    };
    match end {
        WatchEnd::TooSlow { last } => Status::resource_exhausted(format!(
            "the watcher fell more than {} events behind; {}",
            crate::service::events::FEED_CAPACITY,
            resume(last)
        )),
        WatchEnd::ShuttingDown { last } => {
            Status::unavailable(format!("credd is shutting down; {}", resume(last)))
        }
        WatchEnd::Unavailable { last } => {
            Status::unavailable(format!("the audit trail cannot be read; {}", resume(last)))
        }
    }
}

#[tonic::async_trait]
impl Audit for AuditGrpc {
    async fn watch_audit_events(
        &self,
        request: Request<pb::WatchAuditEventsRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::AuditEvent>>, Status> {
        let caller = super::auth::caller(&request);
        let req = request.into_inner();
        let org_id = (!req.org_id.is_empty() && req.org_id != "-")
            .then(|| convert::org_in_reach(&caller, "org_id", &req.org_id))
            .transpose()?;
        if req.actions.len() > 32 {
            return Err(Error::invalid("actions", "must name at most 32 actions").into());
        }
        if let Some(long) = req.actions.iter().find(|a| a.is_empty() || a.len() > 64) {
            let reason = if long.is_empty() {
                "must not hold an empty action"
            } else {
                "must hold actions of at most 64 characters"
            };
            return Err(Error::invalid("actions", reason).into());
        }
        // Before the store is read: a refused watch costs nothing.
        let slot = self.feed.admit(&caller.name)?;
        let cursor = if req.after.is_empty() {
            self.feed.now_cursor().await?
        } else {
            let after = convert::id(AuditEventId::parse, "after", &req.after)?;
            self.feed.cursor_of("after", &after).await?
        };
        let filter = WatchFilter {
            org_id,
            only_orgs: caller.orgs.orgs().map(<[_]>::to_vec),
            actions: req.actions,
        };
        let events =
            ReceiverStream::new(self.feed.watch(filter, cursor, slot)).map(|item| match item {
                Ok(event) => Ok(convert::audit_event(event)),
                Err(end) => Err(end_status(end)),
            });
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = super::auth::caller(&request);
        let req = request.into_inner();
        let start = req.start_time.map(|t| t.to_string()).unwrap_or_default();
        let end = req.end_time.map(|t| t.to_string()).unwrap_or_default();
        let page = convert::page_request(
            req.page_size,
            &req.page_token,
            &[
                "audit_events",
                &req.org_id,
                &req.action,
                &start,
                &end,
                &req.target_id,
            ],
        )?;
        let filter = AuditFilter {
            org_id: (!req.org_id.is_empty())
                .then(|| convert::org_in_reach(&caller, "org_id", &req.org_id))
                .transpose()?,
            only_orgs: caller.orgs.orgs().map(<[_]>::to_vec),
            action: Some(req.action).filter(|v| !v.is_empty()),
            target_id: Some(req.target_id).filter(|v| !v.is_empty()),
            start_time: req
                .start_time
                .map(|t| convert::time("start_time", t))
                .transpose()?,
            end_time: req
                .end_time
                .map(|t| convert::time("end_time", t))
                .transpose()?,
        };
        let (events, next_page_token) =
            convert::page(self.audit.list(filter, page).await?, convert::audit_event);
        Ok(Response::new(pb::ListAuditEventsResponse {
            events,
            next_page_token,
        }))
    }
}
