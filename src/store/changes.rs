//! Announcing changes that make cached verifications stale, to every process that
//! shares the database: NOTIFY on PostgreSQL (at once, naming the org), and on every
//! backend a change log naming the org, with a change counter beside it as the
//! cheap "something changed" signal that processes poll.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, sqlx,
};
use secrecy::ExposeSecret as _;

use super::{Store, entities::change_log};
use crate::{Error, domain::ids::OrgId};

/// One entry of the change log: the org whose verifications changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its place in the log.
    pub seq: i64,
    /// The process that made the change (see [`Store::origin`]).
    pub origin: String,
    /// The org.
    pub org_id: OrgId,
}

/// Reads a notification's payload: the origin and the org.
pub fn parse_notification(payload: &str) -> Option<(&str, OrgId)> {
    let (origin, org_id) = payload.split_once(' ')?;
    Some((origin, OrgId::from_stored(org_id.to_owned())))
}

/// The PostgreSQL channel that carries `<origin> <org id>` of each change.
pub const CHANNEL: &str = "credd_changes";
/// The channel older versions listen on, carrying the org id alone; still sent, so
/// that replicas of an older version keep invalidating during a rolling deploy.
const LEGACY_CHANNEL: &str = "credd_verify";

/// Announces, inside `txn` (so only if it commits), that `org_id`'s verifications
/// changed.
pub(super) async fn announce(
    txn: &super::pooled::Txn,
    origin: &str,
    org_id: &OrgId,
) -> Result<(), Error> {
    let backend = txn.get_database_backend();
    if backend == DbBackend::Postgres {
        let notify = Statement::from_sql_and_values(
            backend,
            "SELECT pg_notify($1, $2), pg_notify($3, $4)",
            [
                CHANNEL.into(),
                format!("{origin} {org_id}").into(),
                LEGACY_CHANNEL.into(),
                org_id.as_str().into(),
            ],
        );
        txn.execute_raw(notify).await?;
    }
    // On every backend: the counter first — its row lock, held to the commit, puts
    // announcing transactions in one order, so the log entry's sequence number
    // (taken after the lock) follows commit order and a reader can go on from the
    // last number it saw — then the log entry naming the org. A silently dead
    // LISTEN connection defeats neither.
    let bump = Statement::from_string(
        backend,
        "UPDATE change_counter SET version = version + 1 WHERE id = 1",
    );
    txn.execute_raw(bump).await?;
    change_log::ActiveModel {
        origin: Set(origin.to_owned()),
        org_id: Set(org_id.as_str().to_owned()),
        time: Set(Utc::now()),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// Where the change feed stands: the counter and the newest log entry, read
/// counter first (entries read ahead of the counter are counted on the next poll).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedPosition {
    /// The change counter.
    pub version: i64,
    /// The newest change-log entry's sequence number.
    pub last_seq: i64,
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
    /// This process's name in the change feed.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The immediate change feed of this database: LISTEN over the direct URL when
    /// one is set, else over the pool unless that is a transaction pooler (which
    /// cannot carry a session's LISTEN).
    pub async fn change_feed(&self) -> Result<ChangeFeed, Error> {
        if self.db.get_database_backend() != DbBackend::Postgres || !self.listens() {
            return Ok(ChangeFeed::CounterOnly);
        }
        let unavailable = |err: sqlx::Error| Error::Unavailable(Box::new(err));
        let mut listener = match &self.direct_url {
            Some(url) => sqlx::postgres::PgListener::connect(url.expose_secret()).await,
            None => {
                sqlx::postgres::PgListener::connect_with(self.db.get_postgres_connection_pool())
                    .await
            }
        }
        .map_err(unavailable)?;
        listener.listen(CHANNEL).await.map_err(unavailable)?;
        Ok(ChangeFeed::Notifications(listener))
    }

    /// Whether this store hears other processes' changes through LISTEN.
    fn listens(&self) -> bool {
        self.direct_url.is_some() || !self.pooled
    }

    /// How often the change counter should be polled: once a second on PostgreSQL
    /// with LISTEN, as the safety net behind notifications; often where the counter
    /// is the only cross-process signal (SQLite, a transaction pooler without a
    /// direct URL), so that replicas stay within a second of each other.
    pub fn change_poll_interval(&self) -> std::time::Duration {
        match self.db.get_database_backend() {
            DbBackend::Postgres if self.listens() => std::time::Duration::from_secs(1),
            _ => std::time::Duration::from_millis(250),
        }
    }

    /// The change counter's value.
    pub async fn change_version(&self) -> Result<i64, Error> {
        let backend = self.db.get_database_backend();
        let row = self
            .conn()
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT version FROM change_counter WHERE id = 1",
            ))
            .await?;
        Ok(row
            .and_then(|row| row.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0))
    }

    /// The change-log entries after `after`, oldest first, at most `limit`.
    /// Sequence numbers follow commit order (see `announce`), so reading on from
    /// the last one seen misses nothing.
    pub async fn changes_after(&self, after: i64, limit: u64) -> Result<Vec<Change>, Error> {
        Ok(change_log::Entity::find()
            .filter(change_log::Column::Seq.gt(after))
            .order_by_asc(change_log::Column::Seq)
            .limit(limit)
            .all(&self.conn())
            .await?
            .into_iter()
            .map(|row| Change {
                seq: row.seq,
                origin: row.origin,
                org_id: OrgId::from_stored(row.org_id),
            })
            .collect())
    }

    /// Where the feed stands now.
    pub async fn feed_position(&self) -> Result<FeedPosition, Error> {
        let version = self.change_version().await?;
        let last_seq = self.last_change().await?;
        Ok(FeedPosition { version, last_seq })
    }

    /// The newest entry's sequence number (0 for an empty log).
    pub async fn last_change(&self) -> Result<i64, Error> {
        Ok(change_log::Entity::find()
            .select_only()
            .column_as(change_log::Column::Seq.max(), "last")
            .into_tuple::<Option<i64>>()
            .one(&self.conn())
            .await?
            .flatten()
            .unwrap_or(0))
    }

    /// Deletes change-log entries written before `before`.
    pub async fn prune_changes(&self, before: DateTime<Utc>) -> Result<u64, Error> {
        Ok(change_log::Entity::delete_many()
            .filter(change_log::Column::Time.lt(before))
            .exec(&self.conn())
            .await?
            .rows_affected)
    }
}
