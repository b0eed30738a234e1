//! The layer every RPC passes through, in front of the router (so it sees the RPC's
//! path): it authenticates credd RPCs (health and reflection stay open), checks the
//! RPC's scope, hands the caller and request id to the handler, and records each
//! RPC's status code and latency in its span and in the metrics.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
    time::Instant,
};

use foldhash::fast::FixedState;
use futures_util::future::Either;
use tower::{Layer, Service};

use crate::{
    Error,
    domain::{
        caller::{Actor, Caller, Scope},
        ids,
    },
    metrics::RpcSeries,
    service::{audit::RefusalTally, callers::Authenticator},
};

/// The path prefix of credd's own services; everything else (health, reflection)
/// needs no token.
const CREDD_PATH_PREFIX: &str = "/credd.";

/// Adds [`Rpc`] in front of a service.
#[derive(Clone, Debug)]
pub struct RpcLayer {
    authenticator: Arc<Authenticator>,
    refusals: Arc<RefusalTally>,
}

impl RpcLayer {
    /// A layer that checks callers with `authenticator` and counts refused calls
    /// in `refusals`.
    pub fn new(authenticator: Arc<Authenticator>, refusals: Arc<RefusalTally>) -> Self {
        Self {
            authenticator,
            refusals,
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rpc {
            inner,
            authenticator: self.authenticator.clone(),
            refusals: self.refusals.clone(),
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
    refusals: Arc<RefusalTally>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `x-request-id`, the request's and the response's.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
/// `grpc-status`, read from a trailers-only answer.
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Rpc<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let series = rpc_series(request.uri().path());
        let request_id = request_id(request.headers());
        let mut caller_name = None;
        let answer: Answer<S::Future, S::Response, S::Error> =
            if !request.uri().path().starts_with(CREDD_PATH_PREFIX) {
                Either::Left(self.inner.call(request))
            } else {
                let header = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(http::HeaderValue::as_bytes);
                let known = self.authenticator.authenticate(header);
                // A caller refused for scope is still named in the trail.
                // Looked up once: the refusal's name below and `authorize` read it.
                let scopes = required_scopes(request.uri().path());
                let refused_name = match (&known, scopes) {
                    (Ok(caller), Some(scopes)) if caller.scopes.allow_any(scopes) => None,
                    (Ok(caller), _) => Some(caller.name.clone()),
                    (Err(_), _) => None,
                };
                match authorize(known, scopes) {
                    Ok(caller) => {
                        caller_name = Some(caller.name.clone());
                        Either::Left(self.inner.call(admit(request, caller, &request_id)))
                    }
                    // A well-formed token this server does not know yet may have been
                    // made a moment ago beside it: reload once, then decide. The
                    // service made ready by poll_ready goes into the future; a clone
                    // stays for the next call.
                    Err(Error::Unauthenticated) if self.authenticator.may_know_later(header) => {
                        let header = header.map(<[u8]>::to_vec);
                        let authenticator = self.authenticator.clone();
                        let ready = self.inner.clone();
                        let mut inner = std::mem::replace(&mut self.inner, ready);
                        let request_id = request_id.clone();
                        Either::Right(Either::Left(Box::pin(async move {
                            let known = authenticator
                                .authenticate_after_reload(header.as_deref())
                                .await;
                            match authorize(known, scopes) {
                                Ok(caller) => {
                                    // Inside the RPC's span, like the records below.
                                    tracing::Span::current().record("caller", &*caller.name);
                                    inner.call(admit(request, caller, &request_id)).await
                                }
                                Err(err) => Ok(tonic::Status::from(err).into_http()),
                            }
                        })))
                    }
                    Err(err) => {
                        caller_name = refused_name;
                        let refusal = tonic::Status::from(err).into_http();
                        Either::Right(Either::Right(std::future::ready(Ok(refusal))))
                    }
                }
            };
        let refusals = self.refusals.clone();
        Box::pin(async move {
            // Polled inside the RPC's span (tonic enters it around this future).
            let span = tracing::Span::current();
            span.record("request_id", tracing::field::display(request_id.as_str()));
            if let Some(name) = &caller_name {
                span.record("caller", &**name);
            }
            let mut response = answer.await?;
            response
                .headers_mut()
                .insert(X_REQUEST_ID, request_id.into_header());
            // Errors travel in the headers (trailers-only); a success's status is in
            // the trailers, so no status header means OK.
            let code = grpc_status(response.headers());
            // UNAUTHENTICATED (16) and PERMISSION_DENIED (7), for the trail.
            if code == 16 || code == 7 {
                refusals.record(caller_name.as_deref(), code == 7);
            }
            if crate::telemetry::traces_exported() {
                span.record("rpc.grpc.status_code", code as i64);
            }
            series.observe(code, started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// What the layer waits for: the inner service's call (admitted, or open), the
/// same after reloading the tokens, or a refusal already made. One allocation per
/// RPC (the layer's own future), not one more for this.
type Answer<F, R, E> = Either<F, Either<BoxFuture<Result<R, E>>, std::future::Ready<Result<R, E>>>>;

/// The request id of one RPC: the caller's `x-request-id` when it is a sane one
/// (kept as the header value it came in, without a copy), otherwise a new one.
#[derive(Clone, Debug)]
struct RequestId(http::HeaderValue);

impl RequestId {
    fn as_str(&self) -> &str {
        // Only visible ASCII gets in (see `request_id`), so this never falls back.
        self.0.to_str().unwrap_or_default()
    }

    /// The `x-request-id` response header. Marked sensitive, which HPACK encodes as
    /// "never indexed": a value unique to each response would otherwise be added
    /// to the connection's header table on every answer, searched on the next and
    /// push out the headers that do repeat (content-type, grpc-status).
    fn into_header(self) -> http::HeaderValue {
        let mut value = self.0;
        value.set_sensitive(true);
        value
    }
}

/// The caller, if its scopes allow an RPC that needs one of `required` (the
/// RPC's [`required_scopes`]).
fn authorize(
    authenticated: Result<Caller, Error>,
    required: Option<&'static [Scope]>,
) -> Result<Caller, Error> {
    let caller = authenticated?;
    match required {
        Some(scopes) if caller.scopes.allow_any(scopes) => Ok(caller),
        Some(scopes) => Err(Error::PermissionDenied(format!(
            "this RPC needs the `{}` scope (or `admin`)",
            scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("` or `")
        ))),
        // Deny by default: an RPC nobody assigned a scope is refused to all.
        None => Err(Error::PermissionDenied(
            "this RPC has no scope assigned".into(),
        )),
    }
}

/// `request` with its caller and request id for the handler (one extension: the
/// [`Actor`] of a write is made from it when the handler asks).
fn admit<B>(
    mut request: http::Request<B>,
    caller: Caller,
    request_id: &RequestId,
) -> http::Request<B> {
    request.extensions_mut().insert(Admitted {
        caller,
        request_id: request_id.clone(),
    });
    request
}

/// What the layer hands to the handler of an admitted RPC.
#[derive(Clone, Debug)]
struct Admitted {
    caller: Caller,
    request_id: RequestId,
}

/// Every RPC this server serves, as `/package.Service/Method`, read once from the
/// descriptors it was built with (credd's, health's and reflection's), each with
/// its place in [`SERIES`].
///
/// Hashed with foldhash, not SipHash: every RPC looks its path up here twice (its
/// series and its span's name), and the table is fixed at start, so a caller's
/// made-up paths cannot make it collide.
static KNOWN_METHODS: LazyLock<HashMap<&'static str, usize, FixedState>> = LazyLock::new(|| {
    use prost::Message as _;
    [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    .filter_map(|bytes| prost_types::FileDescriptorSet::decode(bytes).ok())
    .flat_map(|set| set.file)
    .flat_map(|file| {
        let package = file.package().to_owned();
        file.service.into_iter().flat_map(move |service| {
            let prefix = format!("/{package}.{}/", service.name());
            service
                .method
                .into_iter()
                .map(move |method| format!("{prefix}{}", method.name()))
        })
    })
    .map(|path| &*Box::leak(path.into_boxed_str()))
    .collect::<std::collections::BTreeSet<&'static str>>()
    .into_iter()
    .enumerate()
    .map(|(i, path)| (path, i))
    .collect()
});

/// The metric series of every known method, by its place, and last `unknown`'s.
static SERIES: LazyLock<Vec<RpcSeries>> = LazyLock::new(|| {
    let mut methods: Vec<(&'static str, usize)> =
        KNOWN_METHODS.iter().map(|(path, i)| (*path, *i)).collect();
    methods.sort_by_key(|(_, i)| *i);
    methods
        .into_iter()
        .map(|(path, _)| path)
        .chain([UNKNOWN_METHOD])
        .map(RpcSeries::new)
        .collect()
});

/// What metrics and spans call the RPC at `path`: the path itself when it is one
/// of the server's methods, else `unknown` — so a caller who sends endless
/// distinct paths cannot grow the label sets, the /metrics page or memory.
pub fn method_label(path: &str) -> &'static str {
    KNOWN_METHODS
        .get_key_value(path)
        .map_or(UNKNOWN_METHOD, |(path, _)| *path)
}

/// The metric series of the RPC at `path` (`unknown`'s for a path not served).
fn rpc_series(path: &str) -> &'static RpcSeries {
    let index = KNOWN_METHODS.get(path).copied().unwrap_or(SERIES.len() - 1);
    &SERIES[index]
}

/// The label of every path the server does not serve.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The gRPC status code of a response, by number: errors travel in the headers
/// (trailers-only); a success's status is in the trailers, so no status header
/// means OK. Read without building a `Status` (no allocation).
fn grpc_status(headers: &http::HeaderMap) -> usize {
    headers
        .get(GRPC_STATUS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(0)
}

/// The scopes that allow each credd RPC (any one of them, or `admin`); `None`
/// for a path no one assigned. `gateway` allows exactly the gateway's RPCs; its
/// GetOrg is limited to lookups by `client_id` or `custom_domain` in the adapter.
pub fn required_scopes(path: &str) -> Option<&'static [Scope]> {
    use Scope::*;
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some(match (service, method) {
        ("credd.v1.Orgs", "GetOrg") => &[OrgsRead, Gateway],
        ("credd.v1.Orgs", "ListOrgs" | "GetIntegration") => &[OrgsRead],
        ("credd.v1.Orgs", "CreateOrg" | "UpdateOrg" | "DeleteOrg") => &[OrgsWrite],
        (
            "credd.v1.ClientSecrets",
            "GenerateClientSecret"
            | "ImportClientSecret"
            | "ActivateClientSecret"
            | "RevokeClientSecret"
            | "RotateClientSecret",
        ) => &[SecretsWrite],
        ("credd.v1.ClientSecrets", "ListClientSecrets") => &[SecretsRead],
        ("credd.v1.ClientSecrets", "VerifyClientSecret") => &[SecretsVerify, Gateway],
        ("credd.v1.AppRegistrations", "CheckRedirectUri") => &[AppsRead, Gateway],
        (
            "credd.v1.AppRegistrations",
            "GetAppRegistration" | "ListAppRegistrations" | "RenderAssociationFiles",
        ) => &[AppsRead],
        (
            "credd.v1.AppRegistrations",
            "CreateAppRegistration" | "UpdateAppRegistration" | "DeleteAppRegistration",
        ) => &[AppsWrite],
        ("credd.v1.Audit", "ListAuditEvents" | "WatchAuditEvents") => &[AuditRead],
        ("credd.v1.Gateway", "ResolveLogin") => &[Gateway],
        (
            "credd.v1.CallerTokens",
            "CreateCallerToken" | "GetCallerToken" | "ListCallerTokens" | "RevokeCallerToken",
        ) => &[Admin],
        _ => return None,
    })
}

/// The caller's `x-request-id` when it is a sane one (1 to 64 visible ASCII
/// characters), otherwise a new id.
fn request_id(headers: &http::HeaderMap) -> RequestId {
    headers
        .get(X_REQUEST_ID)
        .filter(|id| {
            let id = id.as_bytes();
            !id.is_empty() && id.len() <= 64 && id.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .map_or_else(
            || {
                // A new id is a hyphenated UUID: always a valid header value, and
                // the String's buffer becomes the value's without a copy.
                let id = http::HeaderValue::try_from(ids::new_request_id());
                RequestId(id.unwrap_or(http::HeaderValue::from_static("invalid")))
            },
            RequestId,
        )
}

/// The caller of an authenticated request (its scopes and the orgs it reaches).
pub fn caller<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Admitted>()
        .map(|admitted| admitted.caller.clone())
        // Unreachable behind the layer; reaching nothing is the safe default.
        .unwrap_or_else(|| Caller {
            name: "unknown".into(),
            scopes: crate::domain::caller::Scopes::default(),
            orgs: crate::domain::caller::OrgAccess::of(vec![
                crate::domain::ids::OrgId::from_stored(String::new()),
            ]),
            token: None,
        })
}

/// The actor of an authenticated request, for the audit trail.
pub fn actor<T>(request: &tonic::Request<T>) -> Actor {
    request.extensions().get::<Admitted>().map_or_else(
        || Actor {
            caller: "unknown".to_owned(),
            request_id: ids::new_request_id(),
        },
        |admitted| Actor {
            caller: admitted.caller.name.to_string(),
            request_id: admitted.request_id.as_str().to_owned(),
        },
    )
}
