//! `spawn_app`: the real server on port 0 over a fresh database, with typed clients.

use std::{
    net::SocketAddr,
    ops::{Deref, DerefMut},
    sync::{Arc, Once},
    time::{Duration, Instant},
};

use credd::{
    App, Settings,
    service::{Clock, ManualClock, SystemClock},
};
use sea_orm::{ConnectionTrait, Database};
use tokio::sync::oneshot;
use tonic::{
    Code, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

mod clients;

pub use clients::Clients;

/// The admin token every test server accepts.
pub const TOKEN: &str = "test-bootstrap-token-0123456789abcdef";

/// Runs each named test body once per backend: `sqlite::NAME` always,
/// `postgres::NAME` against `CREDD_TEST_DATABASE_URL` when it is set (and failing
/// when it is not but `CREDD_REQUIRE_POSTGRES` is, as in CI).
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match crate::helpers::Backend::postgres() {
                        Some(backend) => super::$name(backend).await,
                        None => eprintln!("CREDD_TEST_DATABASE_URL is not set: PostgreSQL run skipped"),
                    }
                }
            )*
        }
    };
}

/// Runs each named test body through PgBouncer in transaction mode:
/// `pgbouncer::NAME` with a direct URL for LISTEN and migrations (`true`) or with
/// the change counter alone (`false`).
macro_rules! through_pgbouncer {
    ($($name:ident: $listen:expr),* $(,)?) => {
        mod pgbouncer {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match crate::helpers::Backend::pgbouncer($listen) {
                        Some(backend) => super::$name(backend).await,
                        None => eprintln!("CREDD_TEST_PGBOUNCER_URL is not set: PgBouncer run skipped"),
                    }
                }
            )*
        }
    };
}

/// Which database a test server runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh database on the server of this admin URL.
    Postgres(String),
    /// A fresh database on the server of `admin_url`, which credd reaches through
    /// the transaction-pooling PgBouncer of `pooler_url`; with `listen`, LISTEN
    /// and migrations go over the direct URL, else the test migrates first (as
    /// `credd migrate` on the direct URL would) and credd has the counter alone.
    PgBouncer {
        admin_url: String,
        pooler_url: String,
        listen: bool,
    },
}

impl Backend {
    /// PostgreSQL, when `CREDD_TEST_DATABASE_URL` is set. Without it the caller skips
    /// its PostgreSQL run, unless `CREDD_REQUIRE_POSTGRES` is set: then a skip would
    /// pass CI without ever touching PostgreSQL, so this panics instead.
    pub fn postgres() -> Option<Self> {
        let url = std::env::var("CREDD_TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty());
        if url.is_none() {
            assert!(
                std::env::var_os("CREDD_REQUIRE_POSTGRES").is_none(),
                "CREDD_REQUIRE_POSTGRES is set but CREDD_TEST_DATABASE_URL is not: \
                 set it to postgres://USER@HOST:PORT/DB"
            );
        }
        url.map(Backend::Postgres)
    }

    /// PostgreSQL through PgBouncer, when `CREDD_TEST_PGBOUNCER_URL` is set (a
    /// PgBouncer in transaction mode in front of `CREDD_TEST_DATABASE_URL`'s server,
    /// passing every database name through). `CREDD_REQUIRE_PGBOUNCER` turns a
    /// skip into a failure, as for PostgreSQL.
    pub fn pgbouncer(listen: bool) -> Option<Self> {
        let pooler_url = std::env::var("CREDD_TEST_PGBOUNCER_URL")
            .ok()
            .filter(|url| !url.is_empty());
        if pooler_url.is_none() {
            assert!(
                std::env::var_os("CREDD_REQUIRE_PGBOUNCER").is_none(),
                "CREDD_REQUIRE_PGBOUNCER is set but CREDD_TEST_PGBOUNCER_URL is not: set it to \
                 postgres://USER@HOST:PORT/DB of a PgBouncer in transaction mode"
            );
        }
        let Some(Backend::Postgres(admin_url)) = Self::postgres() else {
            return None;
        };
        Some(Backend::PgBouncer {
            admin_url,
            pooler_url: pooler_url?,
            listen,
        })
    }
}

/// A fresh database that is removed when dropped.
pub enum TestDb {
    /// The directory holding the SQLite file.
    Sqlite { _dir: tempfile::TempDir },
    /// The admin URL and the name of the created database.
    Postgres { admin_url: String, name: String },
    /// Another server's database, left to that server to remove.
    Shared,
}

impl TestDb {
    /// Creates a fresh database and returns it with its URL.
    pub async fn create(backend: &Backend) -> (Self, String) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("credd.db").display()
                );
                (TestDb::Sqlite { _dir: dir }, url)
            }
            Backend::Postgres(admin_url)
            | Backend::PgBouncer {
                admin_url,
                listen: true,
                ..
            } => {
                let name = format!("credd_test_{}", uuid_simple());
                let admin = Database::connect(admin_url.as_str())
                    .await
                    .expect("connect to CREDD_TEST_DATABASE_URL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let url = replace_database(admin_url, &name);
                (
                    TestDb::Postgres {
                        admin_url: admin_url.clone(),
                        name,
                    },
                    url,
                )
            }
            Backend::PgBouncer {
                admin_url,
                listen: false,
                ..
            } => {
                let (db, url) = Box::pin(Self::create(&Backend::Postgres(admin_url.clone()))).await;
                let store = credd::store::Store::connect(&url)
                    .await
                    .expect("connect to the test database directly");
                store.migrate().await.expect("migrate directly");
                store.close().await;
                (db, url)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    if let Ok(admin) = Database::connect(admin_url.as_str()).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                        admin.close().await.ok();
                    }
                });
                Ok::<(), std::io::Error>(())
            })
            .join();
        }
    }
}

