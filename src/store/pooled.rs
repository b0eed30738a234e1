//! Statements that survive a transaction-pooling PgBouncer, and leave its other
//! clients' server connections as they found them.
//!
//! SeaORM has sqlx prepare every statement under a name (`sqlx_s_N`, counted per
//! client connection), even with the statement cache off, and never closes it.
//! Behind a pooler in transaction mode that leaves names on server connections that
//! other clients of the pool then share (two clients' `sqlx_s_1` meet: "already
//! exists"), and clearing them (`DEALLOCATE ALL`) would delete the other clients'
//! own statements. So behind a pooler credd runs SeaORM's statements itself:
//!
//! - with sqlx's unnamed statement (`persistent(false)`: Parse of `""`), which
//!   names nothing, is replaced by the next statement and is gone at the latest
//!   when the transaction ends;
//! - every statement inside a transaction (the pooler pins one server connection
//!   from BEGIN to COMMIT, across Parse and Bind), a lone statement in one of its
//!   own;
//! - the statement cache off, so nothing is ever prepared under a name.
//!
//! On a direct connection none of this runs: [`Conn::Direct`] is the pool itself
//! and [`Txn::Direct`] SeaORM's own transaction.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement, TransactionTrait, sqlx,
};

/// Whether `CREDD_DATABASE_URL` points at a transaction pooler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooler {
    /// The database itself (or a pooler in session mode).
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`, RDS
    /// Proxy, Supavisor).
    Transaction,
}

/// Where a store method's lone statements run.
#[derive(Debug, Clone, Copy)]
pub enum Conn<'a> {
    /// Straight on the pool.
    Direct(&'a DatabaseConnection),
    /// Each in a transaction of its own (see the module's documentation).
    Pooled(&'a DatabaseConnection),
}

/// A transaction: SeaORM's on a direct connection, or one whose statements run
/// unnamed behind a transaction pooler.
pub enum Txn {
    /// SeaORM's transaction.
    Direct(DatabaseTransaction),
    /// A transaction of the pooler's (see the module's documentation).
    Pooled(PgTxn),
}

/// A PostgreSQL transaction that runs every statement as sqlx's unnamed one.
pub struct PgTxn {
    txn: tokio::sync::Mutex<sqlx::Transaction<'static, sqlx::Postgres>>,
}

/// Begins a transaction on `db`; behind a transaction pooler (`pooled`), one
/// whose statements leave no name on the server connection.
pub async fn begin(db: &DatabaseConnection, pooled: bool) -> Result<Txn, DbErr> {
    if pooled && db.get_database_backend() == DbBackend::Postgres {
        let txn = db
            .get_postgres_connection_pool()
            .begin()
            .await
            .map_err(|err| DbErr::Conn(RuntimeErr::SqlxError(err.into())))?;
        return Ok(Txn::Pooled(PgTxn {
            txn: tokio::sync::Mutex::new(txn),
        }));
    }
    Ok(Txn::Direct(db.begin().await?))
}

impl Txn {
    /// Rolls back (dropping it does too).
    pub async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Txn::Direct(txn) => txn.rollback().await,
            Txn::Pooled(txn) => txn.txn.into_inner().rollback().await.map_err(exec_err),
        }
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Txn::Direct(txn) => txn.commit().await,
            Txn::Pooled(txn) => txn
                .txn
                .into_inner()
                .commit()
                .await
                .map_err(|err| DbErr::Exec(RuntimeErr::SqlxError(err.into()))),
        }
    }
}

/// `stmt` as sqlx's unnamed statement.
fn unnamed(stmt: &Statement) -> sqlx::query::Query<'_, sqlx::Postgres, sea_query_sqlx::SqlxValues> {
    let values = stmt.values.clone().unwrap_or(sea_orm::Values(Vec::new()));
    sqlx::query_with(
        sqlx::AssertSqlSafe(stmt.sql.as_str()),
        sea_query_sqlx::SqlxValues(values),
    )
    .persistent(false)
}

fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(err.into()))
}

fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(err.into()))
}

#[async_trait::async_trait]
impl ConnectionTrait for Txn {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Txn::Direct(txn) => txn.get_database_backend(),
            Txn::Pooled(_) => DbBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Txn::Direct(txn) => txn.execute_raw(stmt).await,
            Txn::Pooled(pg) => {
                let mut txn = pg.txn.lock().await;
                unnamed(&stmt)
                    .execute(&mut **txn)
                    .await
                    .map(ExecResult::from)
                    .map_err(exec_err)
            }
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Txn::Direct(txn) => txn.execute_unprepared(sql).await,
            Txn::Pooled(pg) => {
                use sqlx::Executor as _;
                let mut txn = pg.txn.lock().await;
                // The simple protocol names nothing.
                (&mut **txn)
                    .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)))
                    .await
                    .map(ExecResult::from)
                    .map_err(exec_err)
            }
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Txn::Direct(txn) => txn.query_one_raw(stmt).await,
            Txn::Pooled(pg) => {
                let mut txn = pg.txn.lock().await;
                unnamed(&stmt)
                    .fetch_optional(&mut **txn)
                    .await
                    .map(|row| row.map(QueryResult::from))
                    .map_err(query_err)
            }
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Txn::Direct(txn) => txn.query_all_raw(stmt).await,
            Txn::Pooled(pg) => {
                let mut txn = pg.txn.lock().await;
                unnamed(&stmt)
                    .fetch_all(&mut **txn)
                    .await
                    .map(|rows| rows.into_iter().map(QueryResult::from).collect())
                    .map_err(query_err)
            }
        }
    }

    fn support_returning(&self) -> bool {
        match self {
            Txn::Direct(txn) => txn.support_returning(),
            Txn::Pooled(_) => true,
        }
    }
}

impl Conn<'_> {
    fn db(&self) -> &DatabaseConnection {
        match self {
            Conn::Direct(db) | Conn::Pooled(db) => db,
        }
    }
}

/// Runs `$call` on the pool, or in a transaction of its own behind a pooler.
macro_rules! lone {
    ($conn:expr, |$db:ident| $call:expr) => {
        match $conn {
            Conn::Direct($db) => $call,
            Conn::Pooled(db) => {
                let txn = begin(db, true).await?;
                let answer = {
                    let $db = &txn;
                    $call
                }?;
                txn.commit().await?;
                Ok(answer)
            }
        }
    };
}

#[async_trait::async_trait]
impl ConnectionTrait for Conn<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.db().get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        lone!(*self, |db| db.execute_raw(stmt).await)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        // The simple protocol names nothing: no transaction needed.
        self.db().execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        lone!(*self, |db| db.query_one_raw(stmt).await)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        lone!(*self, |db| db.query_all_raw(stmt).await)
    }

    fn support_returning(&self) -> bool {
        self.db().support_returning()
    }
}
