//! Queries on client secrets. Every write locks the org's row first (a no-op
//! UPDATE), so that writes to one org's secrets run one at a time on both
//! backends, and a deleted org's secrets cannot be written.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait, sea_query::Expr,
};

use super::{
    Store,
    audit::{self, NewEvent},
    entities::{client_secrets, orgs},
    is_unique_violation,
};
use crate::{
    Error,
    domain::{
        paging::PageRequest,
        secret::{ClientSecret, ClientSecretState},
    },
};

/// A new secret as stored: metadata and its argon2id PHC hash.
pub struct NewSecret {
    /// The id (the locator of a generated secret).
    pub id: String,
    /// The org.
    pub org_id: String,
    /// Free text.
    pub description: String,
    /// Trailing characters of the secret.
    pub hint: String,
    /// Imported rather than generated.
    pub imported: bool,
    /// The argon2id hash.
    pub phc: String,
}

/// A secret that a presented plaintext may match, with the hash to check it by.
pub struct Candidate {
    /// The secret's metadata.
    pub secret: ClientSecret,
    /// Its argon2id PHC hash.
    pub phc: String,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// The secrets that matter for an org's integration view.
#[derive(Debug, Clone, Default)]
pub struct SecretSummary {
    /// PENDING, ACTIVE and RETIRING secrets (the caller judges expiry).
    pub current: Vec<ClientSecret>,
}

impl TryFrom<client_secrets::Model> for ClientSecret {
    type Error = Error;

