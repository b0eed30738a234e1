//! Caller authentication for every credd RPC, as a tower layer in front of the
//! router: it sees the RPC's path, so health and reflection stay open.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::service::callers::Authenticator;

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
        if request.uri().path().starts_with(CREDD_PATH_PREFIX) {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            match self.authenticator.authenticate(header) {
                Ok(caller) => {
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
