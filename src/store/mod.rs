//! SeaORM entities and queries: the only code that talks to the database.
//!
//! Every query on an org's things is scoped by the org and by "not deleted" here, so
//! a caller of the store cannot forget either.

pub mod app_registrations;
pub mod audit;
pub mod caller_tokens;
pub mod changes;
pub mod client_secrets;
pub mod directory;
mod entities;
pub mod orgs;
mod pooled;

pub use pooled::Pooler;

use std::time::Duration;

use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, RuntimeErr, Select, sqlx,
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{
    Error,
    domain::paging::{Keyed, Page, PageRequest},
};

/// How long start-up waits for the database before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before answering UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A handle to credd's database (cheap to clone: it is a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Whether `db` is a transaction pooler (see [`pooled`]).
    pooled: bool,
    /// A direct URL of the same database, for what a transaction pooler cannot
    /// carry: LISTEN and the migration lock.
    direct_url: Option<std::sync::Arc<SecretString>>,
    /// This process's name in the change feed, so that it can tell its own
    /// changes (already applied when made) from other processes'.
    origin: std::sync::Arc<str>,
}

/// How the store reaches its database.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// What the URL points at.
    pub pooler: Pooler,
    /// A direct URL of the same database (`CREDD_DATABASE_LISTEN_URL`): LISTEN,
    /// and migrations behind a transaction pooler.
    pub direct_url: Option<SecretString>,
}

