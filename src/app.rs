//! Builds the server (store, services, health, reflection, auth) and runs it.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tonic::{
    server::NamedService,
    transport::{ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::Settings,
    grpc::{
        AppRegistrationsGrpc, AuditGrpc, CallerTokensGrpc, ClientSecretsGrpc, GatewayGrpc,
        OrgsGrpc, auth::RpcLayer,
    },
    metrics::METRICS,
    pb::{
        self, app_registrations_server::AppRegistrationsServer, audit_server::AuditServer,
        caller_tokens_server::CallerTokensServer, client_secrets_server::ClientSecretsServer,
        gateway_server::GatewayServer, orgs_server::OrgsServer,
    },
    service::{
        AppService, AuditService, Clock, GatewayService, OrgService, SecretService, SystemClock,
        VerifyService,
        callers::{Authenticator, TokenService},
        directory::Directory,
        events::AuditFeed,
        hasher::{Hasher, HasherConfig},
        throttle::Throttle,
        verify_cache::{self, VerifyCache},
    },
    store::{OpenError, Store, changes::FeedPosition},
};

mod background;
mod commands;
mod tls;

pub use commands::{Finding, doctor, migrate, token_service};

use background::Background;

/// Why the server could not start. Each displays as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database (CREDD_DATABASE_URL): {0}")]
    Open(#[from] OpenError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (CREDD_LISTEN): {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// A setting is invalid (the message names its variable).
    #[error("{0}")]
    Config(String),
    /// The reflection service could not load the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The store answered an error at start.
    #[error("{0}")]
    Store(String),
    /// The server failed while running.
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The names of credd's own services, as health reports them.
const SERVICE_NAMES: [&str; 6] = [
    <OrgsServer<OrgsGrpc> as NamedService>::NAME,
    <ClientSecretsServer<ClientSecretsGrpc> as NamedService>::NAME,
    <AppRegistrationsServer<AppRegistrationsGrpc> as NamedService>::NAME,
    <AuditServer<AuditGrpc> as NamedService>::NAME,
    <CallerTokensServer<CallerTokensGrpc> as NamedService>::NAME,
    <GatewayServer<GatewayGrpc> as NamedService>::NAME,
];

/// A built server: the store is migrated and the listener bound, so
/// [`App::local_addr`] is final before [`App::run_until`] is called.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Store,
    orgs: OrgService,
    secrets: SecretService,
    verifier: VerifyService,
    apps: AppService,
    authenticator: Arc<Authenticator>,
    tokens: TokenService,
    health: HealthReporter,
    shutdown_grace: Duration,
    tls: Option<ServerTlsConfig>,
    limits: Limits,
    metrics_listener: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
    health_listener: Option<TcpListener>,
    health_addr: Option<SocketAddr>,
    notice: Option<String>,
    change_poll_interval: Duration,
    directory: Arc<Directory>,
    feed_start: FeedPosition,
    default_login_domain: String,
    clock: Arc<dyn Clock>,
    sweep_interval: Duration,
    expiry_warning: Duration,
    audit_feed: AuditFeed,
}

/// The limits every connection and RPC runs under.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_request_bytes: usize,
    max_concurrent_streams: u32,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    rpc_timeout: Duration,
}

