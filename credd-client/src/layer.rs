//! `ClientAuthLayer`: OAuth client credentials checked with credd in front of any
//! tower HTTP service.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::{
    Credd,
    basic::{self, Malformed},
    cache::{Known, VerdictCache},
};

/// Who a request that passed [`ClientAuthLayer`] comes from (in its extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedClient {
    /// The client ID it presented.
    pub client_id: String,
    /// Its org in credd.
    pub org_id: String,
    /// The secret that verified.
    pub secret_id: String,
}

/// A tower layer that lets through only requests whose `Authorization: Basic`
/// carries a client ID and secret credd verifies.
///
/// Answers 401 with `WWW-Authenticate: Basic realm="…"` when there are no
/// credentials, they are malformed or credd says no; 503 with `Retry-After`
/// when credd cannot give a verdict (unreachable, overloaded, or this token
/// lacks `secrets:verify`). Valid verdicts are kept for a few seconds (5 by
/// default) and forgotten as soon as credd's audit trail names their org (the
/// token needs `audit:read` for that; without it they are kept 1 s at most).
#[derive(Clone, Debug)]
pub struct ClientAuthLayer {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    credd: Credd,
    cache: Arc<VerdictCache>,
    challenge: HeaderValue,
}

impl ClientAuthLayer {
    /// The layer over `credd`, keeping valid verdicts for 5 s. Starts the task
    /// that follows credd's audit trail, so it must be called inside a tokio
    /// runtime.
    pub fn new(credd: Credd) -> Self {
        Self::with_ttl(credd, Duration::from_secs(5))
    }

    /// [`ClientAuthLayer::new`], keeping valid verdicts for `ttl` (zero: ask
    /// credd every time).
    pub fn with_ttl(credd: Credd, ttl: Duration) -> Self {
        let cache = crate::cache::watched(&credd, ttl);
        Self {
            inner: Arc::new(Shared {
                credd,
                cache,
                challenge: HeaderValue::from_static("Basic realm=\"credd\", charset=\"UTF-8\""),
            }),
        }
    }

    /// The verdicts kept (tests and metrics read it).
    pub fn cache(&self) -> &Arc<VerdictCache> {
        &self.inner.cache
    }
}

impl<S> tower::Layer<S> for ClientAuthLayer {
    type Service = ClientAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAuth {
            inner,
            shared: self.inner.clone(),
        }
    }
}

/// The service [`ClientAuthLayer`] wraps around `S`.
#[derive(Clone, Debug)]
pub struct ClientAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What credd said about a request's credentials.
enum Decision {
    Allow(AuthenticatedClient),
    Deny,
    Unavailable,
}

impl Shared {
    async fn decide(&self, headers: &http::HeaderMap) -> Decision {
        let credentials = match basic::credentials(headers) {
            Ok(credentials) => credentials,
            Err(Malformed::Missing) => return Decision::Deny,
            Err(why) => {
                tracing::debug!(?why, "credd-client: malformed Authorization header");
                return Decision::Deny;
            }
        };
        if let Some(known) = self.cache.get(&credentials) {
            return Decision::Allow(AuthenticatedClient {
                client_id: credentials.client_id,
                org_id: known.org_id,
                secret_id: known.secret_id,
            });
        }
        let epoch = self.cache.epoch();
        match self
            .credd
            .verify(&credentials.client_id, &credentials.secret)
            .await
        {
            Ok(verdict) if verdict.valid => {
                let known = Known {
                    org_id: verdict.org_id,
                    secret_id: verdict.secret_id,
                };
                self.cache.put(&credentials, known.clone(), epoch);
                Decision::Allow(AuthenticatedClient {
                    client_id: credentials.client_id,
                    org_id: known.org_id,
                    secret_id: known.secret_id,
                })
            }
            Ok(_) => Decision::Deny,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "credd-client: no verdict from credd");
                Decision::Unavailable
            }
        }
    }
}

fn answer<B: Default>(
    status: StatusCode,
    header: Option<(header::HeaderName, HeaderValue)>,
) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    if let Some((name, value)) = header {
        response.headers_mut().insert(name, value);
    }
    response
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for ClientAuth<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service poll_ready made ready goes into the future; a clone stays.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let shared = self.shared.clone();
        Box::pin(async move {
            match shared.decide(request.headers()).await {
                Decision::Allow(client) => {
                    request.extensions_mut().insert(client);
                    inner.call(request).await
                }
                Decision::Deny => Ok(answer(
                    StatusCode::UNAUTHORIZED,
                    Some((header::WWW_AUTHENTICATE, shared.challenge.clone())),
                )),
                Decision::Unavailable => Ok(answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some((header::RETRY_AFTER, HeaderValue::from_static("1"))),
                )),
            }
        })
    }
}