/// Why the store could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not one credd can use.
    #[error("{0}")]
    BadUrl(String),
    /// The database did not answer or refused the connection.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The schema could not be brought up to date.
    #[error("cannot run migrations: {0}")]
    Migrate(String),
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) without touching the schema.
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        Self::connect_with(url, Reach::default()).await
    }

    /// Connects to `url`, reached as `reach` says.
    #[tracing::instrument(name = "store.connect", skip_all)]
    pub async fn connect_with(url: &str, reach: Reach) -> Result<Self, OpenError> {
        let backend = if url.starts_with("sqlite:") {
            DbBackend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DbBackend::Postgres
        } else {
            return Err(OpenError::BadUrl(
                "unsupported URL: expected sqlite://PATH?mode=rwc or postgres://USER@HOST/DB"
                    .into(),
            ));
        };
        let pooled = reach.pooler == Pooler::Transaction;
        if pooled && backend != DbBackend::Postgres {
            return Err(OpenError::BadUrl(
                "CREDD_DATABASE_POOLER=transaction is for PostgreSQL behind a pooler; \
                 CREDD_DATABASE_URL names SQLite"
                    .into(),
            ));
        }
        let mut options = ConnectOptions::new(url);
        options
            .connect_timeout(CONNECT_TIMEOUT)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .sqlx_logging(false);
        if backend == DbBackend::Sqlite {
            // WAL lets readers (verify) go on while a writer commits; writers wait for
            // each other up to the busy timeout instead of failing at once.
            options.max_connections(8).map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        } else {
            options.max_connections(32).min_connections(1);
            if pooled {
                // No cached statement names (they would not outlive a transaction
                // on the pooler) and no startup parameter PgBouncer refuses.
                options.map_sqlx_postgres_opts(|opts| {
                    opts.statement_cache_capacity(0).extra_float_digits(None)
                });
            }
        }
        let db = Database::connect(options).await.map_err(|err| match &err {
            DbErr::Conn(RuntimeErr::SqlxError(inner))
                if matches!(inner.as_ref(), sqlx::Error::Configuration(_)) =>
            {
                OpenError::BadUrl(format!("bad database URL: {inner}"))
            }
            _ => OpenError::Connect(db_error_line(&err)),
        })?;
        Ok(Self {
            db,
            pooled,
            direct_url: reach.direct_url.map(std::sync::Arc::new),
            origin: uuid::Uuid::new_v4().simple().to_string().into(),
        })
    }

    /// Runs every pending migration.
    ///
    /// On PostgreSQL a session advisory lock, held on a connection of its own while
    /// the migrations run on others, makes replicas that start together migrate one
    /// after the other instead of racing. A transaction pooler cannot hold a
    /// session's lock, so behind one the migrations run over the direct URL; without
    /// one a current schema is fine and a stale one is refused, naming the fix.
    #[tracing::instrument(name = "store.migrate", skip_all)]
    pub async fn migrate(&self) -> Result<(), OpenError> {
        if !self.pooled {
            return self.migrate_here().await;
        }
        if let Some(direct_url) = &self.direct_url {
            let direct = Store::connect(direct_url.expose_secret())
                .await
                .map_err(|err| {
                    OpenError::Migrate(format!(
                        "cannot reach the direct URL (CREDD_DATABASE_LISTEN_URL): {err}"
                    ))
                })?;
            let migrated = direct.migrate_here().await;
            direct.close().await;
            return migrated;
        }
        match self.pending_migrations().await {
            Ok(0) => Ok(()),
            Ok(pending) => Err(OpenError::Migrate(format!(
                "{pending} migration(s) pending, and migrations cannot run through a \
                 transaction pooler (they hold a session lock): set \
                 CREDD_DATABASE_LISTEN_URL to a direct URL of the database, or run \
                 `credd migrate` once with CREDD_DATABASE_URL pointing at the database \
                 itself"
            ))),
            Err(err) => Err(OpenError::Migrate(format!(
                "cannot read the schema version: {err}"
            ))),
        }
    }

    async fn migrate_here(&self) -> Result<(), OpenError> {
        use migrations::MigratorTrait as _;
        const MIGRATION_LOCK: i64 = 0x0063_7265_6464; // "credd" in ASCII
        let lock_error = |err: sqlx::Error| {
            OpenError::Migrate(format!(
                "cannot take the migration lock: {}",
                pooler_hint(&err)
            ))
        };
        let mut lock = match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let mut conn = self
                    .db
                    .get_postgres_connection_pool()
                    .acquire()
                    .await
                    .map_err(lock_error)?;
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *conn)
                    .await
                    .map_err(lock_error)?;
                Some(conn)
            }
            _ => None,
        };
        let result = migrations::Migrator::up(&self.db, None)
            .await
            .map_err(|err| OpenError::Migrate(db_error_line(&err)));
        if let Some(conn) = lock.as_mut() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut **conn)
                .await;
        }
        result
    }

    /// How many migrations have not run yet (0: the schema is current).
    pub async fn pending_migrations(&self) -> Result<usize, Error> {
        use migrations::MigratorTrait as _;
        Ok(migrations::Migrator::get_pending_migrations(&self.conn())
            .await?
            .len())
    }

    /// Where lone statements run: the pool, or a transaction each behind a pooler.
    fn conn(&self) -> pooled::Conn<'_> {
        if self.pooled {
            pooled::Conn::Pooled(&self.db)
        } else {
            pooled::Conn::Direct(&self.db)
        }
    }

    /// Begins a transaction (that a transaction pooler carries, when behind one).
    async fn begin(&self) -> Result<pooled::Txn, DbErr> {
        pooled::begin(&self.db, self.pooled).await
    }

    /// Checks that the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), Error> {
        self.db.ping().await.map_err(Error::from)
    }

    /// Closes every pooled connection.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }

    /// Pooled connections: (open, idle).
    pub fn pool_stats(&self) -> (u32, usize) {
        match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => (0, 0),
        }
    }

    /// Which database this is, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Postgres => "postgres",
            DbBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }
}

/// Finishes a write of one row: a unique violation becomes `taken` (the caller's
/// ALREADY_EXISTS), the audit event is appended in the same transaction, the
/// change of `announce`'s org is announced to the other processes when given, and
/// the transaction commits — so a change is never stored without its event.
async fn commit_with_event<M>(
    txn: pooled::Txn,
    written: Result<M, DbErr>,
    taken: Error,
    event: audit::NewEvent,
    now: chrono::DateTime<chrono::Utc>,
    announce: Option<(&str, &crate::domain::ids::OrgId)>,
) -> Result<M, Error> {
    let row = match written {
        Ok(row) => row,
        Err(err) if is_unique_violation(&err) => return Err(taken),
        Err(err) => return Err(err.into()),
    };
    audit::append(&txn, event, now).await?;
    if let Some((origin, org_id)) = announce {
        // Last before the commit: it takes the feed's one global lock.
        changes::announce(&txn, origin, org_id).await?;
    }
    txn.commit().await?;
    Ok(row)
}