impl App {
    /// Opens and migrates the store, binds the listener, and assembles the services.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with a clock of the caller's (tests drive time with it).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let tls = tls::tls_config(&settings)?;
        if tls.is_none() && !settings.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %settings.listen,
                "serving plaintext gRPC on a non-loopback address: caller tokens and secrets cross the network \
                 unencrypted; set CREDD_TLS_CERT and CREDD_TLS_KEY"
            );
        }
        let hasher = Hasher::new(HasherConfig {
            m_kib: settings.argon2_m_kib,
            t: settings.argon2_t,
            p: settings.argon2_p,
            workers: settings
                .argon2_workers
                .unwrap_or(HasherConfig::owasp().workers),
            queue: settings.argon2_queue,
        })
        .map_err(StartError::Config)?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: settings.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: settings.listen,
            source,
        })?;

        let metrics_listener =
            bind_optional(settings.metrics_listen, "CREDD_METRICS_LISTEN").await?;
        let health_listener = bind_optional(settings.health_listen, "CREDD_HEALTH_LISTEN").await?;

        let store =
            Store::connect_with(settings.database_url.expose_secret(), reach(&settings)).await?;
        store.migrate().await?;
        tracing::info!(
            database = %crate::store::describe_url(settings.database_url.expose_secret()),
            "store migrated"
        );

        let authenticator = Arc::new(
            Authenticator::new(
                settings
                    .bootstrap_token
                    .as_ref()
                    .map(ExposeSecret::expose_secret),
                settings.bootstrap_token_expire,
                clock.clone(),
            )
            .reloading_from(store.clone()),
        );
        authenticator
            .reload(&store)
            .await
            .map_err(|err| StartError::Config(format!("cannot read caller tokens: {err}")))?;
        let tokens = TokenService::new(store.clone(), clock.clone());
        let sweep_clock = clock.clone();
        let directory = Directory::new(store.clone(), settings.stale_if_error);
        // Where the change feed stands before the load: a change committed during
        // it is read again from there.
        let feed_start = store
            .feed_position()
            .await
            .map_err(|err| StartError::Config(format!("cannot read the change feed: {err}")))?;
        directory
            .reload_all()
            .await
            .map_err(|err| StartError::Config(format!("cannot load the directory: {err}")))?;
        let audit_feed = AuditFeed::new(store.clone());
        audit_feed
            .start()
            .await
            .map_err(|err| StartError::Config(format!("cannot read the audit trail: {err}")))?;
        let cache_ttl = chrono::Duration::from_std(settings.verify_cache_ttl)
            .map_err(|_| StartError::Config("CREDD_VERIFY_CACHE_TTL is too long".into()))?;
        let cache = Arc::new(VerifyCache::new(cache_ttl, verify_cache::DEFAULT_CAPACITY));
        let verifier = VerifyService::new(
            store.clone(),
            directory.clone(),
            hasher.clone(),
            clock.clone(),
            cache.clone(),
            Throttle::new(
                settings.verify_throttle_rate,
                settings.verify_throttle_burst,
            ),
        );
        let secrets = SecretService::new(
            store.clone(),
            hasher,
            clock.clone(),
            cache.clone(),
            directory.clone(),
        );
        let apps = AppService::new(store.clone(), directory.clone(), clock.clone());
        let orgs = OrgService::new(
            store.clone(),
            directory.clone(),
            cache,
            clock,
            settings.default_login_domain.clone(),
        );
        let change_poll_interval = settings
            .change_poll_interval
            .unwrap_or_else(|| store.change_poll_interval());

        let (health, _) = tonic_health::server::health_reporter();
        Ok(Self {
            listener,
            local_addr,
            store,
            orgs,
            secrets,
            verifier,
            apps,
            authenticator,
            tokens,
            health,
            shutdown_grace: settings.shutdown_grace,
            tls,
            limits: Limits {
                max_request_bytes: settings.max_request_bytes,
                max_concurrent_streams: settings.max_concurrent_streams,
                keepalive_interval: settings.keepalive_interval,
                keepalive_timeout: settings.keepalive_timeout,
                rpc_timeout: settings.rpc_timeout,
            },
            metrics_addr: metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
            metrics_listener,
            health_addr: health_listener.as_ref().and_then(|l| l.local_addr().ok()),
            health_listener,
            notice: None,
            change_poll_interval,
            directory,
            feed_start,
            default_login_domain: settings.default_login_domain.clone(),
            clock: sweep_clock,
            sweep_interval: settings.sweep_interval.unwrap_or(Duration::from_secs(5)),
            expiry_warning: settings.expiry_warning,
            audit_feed,
        })
    }

    /// The in-memory directory of live orgs (tests read its freshness).
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The verify hot path (tests read its counters, cache and hasher).
    pub fn verifier(&self) -> &VerifyService {
        &self.verifier
    }

    /// The caller token use cases (`credd serve` makes the first admin token).
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// On a store that never had a caller token, creates the `admin` token (for
    /// `credd serve` to print once) and makes it valid at once.
    pub async fn first_admin_token(
        &self,
    ) -> Result<Option<crate::domain::caller::NewToken>, StartError> {
        let token = self
            .tokens
            .first_admin_token()
            .await
            .map_err(StartError::store)?;
        if token.is_some() {
            self.authenticator
                .reload(&self.store)
                .await
                .map_err(StartError::store)?;
        }
        Ok(token)
    }

    /// The authenticator (tests reload it instead of waiting for the refresh).
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.authenticator
    }

    /// The address metrics are served on, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Text for the operator, printed once the server serves, after every start-up
    /// log line and set off by blank lines, to stderr and stdout (the first-start
    /// token).
    pub fn print_when_serving(&mut self, notice: String) {
        self.notice = Some(notice);
    }

    /// The address the plaintext health-only port listens on, when enabled.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then reports NOT_SERVING, lets in-flight
    /// calls finish (up to the shutdown grace) and closes the store.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        // Set at SIGTERM, before health turns NOT_SERVING: health watches end after
        // saying so, and the store probe stops reporting.
        let draining = Arc::new(AtomicBool::new(false));
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            crate::grpc::health::DrainingHealth::new(
                tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
                draining.clone(),
            ),
        );

        let refusals = Arc::new(crate::service::audit::RefusalTally::default());
        let limits = self.limits;
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .tcp_keepalive(Some(limits.keepalive_interval))
            .timeout(limits.rpc_timeout)
            .trace_fn(rpc_span);
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone())?;
        }
        let max = limits.max_request_bytes;
        let router = builder
            .layer(RpcLayer::new(self.authenticator.clone(), refusals.clone()))
            .add_service(health_service.max_decoding_message_size(max))
            .add_service(reflection_v1.max_decoding_message_size(max))
            .add_service(reflection_v1alpha.max_decoding_message_size(max))
            .add_service(
                OrgsServer::new(OrgsGrpc::new(self.orgs.clone())).max_decoding_message_size(max),
            )
            .add_service(
                ClientSecretsServer::new(ClientSecretsGrpc::new(
                    self.secrets.clone(),
                    self.verifier.clone(),
                ))
                .max_decoding_message_size(max),
            )
            .add_service(
                AppRegistrationsServer::new(AppRegistrationsGrpc::new(self.apps.clone()))
                    .max_decoding_message_size(max),
            )
            .add_service(
                AuditServer::new(AuditGrpc::new(
                    AuditService::new(self.store.clone()),
                    self.audit_feed.clone(),
                ))
                .max_decoding_message_size(max),
            )
            .add_service(
                CallerTokensServer::new(CallerTokensGrpc::new(
                    self.tokens.clone(),
                    self.authenticator.clone(),
                ))
                .max_decoding_message_size(max),
            )
            .add_service(
                GatewayServer::new(GatewayGrpc::new(
                    GatewayService::new(self.directory.clone(), self.default_login_domain.clone()),
                    self.default_login_domain.clone(),
                ))
                .max_decoding_message_size(max),
            );

        let mut background = Background::new();
        let (authenticator, store) = (self.authenticator.clone(), self.store.clone());
        background.spawn(|stop| background::refresh_callers(authenticator, store, stop));
        let verifier = self.verifier.clone();
        let (tally_store, tally_clock) = (self.store.clone(), self.clock.clone());
        background.spawn(move |stop| {
            background::flush_failed_verifications(
                verifier,
                refusals,
                tally_store,
                tally_clock,
                stop,
            )
        });
        let (verifier, apps) = (self.verifier.clone(), self.apps.clone());
        background.spawn(|stop| background::flush_refusal_log(verifier, apps, stop));
        let follow = background::Follow {
            store: self.store.clone(),
            cache: self.verifier.cache().clone(),
            directory: self.directory.clone(),
            poll_every: self.change_poll_interval,
            start: self.feed_start,
        };
        background.spawn(|stop| background::follow_changes(follow, stop));
        let audit_feed = self.audit_feed.clone();
        background.spawn(|stop| background::follow_audit(audit_feed, stop));
        let (store, clock) = (self.store.clone(), self.clock.clone());
        let (sweep_every, warning) = (self.sweep_interval, self.expiry_warning);
        background
            .spawn(move |stop| background::sweep_secrets(store, clock, sweep_every, warning, stop));
        let (store, health, directory) = (
            self.store.clone(),
            self.health.clone(),
            self.directory.clone(),
        );
        let probe_draining = draining.clone();
        background
            .spawn(|stop| background::probe_store(store, health, probe_draining, directory, stop));
        if let Some(listener) = self.metrics_listener {
            background.spawn(|stop| background::serve_metrics(listener, stop));
        }
        if let Some(listener) = self.health_listener {
            // Stops with the other tasks, after the drain: probes keep hearing
            // NOT_SERVING while in-flight calls finish.
            let health = self.health.clone();
            background.spawn(|stop| background::serve_health(listener, health, stop));
        }

        set_status(&self.health, ServingStatus::Serving).await;
        // Liveness says only that the process serves: a database outage turns the
        // other services NOT_SERVING (readiness) but must not get pods restarted.
        self.health
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        METRICS.serving.set(1);
        tracing::info!(addr = %self.local_addr, "credd serving");
        if let Some(notice) = &self.notice {
            print_notice(notice);
        }

        let health = self.health.clone();
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let audit_feed = self.audit_feed.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: refusing new calls, finishing in-flight ones");
            draining.store(true, Ordering::SeqCst);
            // Watchers end with UNAVAILABLE naming where to resume, so that they
            // reconnect to another replica and the drain does not wait for them.
            audit_feed.close();
            set_status(&health, ServingStatus::NotServing).await;
            METRICS.serving.set(0);
            let _ = draining_tx.send(());
        };
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = router.serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);

        let grace = self.shutdown_grace;
        let result = tokio::select! {
            result = &mut server => result.map_err(StartError::from),
            () = async move {
                if draining_rx.await.is_ok() {
                    tokio::time::sleep(grace).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(grace = ?grace, "in-flight calls did not finish within the shutdown grace; exiting");
                Ok(())
            }
        };
        // Each task does its last work (flushes) before the store closes.
        background.stop().await;
        self.store.close().await;
        tracing::info!("credd stopped");
        result
    }
}

