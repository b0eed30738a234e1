//! Announcing changes that make cached verifications stale, to every process that
//! shares the database: NOTIFY on PostgreSQL (at once, naming the org), and on every
//! backend a change counter that processes poll.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, sqlx};

use super::Store;
use crate::Error;

/// The PostgreSQL channel that carries the ids of orgs whose verifications changed.
pub const CHANNEL: &str = "credd_verify";

/// Announces, inside `txn` (so only if it commits), that `org_id`'s verifications
/// changed.
pub(super) async fn announce(
    txn: &DatabaseTransaction,
    org_id: &crate::domain::ids::OrgId,
) -> Result<(), Error> {
    let backend = txn.get_database_backend();
    if backend == DbBackend::Postgres {
        let notify = Statement::from_sql_and_values(
            backend,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), org_id.as_str().into()],
        );
        txn.execute_raw(notify).await?;
    }
    // On every backend: the counter is the safety net that a silently dead LISTEN
    // connection cannot defeat.
    let bump = Statement::from_string(
        backend,
        "UPDATE change_counter SET version = version + 1 WHERE id = 1",
    );
    txn.execute_raw(bump).await?;
    Ok(())
}

/// What a process watches to learn of other processes' changes at once (the change
/// counter, polled, backs it up on every backend).
pub enum ChangeFeed {
    /// PostgreSQL: a LISTEN connection.
    Notifications(sqlx::postgres::PgListener),
    /// SQLite: nothing beyond the counter.
    CounterOnly,
}

impl Store {
    /// The immediate change feed of this database.
    pub async fn change_feed(&self) -> Result<ChangeFeed, Error> {
        match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let mut listener = sqlx::postgres::PgListener::connect_with(
                    self.db.get_postgres_connection_pool(),
                )
                .await
                .map_err(|err| Error::Unavailable(Box::new(err)))?;
                listener
                    .listen(CHANNEL)
                    .await
                    .map_err(|err| Error::Unavailable(Box::new(err)))?;
                Ok(ChangeFeed::Notifications(listener))
            }
            _ => Ok(ChangeFeed::CounterOnly),
        }
    }

    /// How often the change counter should be polled: often on SQLite, where it is
    /// the only cross-process signal; once a second on PostgreSQL, as the safety
    /// net behind notifications.
    pub fn change_poll_interval(&self) -> std::time::Duration {
        match self.db.get_database_backend() {
            DbBackend::Postgres => std::time::Duration::from_secs(1),
            _ => std::time::Duration::from_millis(250),
        }
    }

    /// The change counter's value.
    pub async fn change_version(&self) -> Result<i64, Error> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT version FROM change_counter WHERE id = 1",
            ))
            .await?;
        Ok(row
            .and_then(|row| row.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0))
    }
}
