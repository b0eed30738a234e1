//! Caller authentication for every credd RPC, as a tower layer in front of the
//! router: it sees the RPC's path, so health and reflection stay open.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::{
    Error,
    domain::{
        caller::{Actor, Scope},
        ids,
    },
    service::callers::Authenticator,
};

/// The path prefix of credd's own services; everything else (health, reflection)
/// needs no token.
const CREDD_PATH_PREFIX: &str = "/credd.";

/// Adds [`Auth`] in front of a service.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer that checks callers with `authenticator`.
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// Refuses credd RPCs without a valid caller token (UNAUTHENTICATED) and hands the
/// [`Caller`](crate::domain::caller::Caller) to the handler in the request's
/// extensions.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Auth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with(CREDD_PATH_PREFIX) {
            let needed = required_scope(path);
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            let checked = self
                .authenticator
                .authenticate(header)
                .and_then(|caller| match needed {
                    Some(scope) if caller.scopes.allow(scope) => Ok(caller),
                    Some(scope) => Err(Error::PermissionDenied(format!(
                        "this RPC needs the `{}` scope (or `admin`)",
                        scope.as_str()
                    ))),
                    // Deny by default: an RPC nobody assigned a scope is refused to all.
                    None => Err(Error::PermissionDenied(
                        "this RPC has no scope assigned".into(),
                    )),
                });
            match checked {
                Ok(caller) => {
                    let request_id = request_id(request.headers());
                    request.extensions_mut().insert(Actor {
                        caller: caller.name.clone(),
                        request_id,
                    });
                    request.extensions_mut().insert(caller);
                }
                Err(err) => {
                    let status = tonic::Status::from(err);
                    return Either::Left(ready(Ok(status.into_http())));
                }
            }
        }
        Either::Right(self.inner.call(request))
    }
}

/// The one scope each credd RPC needs; `None` for a path no one assigned.
pub fn required_scope(path: &str) -> Option<Scope> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some(match (service, method) {
        ("credd.v1.Orgs", "GetOrg" | "ListOrgs" | "GetIntegration") => Scope::OrgsRead,
        ("credd.v1.Orgs", "CreateOrg" | "UpdateOrg" | "DeleteOrg") => Scope::OrgsWrite,
        (
            "credd.v1.ClientSecrets",
            "GenerateClientSecret"
            | "ImportClientSecret"
            | "ActivateClientSecret"
            | "RevokeClientSecret"
            | "ListClientSecrets",
        ) => Scope::SecretsWrite,
        ("credd.v1.ClientSecrets", "VerifyClientSecret") => Scope::SecretsVerify,
        (
            "credd.v1.AppRegistrations",
            "GetAppRegistration"
            | "ListAppRegistrations"
            | "CheckRedirectUri"
            | "RenderAssociationFiles",
        ) => Scope::AppsRead,
        (
            "credd.v1.AppRegistrations",
            "CreateAppRegistration" | "UpdateAppRegistration" | "DeleteAppRegistration",
        ) => Scope::AppsWrite,
        ("credd.v1.Audit", "ListAuditEvents") => Scope::AuditRead,
        _ => return None,
    })
}

/// The caller's `x-request-id` when it is a sane one, otherwise a new id.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(ids::new_id, str::to_owned)
}

/// The actor of an authenticated request, for the audit trail.
pub fn actor<T>(request: &tonic::Request<T>) -> Actor {
    request
        .extensions()
        .get::<Actor>()
        .cloned()
        .unwrap_or_else(|| Actor {
            caller: "unknown".to_owned(),
            request_id: ids::new_id(),
        })
}
