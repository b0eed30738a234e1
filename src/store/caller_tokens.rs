//! Queries on caller tokens. Only digests are stored; a token's name belongs to one
//! live (unrevoked) token at a time.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, TransactionTrait, sea_query::Expr,
};

use super::{
    Store,
    audit::{self, NewEvent},
    commit_with_event,
    entities::caller_tokens,
};
use crate::{
    Error,
    domain::{
        caller::{CallerToken, Scopes},
        ids::CallerTokenId,
    },
};

/// A live token as the authenticator keeps it.
#[derive(Debug, Clone)]
pub struct LiveToken {
    /// The token's id.
    pub id: CallerTokenId,
    /// Its SHA-256 digest, hex.
    pub digest: String,
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Scopes,
    /// When it stops working, if ever.
    pub expire_time: Option<DateTime<Utc>>,
    /// Stored scope names this build does not know (written by a newer version);
    /// the token works with `scopes` alone.
    pub unknown_scopes: Vec<String>,
}

impl From<caller_tokens::Model> for CallerToken {
    fn from(row: caller_tokens::Model) -> Self {
        CallerToken {
            scopes: Scopes::parse_stored(&row.scopes).0,
            id: CallerTokenId::from_stored(row.id),
            name: row.name,
            hint: row.hint,
            create_time: row.create_time,
            expire_time: row.expire_time,
            revoke_time: row.revoke_time,
            last_used_time: row.last_used_time,
        }
    }
}

impl Store {
    /// Stores a new caller token by its digest.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(name = "store.insert_token", skip_all)]
    pub async fn insert_token(
        &self,
        id: CallerTokenId,
        name: &str,
        scopes: Scopes,
        digest: String,
        hint: String,
        expire_time: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<CallerToken, Error> {
        let txn = self.db.begin().await?;
        let row = caller_tokens::ActiveModel {
            id: Set(id.into_string()),
            name: Set(name.to_owned()),
            digest: Set(digest),
            scopes: Set(scopes.to_names()),
            hint: Set(hint),
            create_time: Set(now),
            expire_time: Set(expire_time),
            revoke_time: Set(None),
            last_used_time: Set(None),
        };
        let taken = Error::AlreadyExists {
            what: "a live caller token with this name",
            field: "name",
        };
        let written = row.insert(&txn).await;
        Ok(commit_with_event(txn, written, taken, event, now, None)
            .await?
            .into())
    }

    /// Every caller token, live or not, oldest first (never the digests).
    #[tracing::instrument(name = "store.list_tokens", skip_all)]
    pub async fn list_tokens(&self) -> Result<Vec<CallerToken>, Error> {
        Ok(caller_tokens::Entity::find()
            .order_by_asc(caller_tokens::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(CallerToken::from)
            .collect())
    }

    /// How many caller tokens were ever created.
    #[tracing::instrument(name = "store.count_tokens", skip_all)]
    pub async fn count_tokens(&self) -> Result<u64, Error> {
        Ok(caller_tokens::Entity::find().count(&self.db).await?)
    }

    /// The tokens that are not revoked (expiry is judged at use).
    #[tracing::instrument(name = "store.live_tokens", skip_all)]
    pub async fn live_tokens(&self) -> Result<Vec<LiveToken>, Error> {
        Ok(caller_tokens::Entity::find()
            .filter(caller_tokens::Column::RevokeTime.is_null())
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                let (scopes, unknown_scopes) = Scopes::parse_stored(&row.scopes);
                LiveToken {
                    scopes,
                    unknown_scopes,
                    id: CallerTokenId::from_stored(row.id),
                    digest: row.digest,
                    name: row.name,
                    expire_time: row.expire_time,
                }
            })
            .collect())
    }

    /// Revokes the live token named `name`.
    #[tracing::instrument(name = "store.revoke_token", skip_all)]
    pub async fn revoke_token(
        &self,
        name: &str,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<(), Error> {
        let txn = self.db.begin().await?;
        let result = caller_tokens::Entity::update_many()
            .col_expr(caller_tokens::Column::RevokeTime, Expr::value(now))
            .filter(caller_tokens::Column::Name.eq(name))
            .filter(caller_tokens::Column::RevokeTime.is_null())
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(Error::NotFound("live caller token"));
        }
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records that the tokens `ids` were used at `now`.
    #[tracing::instrument(name = "store.touch_tokens", skip_all)]
    pub async fn touch_tokens(
        &self,
        ids: &[CallerTokenId],
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        caller_tokens::Entity::update_many()
            .col_expr(caller_tokens::Column::LastUsedTime, Expr::value(now))
            .filter(caller_tokens::Column::Id.is_in(ids.iter().map(CallerTokenId::as_str)))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