fn uuid_simple() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `url` with its database name replaced by `name`.
pub fn replace_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("CREDD_TEST_DATABASE_URL is a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// Sends `authorization: Bearer <token>` on every call (or nothing).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that authenticates as `token` (or not at all).
pub type Authed = InterceptedService<Channel, Bearer>;

/// A running test server and clients for it (its [`Clients`], under [`TOKEN`]).
#[allow(dead_code)] // each test module uses the fields it needs
pub struct TestApp {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub clients: Clients,
    pub backend: Backend,
    pub database_url: String,
    pub verifier: credd::service::VerifyService,
    pub authenticator: Arc<credd::service::callers::Authenticator>,
    pub metrics_addr: Option<SocketAddr>,
    pub health_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), credd::app::StartError>>>,
    _db: TestDb,
}

/// Settings for a test server on `database_url`: port 0 and the test token.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::with_database(database_url);
    settings.listen = "127.0.0.1:0".parse().expect("address");
    settings.bootstrap_token = Some(TOKEN.into());
    // Minimal argon2 cost: the tests prove behaviour, benchmarks measure cost.
    settings.argon2_m_kib = 64;
    settings.argon2_t = 1;
    settings.argon2_p = 1;
    settings
}

/// Starts the real server over a fresh database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// [`spawn_app`], letting the test adjust the settings first.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(backend, adjust, Arc::new(SystemClock)).await
}

/// A second server on `first`'s database (another replica or process).
pub async fn spawn_replica(first: &TestApp) -> TestApp {
    // The replica shares the database; only the first drops it.
    spawn_on(
        first.backend.clone(),
        TestDb::Shared,
        first.database_url.clone(),
        |_| {},
        Arc::new(SystemClock),
    )
    .await
}

/// [`spawn_replica`], letting the test adjust the replica's settings first.
pub async fn spawn_replica_with(first: &TestApp, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_on(
        first.backend.clone(),
        TestDb::Shared,
        first.database_url.clone(),
        adjust,
        Arc::new(SystemClock),
    )
    .await
}

/// [`spawn_replica_with`] on a clock the test moves (the first's, to move both).
pub async fn spawn_replica_with_clock(
    first: &TestApp,
    clock: Arc<ManualClock>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_on(
        first.backend.clone(),
        TestDb::Shared,
        first.database_url.clone(),
        adjust,
        clock,
    )
    .await
}

/// [`spawn_app`] on a clock the test moves.
pub async fn spawn_app_with_clock(backend: Backend, clock: Arc<ManualClock>) -> TestApp {
    spawn(backend, |_| {}, clock).await
}

/// [`spawn_app_with_clock`], letting the test adjust the settings first.
pub async fn spawn_app_with_clock_and(
    backend: Backend,
    clock: Arc<ManualClock>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn(backend, adjust, clock).await
}

async fn spawn(
    backend: Backend,
    adjust: impl FnOnce(&mut Settings),
    clock: Arc<dyn Clock>,
) -> TestApp {
    let (db, database_url) = TestDb::create(&backend).await;
    spawn_on(backend, db, database_url, adjust, clock).await
}

