//! The `credd.v1.AppRegistrations` service.

use tonic::{Request, Response, Status};

use super::{auth, convert};
use crate::{
    Error,
    domain::{app::AppInput, paging::PageRequest},
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
        let req = request.into_inner();
        let platform = convert::platform(req.platform());
        let input = AppInput {
            name: req.name,
            bundle_id: req.bundle_id,
            package_name: req.package_name,
            app_link: req.app_link,
            callback_url: req.callback_url,
            apple_team_id: req.apple_team_id,
            sha256_cert_fingerprints: req.sha256_cert_fingerprints,
            require_pkce: req.require_pkce,
        };
        let app = self
            .apps
            .create(&actor, &req.org_id, platform, input)
            .await?;
        Ok(Response::new(convert::app_registration(app)))
    }

    async fn get_app_registration(
        &self,
        request: Request<pb::GetAppRegistrationRequest>,
    ) -> Result<Response<pb::AppRegistration>, Status> {
        let app = self.apps.get(&request.into_inner().id).await?;
        Ok(Response::new(convert::app_registration(app)))
    }

    async fn list_app_registrations(
        &self,
        request: Request<pb::ListAppRegistrationsRequest>,
    ) -> Result<Response<pb::ListAppRegistrationsResponse>, Status> {
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size, &req.page_token).map_err(Error::from)?;
        let page = self.apps.list(&req.org_id, page).await?;
        Ok(Response::new(pb::ListAppRegistrationsResponse {
            app_registrations: page
                .apps
                .into_iter()
                .map(convert::app_registration)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_app_registration(
        &self,
        request: Request<pb::UpdateAppRegistrationRequest>,
    ) -> Result<Response<pb::AppRegistration>, Status> {
        let actor = auth::actor(&request);
        let req = request.into_inner();
        let app = req
            .app_registration
            .ok_or_else(|| Error::invalid("app_registration", "is required"))?;
        let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
        let input = AppInput {
            name: app.name,
            bundle_id: app.bundle_id,
            package_name: app.package_name,
            app_link: app.app_link,
            callback_url: app.callback_url,
            apple_team_id: app.apple_team_id,
            sha256_cert_fingerprints: app.sha256_cert_fingerprints,
            require_pkce: Some(app.require_pkce),
        };
        let app = self.apps.update(&actor, &app.id, &paths, input).await?;
        Ok(Response::new(convert::app_registration(app)))
    }

    async fn delete_app_registration(
        &self,
        request: Request<pb::DeleteAppRegistrationRequest>,
    ) -> Result<Response<()>, Status> {
        let actor = auth::actor(&request);
        self.apps.delete(&actor, &request.into_inner().id).await?;
        Ok(Response::new(()))
    }

    async fn check_redirect_uri(
        &self,
        request: Request<pb::CheckRedirectUriRequest>,
    ) -> Result<Response<pb::CheckRedirectUriResponse>, Status> {
        let req = request.into_inner();
        let check = self
            .apps
            .check_redirect(&req.client_id, &req.redirect_uri)
            .await?;
        Ok(Response::new(pb::CheckRedirectUriResponse {
            allowed: check.app_id.is_some(),
            app_registration_id: check.app_id.unwrap_or_default(),
            pkce_required: check.pkce_required,
        }))
    }

    async fn render_association_files(
        &self,
        request: Request<pb::RenderAssociationFilesRequest>,
    ) -> Result<Response<pb::RenderAssociationFilesResponse>, Status> {
        let rendered = self
            .apps
            .association_files(&request.into_inner().org_id)
            .await?;
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
