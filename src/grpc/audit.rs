//! The `credd.v1.Audit` service.

use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    domain::audit::AuditFilter,
    pb::{self, audit_server::Audit},
    service::AuditService,
};

/// Adapter from `credd.v1.Audit` to [`AuditService`].
#[derive(Debug, Clone)]
pub struct AuditGrpc {
    audit: AuditService,
}

impl AuditGrpc {
    /// The adapter over `audit`.
    pub fn new(audit: AuditService) -> Self {
        Self { audit }
    }
}

#[tonic::async_trait]
impl Audit for AuditGrpc {
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