/// Starts the server over `db`, reached at `database_url`.
pub async fn spawn_on(
    backend: Backend,
    db: TestDb,
    database_url: String,
    adjust: impl FnOnce(&mut Settings),
    clock: Arc<dyn Clock>,
) -> TestApp {
    init_test_logs();
    let mut settings = test_settings(&database_url);
    if let Backend::PgBouncer {
        pooler_url, listen, ..
    } = &backend
    {
        let name = url::Url::parse(&database_url).expect("URL").path()[1..].to_owned();
        settings.database_url = replace_database(pooler_url, &name).as_str().into();
        settings.database_pooler = credd::store::Pooler::Transaction;
        settings.database_listen_url = listen.then(|| database_url.as_str().into());
    }
    adjust(&mut settings);
    let app = App::build_with_clock(settings, clock)
        .await
        .expect("the server builds");
    let addr = app.local_addr();
    let verifier = app.verifier().clone();
    let authenticator = app.authenticator().clone();
    let metrics_addr = app.metrics_addr();
    let health_addr = app.health_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    // Lazy: a TLS test server refuses this plaintext channel, and its tests make
    // their own.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    TestApp {
        addr,
        clients: Clients::new(channel.clone(), Some(TOKEN)),
        channel,
        backend,
        database_url,
        verifier,
        authenticator,
        metrics_addr,
        health_addr,
        shutdown: Some(tx),
        server: Some(server),
        _db: db,
    }
}

/// An interceptor sending `token`, or no authorization at all.
pub fn bearer(token: Option<&str>) -> Bearer {
    Bearer(token.map(|t| format!("Bearer {t}").parse().expect("ascii token")))
}

impl TestApp {
    /// A channel to this server that sends `token` (or none).
    pub fn channel_with(&self, token: Option<&str>) -> Authed {
        InterceptedService::new(self.channel.clone(), bearer(token))
    }

    /// Waits until this server has taken in every change made so far, so that no
    /// background invalidation lands in the middle of what the test measures next.
    ///
    /// The server polls the change counter (every 250 ms on SQLite, 1 s on
    /// PostgreSQL) and forgets its whole verify cache when the counter moved; on
    /// PostgreSQL notifications of its own writes also arrive a moment later. Every
    /// such forgetting bumps the cache's generation. Once the generation has stood
    /// still for two poll intervals and a margin after the last write, at least one
    /// whole poll ran since that write and found nothing new: the server is current.
    pub async fn wait_until_changes_are_taken_in(&self) {
        let store = credd::store::Store::connect(&self.database_url)
            .await
            .expect("connect to the test database");
        let quiet = store.change_poll_interval() * 2 + Duration::from_millis(500);
        let cache = self.verifier.cache().clone();
        let mut generation = cache.generation();
        let mut since = Instant::now();
        wait_until(
            "the verify cache stops being invalidated",
            quiet * 4,
            async || {
                let now = cache.generation();
                if now != generation {
                    (generation, since) = (now, Instant::now());
                }
                since.elapsed() >= quiet
            },
        )
        .await;
    }

    /// Runs `sql` on this server's database over a connection of the test's own,
    /// beside credd, as an operator or another program would.
    pub async fn execute_sql(&self, sql: &str) -> Result<(), sea_orm::DbErr> {
        let db = Database::connect(self.database_url.as_str())
            .await
            .expect("connect to the test database");
        let result = db.execute_unprepared(sql).await.map(drop);
        db.close().await.ok();
        result
    }

    /// The first column of the first row `sql` answers, as text, read over a
    /// connection of the test's own.
    pub async fn query_text(&self, sql: &str) -> Option<String> {
        use sea_orm::{ConnectionTrait as _, Statement};
        let db = Database::connect(self.database_url.as_str())
            .await
            .expect("connect to the test database");
        let backend = db.get_database_backend();
        let row = db
            .query_one_raw(Statement::from_string(backend, sql))
            .await
            .expect("query");
        db.close().await.ok();
        row.and_then(|row| row.try_get_by_index::<String>(0).ok())
    }

    /// The stored hash string of secret `secret_id`.
    pub async fn stored_phc(&self, secret_id: &str) -> String {
        self.query_text(&format!(
            "SELECT phc FROM client_secrets WHERE id = '{secret_id}'"
        ))
        .await
        .expect("the secret's row")
    }

    /// An org whose active (imported, so argon2-stored) secret is verified and
    /// cached here, with the secret.
    pub async fn cached_verdict(&self) -> (credd::pb::Org, String) {
        let org = self.create_org().await;
        let (_, plaintext) = self.import_and_activate(&org.id).await;
        self.wait_until_changes_are_taken_in().await;
        assert!(self.verifies(&org.client_id, &plaintext).await);
        assert_eq!(self.verifier.cache().len(), 1);
        (org, plaintext)
    }

