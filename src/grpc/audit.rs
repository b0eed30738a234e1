//! The `credd.v1.Audit` service.

use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    Error,
    domain::{audit::AuditFilter, paging::PageRequest},
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
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size, &req.page_token).map_err(Error::from)?;
        let filter = AuditFilter {
            org_id: Some(req.org_id).filter(|v| !v.is_empty()),
            action: Some(req.action).filter(|v| !v.is_empty()),
            start_time: req
                .start_time
                .map(|t| convert::time("start_time", t))
                .transpose()?,
            end_time: req
                .end_time
                .map(|t| convert::time("end_time", t))
                .transpose()?,
        };
        let page = self.audit.list(filter, page).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.events.into_iter().map(convert::audit_event).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
