//! A client of credd for internal services.
//!
//! - [`Credd`]: a handle on a credd server (endpoint and caller token), with a
//!   deadline on every call and retries while credd answers UNAVAILABLE.
//! - [`ClientAuthLayer`]: a tower layer that protects any HTTP service (axum,
//!   hyper) with OAuth client credentials: it takes them from
//!   `Authorization: Basic` (RFC 6749 §2.3.1), asks credd, and answers 401 with
//!   `WWW-Authenticate: Basic` when credd says no and 503 when credd cannot be
//!   asked. A request it lets through carries the [`AuthenticatedClient`] in its
//!   extensions.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use credd_client::{ClientAuthLayer, Credd};
//! // A token with scopes `secrets:verify` and `audit:read`.
//! let credd = Credd::connect_lazy("http://127.0.0.1:50051", "credd_ct_…")?;
//! let layer = ClientAuthLayer::new(credd); // inside a tokio runtime
//! # let _ = layer; Ok(()) }
//! ```

pub mod basic;
pub mod cache;
mod layer;
pub mod pb;

use std::{sync::Arc, time::Duration};

use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

pub use basic::Credentials;
pub use layer::{AuthenticatedClient, ClientAuth, ClientAuthLayer};

/// Sends a caller token with every call.
#[derive(Clone)]
pub struct Bearer(Arc<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer([REDACTED])")
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", (*self.0).clone());
        Ok(request)
    }
}

/// A channel to credd that authenticates as the handle's caller token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Why a [`Credd`] could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The endpoint is not a URI tonic can use.
    Endpoint(String),
    /// The token cannot travel in a header.
    Token,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Endpoint(why) => write!(f, "invalid credd endpoint: {why}"),
            Self::Token => f.write_str("the caller token holds characters a header cannot"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A verdict on a client's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the secret is the client's ACTIVE one (or RETIRING in its grace).
    pub valid: bool,
    /// The client's org, when valid.
    pub org_id: String,
    /// The secret that verified, when valid.
    pub secret_id: String,
}

/// A handle on a credd server: cheap to clone, one HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct Credd {
    channel: Channel,
    bearer: Bearer,
    timeout: Duration,
    attempts: u32,
}

impl Credd {
    /// A handle on credd at `endpoint` (`http://host:port`, or `https://…`) that
    /// authenticates with caller `token`. Connects on first use, and again after
    /// a connection is lost.
    pub fn connect_lazy(endpoint: &str, token: &str) -> Result<Self, ConnectError> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|err| ConnectError::Endpoint(err.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| ConnectError::Token)?;
        Ok(Self {
            channel: endpoint.connect_lazy(),
            bearer: Bearer(Arc::new(header)),
            timeout: Duration::from_secs(2),
            attempts: 3,
        })
    }

    /// Each call's deadline (default 2 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a call is tried while credd answers UNAVAILABLE (default 3).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The generated ClientSecrets client, under this handle's token.
    pub fn secrets(&self) -> pb::client_secrets_client::ClientSecretsClient<Authed> {
        pb::client_secrets_client::ClientSecretsClient::new(self.authed())
    }

    /// The generated Audit client, under this handle's token.
    pub fn audit(&self) -> pb::audit_client::AuditClient<Authed> {
        pb::audit_client::AuditClient::new(self.authed())
    }

    fn authed(&self) -> Authed {
        InterceptedService::new(self.channel.clone(), self.bearer.clone())
    }

    /// Asks credd whether `secret` is `client_id`'s. Retried with a short backoff
    /// while credd answers UNAVAILABLE; every other status is final.
    pub async fn verify(&self, client_id: &str, secret: &str) -> Result<Verdict, Status> {
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            let mut request = tonic::Request::new(pb::VerifyClientSecretRequest {
                client_id: client_id.to_owned(),
                client_secret: secret.to_owned(),
            });
            request.set_timeout(self.timeout);
            match self.secrets().verify_client_secret(request).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    return Ok(Verdict {
                        valid: answer.valid,
                        org_id: answer.org_id,
                        secret_id: answer.secret_id,
                    });
                }
                Err(status) if status.code() == Code::Unavailable && attempt < self.attempts => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                    attempt += 1;
                }
                Err(status) => return Err(status),
            }
        }
    }
}