    /// PostgreSQL: another session that holds `table` in ACCESS EXCLUSIVE mode until
    /// it is rolled back, so that every query of it waits (a stuck migration, a hung
    /// connection).
    pub async fn lock_table(&self, table: &str) -> sea_orm::DatabaseTransaction {
        use sea_orm::TransactionTrait as _;
        let db = Database::connect(self.database_url.as_str())
            .await
            .expect("connect to the test database");
        let lock = db.begin().await.expect("begin");
        lock.execute_unprepared(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .await
            .expect("lock the table");
        lock
    }

    /// Stops the server as SIGTERM would and waits for it to finish.
    pub async fn stop(&mut self) -> Result<(), credd::app::StartError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl Deref for TestApp {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.clients
    }
}

impl DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut Clients {
        &mut self.clients
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Follows page tokens from the first page to the last: `page` fetches the page
/// of a token and answers its items and the next token (empty on the last page).
/// Answers every item in order and how many pages there were.
pub async fn collect_pages<T>(
    mut page: impl AsyncFnMut(String) -> (Vec<T>, String),
) -> (Vec<T>, usize) {
    let (mut all, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let (items, next) = page(token).await;
        all.extend(items);
        pages += 1;
        if next.is_empty() {
            return (all, pages);
        }
        token = next;
    }
}

/// How often [`wait_until`] checks its condition.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Checks `condition` every few milliseconds until it holds and answers how long
/// that took; panics naming `what` once `deadline` has passed (a condition that
/// hangs counts against the deadline too).
pub async fn wait_until(
    what: &str,
    deadline: Duration,
    mut condition: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, condition()).await {
            Ok(true) => return started.elapsed(),
            Ok(false) if started.elapsed() < deadline => tokio::time::sleep(POLL_EVERY).await,
            _ => panic!("{what}: not within {deadline:?}"),
        }
    }
}

fn init_test_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info,credd=debug")
                .with_test_writer()
                .try_init();
        }
    });
}

/// A well-formed wrong secret of the same row as the generated `secret`: same
/// locator, fresh random part, a valid checksum — only the stored hash can tell.
pub fn wrong_version_of(secret: &str) -> String {
    use credd::domain::secret::{Presented, classify, generate_for};
    let Presented::Generated { secret_id } = classify(secret) else {
        panic!("not a generated secret")
    };
    secrecy::ExposeSecret::expose_secret(&generate_for(&secret_id)).to_owned()
}

/// A well-formed wrong secret with the hint of the imported `secret` (its last four
/// characters), so that it is checked against the stored argon2 hash.
pub fn wrong_import_of(secret: &str) -> String {
    use base64::Engine as _;
    let random = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(credd::domain::ids::random_bytes::<30>());
    format!("{random}{}", &secret[secret.len() - 4..])
}

/// The field names of the `BadRequest` violations in `status`.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Asserts that the database refused a statement for breaking a unique index, not
/// for any other reason (a typo in the test's SQL, say).
#[track_caller]
pub fn assert_unique_violation(result: Result<(), sea_orm::DbErr>, why: &str) {
    match result {
        Ok(()) => panic!("{why}: the statement went through"),
        Err(err) => assert!(
            matches!(
                err.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ),
            "{why}: expected a unique violation, got {err:?}"
        ),
    }
}

/// Asserts that `result` failed with `code`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// Asserts INVALID_ARGUMENT naming `field` in a BadRequest violation.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = assert_code(result, Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a violation of {field}, got {fields:?} ({status:?})"
    );
}

/// A free loopback port (bound and released, for a process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// The credd binary to `serve` on `database_url` at `127.0.0.1:port`, with the
/// test token and no other `CREDD_*` variable from the test's environment; the
/// caller adds its settings and spawns it.
pub fn credd_serve(database_url: &str, port: u16) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_credd"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CREDD_DATABASE_URL", database_url)
        .env("CREDD_LISTEN", format!("127.0.0.1:{port}"))
        .env("CREDD_BOOTSTRAP_TOKEN", TOKEN)
        .env("CREDD_LOG", "warn")
        .stdout(std::process::Stdio::null());
    command
}

/// A channel to the server on `127.0.0.1:port`, once it accepts connections.
pub async fn connect_when_up(port: u16) -> Channel {
    let mut channel = None;
    wait_until(
        "credd accepts connections",
        Duration::from_secs(30),
        async || {
            channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("endpoint")
                .connect()
                .await
                .ok();
            channel.is_some()
        },
    )
    .await;
    channel.expect("connected")
}
