//! Queries on caller tokens. Only digests are stored; a token's name belongs to one
//! live (unrevoked) token at a time.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, Order, PaginatorTrait,
    QueryFilter, QueryOrder, sea_query::Expr,
};

use super::{
    Store,
    audit::{self, NewEvent},
    commit_with_event,
    entities::caller_tokens,
    page_of,
};
use crate::{
    Error,
    domain::{
        caller::{CallerToken, OrgAccess, Scopes},
        ids::{CallerTokenId, OrgId},
        paging::{Page, PageRequest},
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
    /// The orgs it reaches.
    pub orgs: OrgAccess,
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
            orgs: OrgAccess::from_stored(&row.org_ids),
            id: CallerTokenId::from_stored(row.id),
            name: row.name,
            hint: row.hint,
            create_time: row.create_time,
            expire_time: row.expire_time,
            revoke_time: row.revoke_time,
            last_used_time: row.last_used_time,
            parent_id: row.parent_id.map(CallerTokenId::from_stored),
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
        orgs: &OrgAccess,
        digest: String,
        hint: String,
        expire_time: Option<DateTime<Utc>>,
        parent_id: Option<CallerTokenId>,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<CallerToken, Error> {
        let txn = self.begin().await?;
        let row = caller_tokens::ActiveModel {
            id: Set(id.into_string()),
            name: Set(name.to_owned()),
            digest: Set(digest),
            scopes: Set(scopes.to_names()),
            org_ids: Set(orgs.to_stored()),
            hint: Set(hint),
            create_time: Set(now),
            expire_time: Set(expire_time),
            revoke_time: Set(None),
            last_used_time: Set(None),
            parent_id: Set(parent_id.map(CallerTokenId::into_string)),
        };
        let taken = Error::AlreadyExists {
            what: "a live caller token with this name for these orgs",
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
            .all(&self.conn())
            .await?
            .into_iter()
            .map(CallerToken::from)
            .collect())
    }

    /// How many caller tokens were ever created.
    #[tracing::instrument(name = "store.count_tokens", skip_all)]
    pub async fn count_tokens(&self) -> Result<u64, Error> {
        Ok(caller_tokens::Entity::find().count(&self.conn()).await?)
    }

    /// The tokens that are not revoked (expiry is judged at use).
    #[tracing::instrument(name = "store.live_tokens", skip_all)]
    pub async fn live_tokens(&self) -> Result<Vec<LiveToken>, Error> {
        Ok(caller_tokens::Entity::find()
            .filter(caller_tokens::Column::RevokeTime.is_null())
            .all(&self.conn())
            .await?
            .into_iter()
            .map(|row| {
                let (scopes, unknown_scopes) = Scopes::parse_stored(&row.scopes);
                LiveToken {
                    scopes,
                    unknown_scopes,
                    orgs: OrgAccess::from_stored(&row.org_ids),
                    id: CallerTokenId::from_stored(row.id),
                    digest: row.digest,
                    name: row.name,
                    expire_time: row.expire_time,
                }
            })
            .collect())
    }

    /// One page of tokens, oldest first, of those `reach` covers (`None`: all).
    #[tracing::instrument(name = "store.page_tokens", skip_all)]
    pub async fn page_tokens(
        &self,
        page: &PageRequest,
        reach: Option<&[OrgId]>,
    ) -> Result<Page<CallerToken>, Error> {
        // A token limited to orgs is covered when each of its orgs is reachable;
        // with few orgs per token this filter runs in memory over one page at a
        // time, so pages may come back short (the token still continues them).
        let Some(reach) = reach else {
            return page_of(
                &self.conn(),
                caller_tokens::Entity::find(),
                caller_tokens::Column::Id,
                Order::Asc,
                page,
                |row| Ok(CallerToken::from(row)),
            )
            .await;
        };
        // An org-limited admin sees only tokens limited to its orgs: one of its
        // orgs in the stored list is a cheap pre-filter, the check is exact.
        let mut query = caller_tokens::Entity::find().filter(caller_tokens::Column::OrgIds.ne(""));
        let mut any = sea_orm::Condition::any();
        for org in reach {
            any = any.add(caller_tokens::Column::OrgIds.contains(org.as_str()));
        }
        query = query.filter(any);
        let access = OrgAccess::of(reach.to_vec());
        let mut result = page_of(
            &self.conn(),
            query,
            caller_tokens::Column::Id,
            Order::Asc,
            page,
            |row| Ok(CallerToken::from(row)),
        )
        .await?;
        result.items.retain(|token| access.covers(&token.orgs));
        Ok(result)
    }

    /// The token `id`.
    #[tracing::instrument(name = "store.find_token", skip_all)]
    pub async fn find_token(&self, id: &CallerTokenId) -> Result<Option<CallerToken>, Error> {
        Ok(caller_tokens::Entity::find_by_id(id.as_str())
            .one(&self.conn())
            .await?
            .map(CallerToken::from))
    }

    /// Revokes the live token `id`, answering it as revoked.
    #[tracing::instrument(name = "store.revoke_token_by_id", skip_all)]
    pub async fn revoke_token_by_id(
        &self,
        id: &CallerTokenId,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<CallerToken, Error> {
        let txn = self.begin().await?;
        let result = caller_tokens::Entity::update_many()
            .col_expr(caller_tokens::Column::RevokeTime, Expr::value(now))
            .filter(caller_tokens::Column::Id.eq(id.as_str()))
            .filter(caller_tokens::Column::RevokeTime.is_null())
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(
                match caller_tokens::Entity::find_by_id(id.as_str())
                    .one(&txn)
                    .await?
                {
                    Some(_) => {
                        Error::FailedPrecondition("the caller token is already revoked".into())
                    }
                    None => Error::NotFound("caller token"),
                },
            );
        }
        // What it made goes with it, and what those made, in the same transaction.
        let mut makers = vec![id.as_str().to_owned()];
        let mut descendants = Vec::new();
        while !makers.is_empty() {
            let children: Vec<String> = caller_tokens::Entity::find()
                .filter(caller_tokens::Column::ParentId.is_in(makers))
                .filter(caller_tokens::Column::RevokeTime.is_null())
                .all(&txn)
                .await?
                .into_iter()
                .map(|row| row.id)
                .collect();
            if !children.is_empty() {
                caller_tokens::Entity::update_many()
                    .col_expr(caller_tokens::Column::RevokeTime, Expr::value(now))
                    .filter(caller_tokens::Column::Id.is_in(children.clone()))
                    .exec(&txn)
                    .await?;
            }
            descendants.extend(children.iter().cloned());
            makers = children;
        }
        let event = if descendants.is_empty() {
            event
        } else {
            event.with_detail("revoked_with_it", serde_json::json!(descendants))
        };
        audit::append(&txn, event, now).await?;
        let row = caller_tokens::Entity::find_by_id(id.as_str())
            .one(&txn)
            .await?
            .ok_or(Error::NotFound("caller token"))?;
        txn.commit().await?;
        Ok(row.into())
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
            .exec(&self.conn())
            .await?;
        Ok(())
    }
}