/// One page of `query` in the order of its `id` column, after the position the
/// request names: the one keyset pagination every list uses.
async fn page_of<E, T, C: ConnectionTrait>(
    db: &C,
    query: Select<E>,
    id: E::Column,
    order: Order,
    page: &PageRequest,
    convert: impl FnMut(E::Model) -> Result<T, Error>,
) -> Result<Page<T>, Error>
where
    E: EntityTrait,
    T: Keyed,
{
    let mut query = query.order_by(id, order.clone());
    if let Some(after) = &page.after {
        query = query.filter(match order {
            Order::Desc => id.lt(after.as_str()),
            _ => id.gt(after.as_str()),
        });
    }
    let rows = query.limit(page.fetch_limit()).all(db).await?;
    let items = rows
        .into_iter()
        .map(convert)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(items))
}

/// The SQLite file a `sqlite:` URL names, made absolute; `None` for another
/// backend or an in-memory database.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return None;
    }
    let path = std::path::Path::new(path);
    Some(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_owned(), |dir| dir.join(path))
    })
}

/// The database a URL names, for people: the SQLite file's absolute path, or the
/// URL without its password.
pub fn describe_url(url: &str) -> String {
    if let Some(file) = sqlite_file(url) {
        return format!("SQLite {}", file.display());
    }
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            // libpq and sqlx also take a password in the query (`password`,
            // `sslpassword`); anything named like a secret is shown redacted.
            let query: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(key, value)| {
                    let secret = ["password", "secret", "token", "passwd", "pass"]
                        .iter()
                        .any(|word| key.to_ascii_lowercase().contains(word));
                    let value = if secret {
                        "REDACTED".into()
                    } else {
                        value.into_owned()
                    };
                    (key.into_owned(), value)
                })
                .collect();
            if !query.is_empty() {
                parsed.query_pairs_mut().clear().extend_pairs(query);
            }
            parsed.to_string()
        }
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

fn db_error_line(err: &DbErr) -> String {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(inner))
        | DbErr::Exec(RuntimeErr::SqlxError(inner))
        | DbErr::Query(RuntimeErr::SqlxError(inner)) => pooler_hint(inner),
        other => other.to_string(),
    }
}

/// `err` as a line, with the likely fix when it is what a transaction pooler
/// answers a client that does not know it is one.
fn pooler_hint(err: &sqlx::Error) -> String {
    let line = err.to_string();
    // PgBouncer refuses the startup parameter sqlx sends to a database, and the
    // statements it prepares under names.
    if line.contains("prepared statement \"sqlx_s_")
        || line.contains("unsupported startup parameter")
    {
        format!(
            "{line} (is CREDD_DATABASE_URL a pooler in transaction mode? set \
             CREDD_DATABASE_POOLER=transaction)"
        )
    } else {
        line
    }
}

/// Whether a database error means "the store is unreachable or busy, try again"
/// rather than a fault in credd.
fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(inner)) | DbErr::Query(RuntimeErr::SqlxError(inner)) => {
            match inner.as_ref() {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // PostgreSQL: connection exception (08…), operator intervention
                    // such as admin shutdown (57…), insufficient resources (53…).
                    // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with extended codes.
                    code.starts_with("08")
                        || code.starts_with("57")
                        || code.starts_with("53")
                        || code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                }),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether the error is a unique-constraint violation, on either backend.
fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        let unavailable = is_unavailable(&err);
        crate::metrics::METRICS
            .db_errors
            .get_or_create(&crate::metrics::KindLabels {
                kind: if unavailable { "unavailable" } else { "other" }.to_owned(),
            })
            .inc();
        if unavailable {
            Error::Unavailable(Box::new(err))
        } else {
            Error::Internal(Box::new(err))
        }
    }
}

#[cfg(test)]
mod describe_url_tests {
    use super::describe_url;

    #[test]
    fn no_password_is_shown_in_the_user_info_or_the_query() {
        let shown = describe_url(
            "postgres://app:hunter2@db:5432/credd?sslmode=require&password=s3cret&sslpassword=k3y&PassFile=/x",
        );
        for secret in ["hunter2", "s3cret", "k3y", "/x"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert!(shown.contains("password=REDACTED"), "{shown}");
    }
}
