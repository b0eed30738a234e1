//! Statements that survive a transaction-pooling PgBouncer.
//!
//! sqlx prepares every statement under a name (`sqlx_s_N`, counted per client
//! connection) and sends Parse and Bind in separate round trips. Behind a pooler in
//! transaction mode both break: between the round trips the pooler may hand the
//! server connection to another client, and two clients' `sqlx_s_1` meet on one
//! server connection ("already exists"). SeaORM offers no unnamed statements, so
//! credd keeps to what a transaction pooler guarantees instead:
//!
//! - every statement runs inside a transaction (the pooler pins one server
//!   connection from BEGIN to COMMIT), a lone statement in one of its own;
//! - every transaction starts with `DEALLOCATE ALL` (simple protocol, no name), so
//!   names left on the server connection by an earlier client are gone;
//! - the statement cache is off (a cached name would not survive the next
//!   transaction's `DEALLOCATE ALL`).
//!
//! On a direct connection none of this runs: [`Conn::Direct`] is the pool itself.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
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

/// Begins a transaction on `db`, clearing names an earlier client left behind
/// when `pooled`.
pub async fn begin(db: &DatabaseConnection, pooled: bool) -> Result<DatabaseTransaction, DbErr> {
    let txn = db.begin().await?;
    if pooled {
        txn.execute_unprepared("DEALLOCATE ALL").await?;
    }
    Ok(txn)
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