/// Reflection over every service served, both reflection versions, and
/// `google.rpc.BadRequest`, so that grpcurl describes all of them and prints error
/// details readably.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// The span of one RPC. With traces exported: the OpenTelemetry span (name, kind,
/// `rpc.*` attributes) with the caller's W3C trace context as parent, so that a
/// gateway's trace shows credd's work inside it. Without: only the fields a log
/// line inside the RPC shows (method, caller, org, request id), so that no
/// attribute is formatted that nothing reads. The layer records the status code
/// (when exported), caller and request id; use cases record the org.
fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    // Named only from the methods served: a made-up path is `unknown`.
    let path = crate::grpc::auth::method_label(request.uri().path()).trim_start_matches('/');
    if !crate::telemetry::traces_exported() {
        // Shown as is (`%`), not quoted and escaped: a method served is plain ASCII.
        return tracing::info_span!(
            "rpc",
            method = %path,
            caller = tracing::field::Empty,
            org_id = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
    }
    let (service, method) = path.split_once('/').unwrap_or((path, path));
    let span = tracing::info_span!(
        "rpc",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        caller = tracing::field::Empty,
        org_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&crate::telemetry::HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// Writes `notice` set off by blank lines to stderr, where a person watching the
/// logs (pretty, JSON or in a file) sees it as plain text, and to stdout too,
/// where scripts read it, unless both are the same file (a terminal): then once.
fn print_notice(notice: &str) {
    use std::io::Write as _;
    let text = format!("\n{notice}\n\n");
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
    if !stdout_is_stderr() {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
}

/// Whether stdout and stderr are the same open file (Linux: same device and
/// inode behind /proc/self/fd); `false` when that cannot be told.
fn stdout_is_stderr() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let file = |fd: u8| std::fs::metadata(format!("/proc/self/fd/{fd}")).ok();
        if let (Some(out), Some(err)) = (file(1), file(2)) {
            return out.dev() == err.dev() && out.ino() == err.ino();
        }
    }
    false
}

/// The health service name a liveness probe asks for.
pub const LIVENESS: &str = "liveness";

/// The listener of an optional port, or a start error naming its `variable`.
async fn bind_optional(
    addr: Option<SocketAddr>,
    variable: &str,
) -> Result<Option<TcpListener>, StartError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|err| StartError::Config(format!("cannot listen on {addr} ({variable}): {err}")))
}

/// Sets the status of "" and of every credd service.
async fn set_status(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    set_services_status(health, status).await;
}

/// Sets the status of every credd service (not "").
async fn set_services_status(health: &HealthReporter, status: ServingStatus) {
    for name in SERVICE_NAMES {
        health.set_service_status(name, status).await;
    }
}

impl StartError {
    /// A use-case error met at start or by a command.
    pub fn store(err: crate::Error) -> Self {
        match err {
            crate::Error::Invalid(violations) => StartError::Store(
                violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            other => StartError::Store(match &other {
                crate::Error::Internal(source) | crate::Error::Unavailable(source) => {
                    format!("{other}: {}", crate::error::error_chain(source.as_ref()))
                }
                _ => other.to_string(),
            }),
        }
    }
}

/// How the store of `settings` reaches its database.
fn reach(settings: &Settings) -> crate::store::Reach {
    crate::store::Reach {
        pooler: settings.database_pooler,
        direct_url: settings.database_listen_url.clone(),
    }
}
