//! The `credd.v1.Gateway` service.

use tonic::{Request, Response, Status};

use super::{auth, convert};
use crate::{
    domain::ids::ClientId,
    pb::{self, gateway_server::Gateway},
    service::{
        GatewayService,
        gateway::{Login, LoginRefusal},
    },
};

/// Adapter from `credd.v1.Gateway` to [`GatewayService`].
#[derive(Debug, Clone)]
pub struct GatewayGrpc {
    gateway: GatewayService,
    default_login_domain: String,
}

impl GatewayGrpc {
    /// The adapter over `gateway`; orgs without a custom domain show
    /// `default_login_domain` as their login domain.
    pub fn new(gateway: GatewayService, default_login_domain: String) -> Self {
        Self {
            gateway,
            default_login_domain,
        }
    }
}

#[tonic::async_trait]
impl Gateway for GatewayGrpc {
    async fn resolve_login(
        &self,
        request: Request<pb::ResolveLoginRequest>,
    ) -> Result<Response<pb::ResolveLoginResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let login = self.gateway.resolve(
            &req.host,
            ClientId::parse(&req.client_id).as_ref(),
            &req.redirect_uri,
            &caller.orgs,
        )?;
        Ok(Response::new(match login {
            Login::Allowed {
                org,
                app_id,
                pkce_required,
            } => {
                let login_domain = org.login_domain(&self.default_login_domain).to_owned();
                pb::ResolveLoginResponse {
                    allowed: true,
                    reason: pb::LoginRefusal::Unspecified.into(),
                    org: Some(convert::org(*org, login_domain)),
                    app_registration_id: app_id.into_string(),
                    pkce_required,
                }
            }
            Login::Refused(reason) => pb::ResolveLoginResponse {
                reason: match reason {
                    LoginRefusal::HostUnknown => pb::LoginRefusal::HostUnknown,
                    LoginRefusal::ClientUnknown => pb::LoginRefusal::ClientUnknown,
                    LoginRefusal::ClientNotOnHost => pb::LoginRefusal::ClientNotOnHost,
                    LoginRefusal::RedirectNotRegistered => pb::LoginRefusal::RedirectNotRegistered,
                }
                .into(),
                ..Default::default()
            },
        }))
    }
}
