//! The layer every RPC passes through, in front of the router (so it sees the RPC's
//! path): it authenticates credd RPCs (health and reflection stay open), checks the
//! RPC's scope, hands the caller and request id to the handler, and records each
//! RPC's status code and latency in its span and in the metrics.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};

use crate::{
    Error,
    domain::{
        caller::{Actor, Scope},
        ids,
    },
    metrics::{METRICS, MethodLabels, RpcLabels},
    service::callers::Authenticator,
};

/// The path prefix of credd's own services; everything else (health, reflection)
/// needs no token.
const CREDD_PATH_PREFIX: &str = "/credd.";

/// Adds [`Rpc`] in front of a service.
#[derive(Clone, Debug)]
pub struct RpcLayer {
    authenticator: Arc<Authenticator>,
}

impl RpcLayer {
    /// A layer that checks callers with `authenticator`.
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rpc {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// Refuses credd RPCs without a valid caller token (UNAUTHENTICATED) or scope
/// (PERMISSION_DENIED), hands the [`Caller`](crate::domain::caller::Caller) and the
/// [`Actor`] to the handler in the request's extensions, and observes the answer.
#[derive(Clone, Debug)]
pub struct Rpc<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Rpc<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().to_owned();
        let request_id = request_id(request.headers());
        let mut caller_name = None;
        let mut refused = None;
        if method.starts_with(CREDD_PATH_PREFIX) {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            let checked = self.authenticator.authenticate(header).and_then(|caller| {
                match required_scope(&method) {
                    Some(scope) if caller.scopes.allow(scope) => Ok(caller),
                    Some(scope) => Err(Error::PermissionDenied(format!(
                        "this RPC needs the `{}` scope (or `admin`)",
                        scope.as_str()
                    ))),
                    // Deny by default: an RPC nobody assigned a scope is refused to all.
                    None => Err(Error::PermissionDenied(
                        "this RPC has no scope assigned".into(),
                    )),
                }
            });
            match checked {
                Ok(caller) => {
                    caller_name = Some(caller.name.clone());
                    request.extensions_mut().insert(Actor {
                        caller: caller.name.clone(),
                        request_id: request_id.clone(),
                    });
                    request.extensions_mut().insert(caller);
                }
                Err(err) => refused = Some(tonic::Status::from(err)),
            }
        }
        let inner = match refused {
            Some(status) => None.ok_or(status),
            None => Ok(self.inner.call(request)),
        };
        Box::pin(async move {
            // Polled inside the RPC's span (tonic enters it around this future).
            let span = tracing::Span::current();
            span.record("request_id", request_id.as_str());
            if let Some(name) = &caller_name {
                span.record("caller", name.as_str());
            }
            let mut response = match inner {
                Ok(future) => future.await?,
                Err(status) => status.into_http(),
            };
            if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-request-id", value);
            }
            // Errors travel in the headers (trailers-only); a success's status is in
            // the trailers, so no status header means OK.
            let code = tonic::Status::from_header_map(response.headers())
                .map_or(tonic::Code::Ok, |status| status.code());
            span.record("rpc.grpc.status_code", code as i32);
            METRICS
                .rpc_requests
                .get_or_create(&RpcLabels {
                    method: method.clone(),
                    code: code_name(code).to_owned(),
                })
                .inc();
            METRICS
                .rpc_duration
                .get_or_create(&MethodLabels { method })
                .observe(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// The canonical upper-case name of a gRPC status code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
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
        .map_or_else(ids::new_request_id, str::to_owned)
}

/// The actor of an authenticated request, for the audit trail.
pub fn actor<T>(request: &tonic::Request<T>) -> Actor {
    request
        .extensions()
        .get::<Actor>()
        .cloned()
        .unwrap_or_else(|| Actor {
            caller: "unknown".to_owned(),
            request_id: ids::new_request_id(),
        })
}
