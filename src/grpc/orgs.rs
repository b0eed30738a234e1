//! The `credd.v1.Orgs` service.

use tonic::{Request, Response, Status};

use super::{auth, convert};
use crate::{
    Error,
    domain::{
        caller::{OrgAccess, Scope},
        ids::OrgId,
        org::{NewOrg, OrgChanges},
    },
    pb::{self, get_org_request::Lookup, orgs_server::Orgs},
    service::{OrgService, orgs::OrgLookup},
};

/// Adapter from `credd.v1.Orgs` to [`OrgService`].
#[derive(Debug, Clone)]
pub struct OrgsGrpc {
    orgs: OrgService,
}

impl OrgsGrpc {
    /// The adapter over `orgs`.
    pub fn new(orgs: OrgService) -> Self {
        Self { orgs }
    }

    fn reply(&self, org: crate::domain::org::Org) -> Response<pb::Org> {
        let login_domain = self.orgs.login_domain(&org);
        Response::new(convert::org(org, login_domain))
    }
}

#[tonic::async_trait]
impl Orgs for OrgsGrpc {
    async fn create_org(
        &self,
        request: Request<pb::CreateOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        let actor = auth::actor(&request);
        if auth::caller(&request).orgs != OrgAccess::All {
            return Err(Error::PermissionDenied(
                "a caller token limited to orgs (org_ids) cannot create orgs".into(),
            )
            .into());
        }
        let req = request.into_inner();
        let new = NewOrg::parse(&req.name, &req.main_website, &req.custom_domain)
            .map_err(Error::Invalid)?;
        Ok(self.reply(self.orgs.create(&actor, new).await?))
    }

    async fn get_org(
        &self,
        request: Request<pb::GetOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        let caller = auth::caller(&request);
        let lookup = match request.into_inner().lookup {
            // The gateway resolves hosts and client IDs, never ids.
            Some(Lookup::Id(_)) if !caller.scopes.allow(Scope::OrgsRead) => {
                return Err(Error::PermissionDenied(
                    "scope `gateway` gets orgs by client_id or custom_domain only; by id needs `orgs:read`"
                        .into(),
                )
                .into());
            }
            Some(Lookup::Id(id)) => OrgLookup::Id(convert::id(OrgId::parse, "id", &id)?),
            Some(Lookup::ClientId(client_id)) => {
                OrgLookup::ClientId(convert::client_id_lookup(&client_id)?)
            }
            Some(Lookup::CustomDomain(domain)) => OrgLookup::CustomDomain(domain),
            None => {
                return Err(
                    Error::invalid("lookup", "set one of id, client_id or custom_domain").into(),
                );
            }
        };
        Ok(self.reply(self.orgs.get(lookup, &caller.orgs).await?))
    }

    async fn list_orgs(
        &self,
        request: Request<pb::ListOrgsRequest>,
    ) -> Result<Response<pb::ListOrgsResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let page = convert::page_request(req.page_size, &req.page_token, &["orgs"])?;
        let listed = self.orgs.list(page, &caller.orgs).await?;
        let (orgs, next_page_token) = convert::page(listed, |org| {
            let login_domain = self.orgs.login_domain(&org);
            convert::org(org, login_domain)
        });
        Ok(Response::new(pb::ListOrgsResponse {
            orgs,
            next_page_token,
        }))
    }

    async fn update_org(
        &self,
        request: Request<pb::UpdateOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org = req
            .org
            .ok_or_else(|| Error::invalid("org", "is required"))?;
        let id = convert::org_in_reach(&caller, "org.id", &org.id)?;
        let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
        let policy = convert::policy_input(org.credential_policy)?;
        let changes = OrgChanges::parse(
            &paths,
            &org.name,
            &org.main_website,
            &org.custom_domain,
            policy,
        )
        .map_err(Error::Invalid)?;
        Ok(self.reply(self.orgs.update(&actor, &id, changes).await?))
    }

    async fn delete_org(
        &self,
        request: Request<pb::DeleteOrgRequest>,
    ) -> Result<Response<()>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let id = convert::org_in_reach(&caller, "id", &request.into_inner().id)?;
        self.orgs.delete(&actor, &id).await?;
        Ok(Response::new(()))
    }

    async fn get_integration(
        &self,
        request: Request<pb::GetIntegrationRequest>,
    ) -> Result<Response<pb::GetIntegrationResponse>, Status> {
        let caller = auth::caller(&request);
        let org_id = convert::org_in_reach(&caller, "org_id", &request.into_inner().org_id)?;
        let integration = self.orgs.integration(&org_id).await?;
        let secrets = integration.secrets;
        Ok(Response::new(pb::GetIntegrationResponse {
            org_id: integration.org.id.into_string(),
            login_domain: integration.login_domain,
            client_id: integration.org.client_id.into_string(),
            active_secret: secrets.active.map(convert::client_secret),
            pending_secret_count: i32::try_from(secrets.pending_count).unwrap_or(i32::MAX),
            retiring_secrets: secrets
                .retiring
                .into_iter()
                .map(convert::client_secret)
                .collect(),
        }))
    }
}