    fn try_from(row: client_secrets::Model) -> Result<Self, Error> {
        let state = ClientSecretState::parse(&row.state).ok_or_else(|| {
            Error::Internal(
                format!("unknown secret state {:?} in row {}", row.state, row.id).into(),
            )
        })?;
        Ok(ClientSecret {
            id: row.id,
            org_id: row.org_id,
            state,
            description: row.description,
            hint: row.hint,
            imported: row.imported,
            create_time: row.create_time,
            activate_time: row.activate_time,
            expire_time: row.expire_time,
            revoke_time: row.revoke_time,
            last_used_time: row.last_used_time,
        })
    }
}

fn candidate(row: client_secrets::Model) -> Result<Candidate, Error> {
    let phc = row.phc.clone();
    Ok(Candidate {
        secret: row.try_into()?,
        phc,
    })
}

/// Locks the live org `org_id` for the rest of the transaction, or NOT_FOUND.
pub(super) async fn lock_live_org(txn: &DatabaseTransaction, org_id: &str) -> Result<(), Error> {
    let locked = orgs::Entity::update_many()
        .col_expr(
            orgs::Column::UpdateTime,
            Expr::col(orgs::Column::UpdateTime),
        )
        .filter(orgs::Column::Id.eq(org_id))
        .filter(orgs::Column::DeleteTime.is_null())
        .exec(txn)
        .await?;
    if locked.rows_affected == 0 {
        return Err(Error::NotFound("org"));
    }
    Ok(())
}

async fn find_in<C: ConnectionTrait>(
    db: &C,
    org_id: &str,
    secret_id: &str,
) -> Result<client_secrets::Model, Error> {
    client_secrets::Entity::find()
        .filter(client_secrets::Column::OrgId.eq(org_id))
        .filter(client_secrets::Column::Id.eq(secret_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("client secret"))
}

fn state(state: ClientSecretState) -> &'static str {
    state.as_str()
}

impl Store {
    /// Stores a new PENDING secret of the live org `new.org_id`.
    #[tracing::instrument(name = "store.insert_secret", skip_all)]
    pub async fn insert_secret(
        &self,
        new: NewSecret,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<ClientSecret, Error> {
        let txn = self.db.begin().await?;
        lock_live_org(&txn, &new.org_id).await?;
        let row = client_secrets::ActiveModel {
            id: Set(new.id),
            org_id: Set(new.org_id),
            state: Set(state(ClientSecretState::Pending).to_owned()),
            description: Set(new.description),
            hint: Set(new.hint),
            imported: Set(new.imported),
            phc: Set(new.phc),
            create_time: Set(now),
            activate_time: Set(None),
            expire_time: Set(None),
            revoke_time: Set(None),
            last_used_time: Set(None),
        }
        .insert(&txn)
        .await?;
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        row.try_into()
    }

    /// The secret `secret_id` of org `org_id`, with its hash.
    #[tracing::instrument(name = "store.find_secret", skip_all)]
    pub async fn find_secret(
        &self,
        org_id: &str,
        secret_id: &str,
    ) -> Result<Option<Candidate>, Error> {
        match find_in(&self.db, org_id, secret_id).await {
            Ok(row) => candidate(row).map(Some),
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The org's imported secrets in `states` whose hint is `hint`.
    #[tracing::instrument(name = "store.find_imported_by_hint", skip_all)]
    pub async fn find_imported_by_hint(
        &self,
        org_id: &str,
        hint: &str,
        states: &[ClientSecretState],
    ) -> Result<Vec<Candidate>, Error> {
        client_secrets::Entity::find()
            .filter(client_secrets::Column::OrgId.eq(org_id))
            .filter(client_secrets::Column::Imported.eq(true))
            .filter(client_secrets::Column::Hint.eq(hint))
            .filter(client_secrets::Column::State.is_in(states.iter().map(|s| s.as_str())))
            .all(&self.db)
            .await?
            .into_iter()
            .map(candidate)
            .collect()
    }

    /// One page of the org's secrets, newest first, and whether more follow.
    #[tracing::instrument(name = "store.list_secrets", skip_all)]
    pub async fn list_secrets(
        &self,
        org_id: &str,
        page: &PageRequest,
    ) -> Result<(Vec<ClientSecret>, bool), Error> {
        let mut query = client_secrets::Entity::find()
            .filter(client_secrets::Column::OrgId.eq(org_id))
            .order_by_desc(client_secrets::Column::Id);
        if let Some(after) = &page.after {
            query = query.filter(client_secrets::Column::Id.lt(after.as_str()));
        }
        let mut rows = query.limit(page.size + 1).all(&self.db).await?;
        let more = rows.len() as u64 > page.size;
        rows.truncate(page.size as usize);
        let secrets = rows
            .into_iter()
            .map(ClientSecret::try_from)
            .collect::<Result<_, _>>()?;
        Ok((secrets, more))
    }

    /// The org's PENDING, ACTIVE and RETIRING secrets.
    #[tracing::instrument(name = "store.secret_summary", skip_all)]
    pub async fn secret_summary(&self, org_id: &str) -> Result<SecretSummary, Error> {
        let current = client_secrets::Entity::find()
            .filter(client_secrets::Column::OrgId.eq(org_id))
            .filter(client_secrets::Column::State.is_in([
                state(ClientSecretState::Pending),
                state(ClientSecretState::Active),
                state(ClientSecretState::Retiring),
            ]))
            .order_by_desc(client_secrets::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ClientSecret::try_from)
            .collect::<Result<_, _>>()?;
        Ok(SecretSummary { current })
    }

    /// Makes the PENDING secret `secret_id` the org's one ACTIVE secret, in one
    /// transaction: other RETIRING secrets become SUPERSEDED, the previous ACTIVE
    /// becomes RETIRING until `now + grace` (or SUPERSEDED when `grace` is zero).
    /// Activating the ACTIVE secret changes nothing and answers it.
    #[tracing::instrument(name = "store.activate_secret", skip_all)]
    pub async fn activate_secret(
        &self,
        org_id: &str,
        secret_id: &str,
        now: DateTime<Utc>,
        grace: Duration,
        event: NewEvent,
    ) -> Result<ClientSecret, Error> {
        let txn = self.db.begin().await?;
        lock_live_org(&txn, org_id).await?;
        let target: ClientSecret = find_in(&txn, org_id, secret_id).await?.try_into()?;
        match target.state_at(now) {
            ClientSecretState::Active => return Ok(target),
            ClientSecretState::Pending => {}
            ClientSecretState::Revoked => {
                return Err(Error::FailedPrecondition(
                    "the secret is revoked; generate or import a new one".into(),
                ));
            }
            ClientSecretState::Retiring | ClientSecretState::Superseded => {
                return Err(Error::FailedPrecondition(
                    "the secret was superseded by a later activation; generate or import a new one"
                        .into(),
                ));
            }
        }
        let of_org = || {
            client_secrets::Entity::update_many().filter(client_secrets::Column::OrgId.eq(org_id))
        };
        // Earlier rotations' grace ends now.
        of_org()
            .col_expr(client_secrets::Column::ExpireTime, Expr::value(now))
            .filter(client_secrets::Column::State.eq(state(ClientSecretState::Retiring)))
            .filter(client_secrets::Column::ExpireTime.gt(now))
            .exec(&txn)
            .await?;
        of_org()
            .col_expr(
                client_secrets::Column::State,
                Expr::value(state(ClientSecretState::Superseded)),
            )
            .filter(client_secrets::Column::State.eq(state(ClientSecretState::Retiring)))
            .exec(&txn)
            .await?;
        // The previous ACTIVE secret steps down before the new one steps up, so the
        // one-ACTIVE index holds at every statement.
        let (previous_state, previous_expiry) = if grace > Duration::zero() {
            (ClientSecretState::Retiring, now + grace)
        } else {
            (ClientSecretState::Superseded, now)
        };
        of_org()
            .col_expr(
                client_secrets::Column::State,
                Expr::value(state(previous_state)),
            )
            .col_expr(
                client_secrets::Column::ExpireTime,
                Expr::value(previous_expiry),
            )
            .filter(client_secrets::Column::State.eq(state(ClientSecretState::Active)))
            .exec(&txn)
            .await?;
        let promoted = of_org()
            .col_expr(
                client_secrets::Column::State,
                Expr::value(state(ClientSecretState::Active)),
            )
            .col_expr(client_secrets::Column::ActivateTime, Expr::value(now))
            .filter(client_secrets::Column::Id.eq(secret_id))
            .filter(client_secrets::Column::State.eq(state(ClientSecretState::Pending)))
            .exec(&txn)
            .await;
        match promoted {
            Ok(result) if result.rows_affected == 1 => {}
            Ok(_) => {
                return Err(Error::FailedPrecondition(
                    "the secret is no longer pending".into(),
                ));
            }
            Err(err) if is_unique_violation(&err) => {
                return Err(Error::FailedPrecondition(
                    "another activation for this org committed at the same time; retry".into(),
                ));
            }
            Err(err) => return Err(err.into()),
        }
        super::changes::announce(&txn, org_id).await?;
        let activated = find_in(&txn, org_id, secret_id).await?.try_into()?;
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        Ok(activated)
    }

    /// Revokes the secret `secret_id` of org `org_id`; it never verifies again.
    #[tracing::instrument(name = "store.revoke_secret", skip_all)]
    pub async fn revoke_secret(
        &self,
        org_id: &str,
        secret_id: &str,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<ClientSecret, Error> {
        let txn = self.db.begin().await?;
        lock_live_org(&txn, org_id).await?;
        let row = find_in(&txn, org_id, secret_id).await?;
        if row.state == state(ClientSecretState::Revoked) {
            return Err(Error::FailedPrecondition(
                "the secret is already revoked".into(),
            ));
        }
        let mut row: client_secrets::ActiveModel = row.into();
        row.state = Set(state(ClientSecretState::Revoked).to_owned());
        row.revoke_time = Set(Some(now));
        super::changes::announce(&txn, org_id).await?;
        let row = row.update(&txn).await?;
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        row.try_into()
    }

    /// The secret `secret_id` if it belongs to the live org with `client_id`.
    #[tracing::instrument(name = "store.verify_candidate", skip_all)]
    pub async fn verify_candidate(
        &self,
        client_id: &str,
        secret_id: &str,
    ) -> Result<Option<Candidate>, Error> {
        client_secrets::Entity::find()
            .inner_join(orgs::Entity)
            .filter(orgs::Column::ClientId.eq(client_id))
            .filter(orgs::Column::DeleteTime.is_null())
            .filter(client_secrets::Column::Id.eq(secret_id))
            .one(&self.db)
            .await?
            .map(candidate)
            .transpose()
    }

    /// The imported ACTIVE or RETIRING secrets with hint `hint` of the live org
    /// with `client_id` (at most two, usually one or none).
    #[tracing::instrument(name = "store.verify_import_candidates", skip_all)]
    pub async fn verify_import_candidates(
        &self,
        client_id: &str,
        hint: &str,
    ) -> Result<Vec<Candidate>, Error> {
        client_secrets::Entity::find()
            .inner_join(orgs::Entity)
            .filter(orgs::Column::ClientId.eq(client_id))
            .filter(orgs::Column::DeleteTime.is_null())
            .filter(client_secrets::Column::Imported.eq(true))
            .filter(client_secrets::Column::Hint.eq(hint))
            .filter(client_secrets::Column::State.is_in([
                state(ClientSecretState::Active),
                state(ClientSecretState::Retiring),
            ]))
            .limit(2)
            .all(&self.db)
            .await?
            .into_iter()
            .map(candidate)
            .collect()
    }

    /// Records that `secret_id` verified at `now`.
    #[tracing::instrument(name = "store.touch_secret", skip_all)]
    pub async fn touch_secret(&self, secret_id: &str, now: DateTime<Utc>) -> Result<(), Error> {
        client_secrets::Entity::update_many()
            .col_expr(client_secrets::Column::LastUsedTime, Expr::value(now))
            .filter(client_secrets::Column::Id.eq(secret_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
