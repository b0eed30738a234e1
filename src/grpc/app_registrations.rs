//! The `credd.v1.AppRegistrations` service.

use tonic::{Request, Response, Status};

use super::{
    auth,
    convert::{self, app_input},
};
use crate::{
    Error,
    domain::ids::{AppRegistrationId, ClientId},
    pb::{self, app_registrations_server::AppRegistrations},
    service::AppService,
};

/// Adapter from `credd.v1.AppRegistrations` to [`AppService`].
#[derive(Debug, Clone)]
pub struct AppRegistrationsGrpc {
    apps: AppService,
}

impl AppRegistrationsGrpc {
    /// The adapter over `apps`.
    pub fn new(apps: AppService) -> Self {
        Self { apps }
    }
}

#[tonic::async_trait]
impl AppRegistrations for AppRegistrationsGrpc {
    async fn create_app_registration(
        &self,
        request: Request<pb::CreateAppRegistrationRequest>,
    ) -> Result<Response<pb::AppRegistration>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org_id = convert::org_in_reach(&caller, "org_id", &req.org_id)?;
        let platform = convert::platform(req.platform())?;
        let input = app_input!(req, |r: &pb::CreateAppRegistrationRequest| r.require_pkce);
        let app = self.apps.create(&actor, &org_id, platform, input).await?;
        Ok(Response::new(convert::app_registration(app)))
    }

    async fn get_app_registration(
        &self,
        request: Request<pb::GetAppRegistrationRequest>,
    ) -> Result<Response<pb::AppRegistration>, Status> {
        let caller = auth::caller(&request);
        let id = convert::id(AppRegistrationId::parse, "id", &request.into_inner().id)?;
        let app = self.apps.get(&id, &caller.orgs).await?;
        Ok(Response::new(convert::app_registration(app)))
    }

    async fn list_app_registrations(
        &self,
        request: Request<pb::ListAppRegistrationsRequest>,
    ) -> Result<Response<pb::ListAppRegistrationsResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org_id = convert::org_in_reach(&caller, "org_id", &req.org_id)?;
        let page = convert::page_request(
            req.page_size,
            &req.page_token,
            &["app_registrations", org_id.as_str()],
        )?;
        let (app_registrations, next_page_token) = convert::page(
            self.apps.list(&org_id, page).await?,
            convert::app_registration,
        );
        Ok(Response::new(pb::ListAppRegistrationsResponse {
            app_registrations,
            next_page_token,
        }))
    }

    async fn update_app_registration(
        &self,
        request: Request<pb::UpdateAppRegistrationRequest>,
    ) -> Result<Response<pb::AppRegistration>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let app = req
            .app_registration
            .ok_or_else(|| Error::invalid("app_registration", "is required"))?;
        let id = convert::id(AppRegistrationId::parse, "app_registration.id", &app.id)?;
        let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
        let input = app_input!(app, |a: &pb::AppRegistration| Some(a.require_pkce));
        let app = self
            .apps
            .update(&actor, &caller.orgs, &id, &paths, input)
            .await?;
        Ok(Response::new(convert::app_registration(app)))
    }

    async fn delete_app_registration(
        &self,
        request: Request<pb::DeleteAppRegistrationRequest>,
    ) -> Result<Response<()>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let id = convert::id(AppRegistrationId::parse, "id", &request.into_inner().id)?;
        self.apps.delete(&actor, &caller.orgs, &id).await?;
        Ok(Response::new(()))
    }

    async fn check_redirect_uri(
        &self,
        request: Request<pb::CheckRedirectUriRequest>,
    ) -> Result<Response<pb::CheckRedirectUriResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let check = self
            .apps
            .check_redirect(
                ClientId::parse(&req.client_id).as_ref(),
                &req.redirect_uri,
                &caller.orgs,
            )
            .await?;
        Ok(Response::new(pb::CheckRedirectUriResponse {
            allowed: check.app_id.is_some(),
            app_registration_id: check
                .app_id
                .map(AppRegistrationId::into_string)
                .unwrap_or_default(),
            pkce_required: check.pkce_required,
        }))
    }

    async fn render_association_files(
        &self,
        request: Request<pb::RenderAssociationFilesRequest>,
    ) -> Result<Response<pb::RenderAssociationFilesResponse>, Status> {
        let caller = auth::caller(&request);
        let org_id = convert::org_in_reach(&caller, "org_id", &request.into_inner().org_id)?;
        let rendered = self.apps.association_files(&org_id).await?;
        Ok(Response::new(pb::RenderAssociationFilesResponse {
            files: rendered
                .files
                .into_iter()
                .map(|file| pb::AssociationFile {
                    host: file.host,
                    path: file.path,
                    content: file.content,
                })
                .collect(),
            problems: rendered.problems,
        }))
    }
}
