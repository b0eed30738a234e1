//! Queries on client secrets. Every write locks the org's row first, so that writes
//! to one org's secrets run one at a time on both backends, and a deleted org's
//! secrets cannot be written. Which secret becomes what is decided in
//! `domain::secret`; this module applies it.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, Order,
    QueryFilter, QueryOrder, TransactionTrait, sea_query::Expr,
};

use super::{
    Store,
    audit::{self, NewEvent},
    entities::client_secrets,
    is_unique_violation,
    orgs::lock_live_org,
    page_of,
};
use crate::{
    Error,
    domain::{
        ids::{OrgId, SecretId},
        paging::{Page, PageRequest},
        secret::{self, Activation, ClientSecret, ClientSecretState, Transition},
    },
};

/// A new secret as stored: metadata and its PHC hash.
pub struct NewSecret {
    /// The id (the locator of a generated secret).
    pub id: SecretId,
    /// The org.
    pub org_id: OrgId,
    /// Free text.
    pub description: String,
    /// Trailing characters of the secret.
    pub hint: String,
    /// Imported rather than generated.
    pub imported: bool,
    /// The hash.
    pub phc: String,
}

/// A secret that a presented plaintext may match, with the hash to check it by.
pub struct Candidate {
    /// The secret's metadata.
    pub secret: ClientSecret,
    /// Its PHC hash.
    pub phc: String,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// The stored states of an org's secrets that still matter: they verify now, may
/// verify later, or are retiring.
const CURRENT: [ClientSecretState; 3] = [
    ClientSecretState::Pending,
    ClientSecretState::Active,
    ClientSecretState::Retiring,
];

impl TryFrom<client_secrets::Model> for ClientSecret {
    type Error = Error;

    fn try_from(row: client_secrets::Model) -> Result<Self, Error> {
        let state = ClientSecretState::parse(&row.state).ok_or_else(|| {
            Error::Internal(
                format!("unknown secret state {:?} in row {}", row.state, row.id).into(),
            )
        })?;
        Ok(ClientSecret {
            id: SecretId::from_stored(row.id),
            org_id: OrgId::from_stored(row.org_id),
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

/// The org's secrets, and nobody else's.
fn of_org(org_id: &OrgId) -> sea_orm::Select<client_secrets::Entity> {
    client_secrets::Entity::find().filter(client_secrets::Column::OrgId.eq(org_id.as_str()))
}

fn states(states: &[ClientSecretState]) -> impl Iterator<Item = &'static str> + '_ {
    states.iter().map(|s| s.as_str())
}

async fn find_in<C: ConnectionTrait>(
    db: &C,
    org_id: &OrgId,
    secret_id: &SecretId,
) -> Result<client_secrets::Model, Error> {
    of_org(org_id)
        .filter(client_secrets::Column::Id.eq(secret_id.as_str()))
        .one(db)
        .await?
        .ok_or(Error::NotFound("client secret"))
}

/// Applies one transition, checking that the secret is still in the state the
/// rule saw.
async fn apply<C: ConnectionTrait>(db: &C, org_id: &OrgId, step: &Transition) -> Result<(), Error> {
    let mut update = client_secrets::Entity::update_many()
        .col_expr(client_secrets::Column::State, Expr::value(step.to.as_str()))
        .filter(client_secrets::Column::OrgId.eq(org_id.as_str()))
        .filter(client_secrets::Column::Id.eq(step.secret_id.as_str()))
        .filter(client_secrets::Column::State.eq(step.from.as_str()));
    if let Some(expire_time) = step.expire_time {
        update = update.col_expr(client_secrets::Column::ExpireTime, Expr::value(expire_time));
    }
    if let Some(activate_time) = step.activate_time {
        update = update.col_expr(
            client_secrets::Column::ActivateTime,
            Expr::value(activate_time),
        );
    }
    match update.exec(db).await {
        Ok(result) if result.rows_affected == 1 => Ok(()),
        Ok(_) => Err(Error::FailedPrecondition(
            "the org's secrets changed during the activation; retry".into(),
        )),
        Err(err) if is_unique_violation(&err) => Err(Error::FailedPrecondition(
            "another activation for this org committed at the same time; retry".into(),
        )),
        Err(err) => Err(err.into()),
    }
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
            id: Set(new.id.into_string()),
            org_id: Set(new.org_id.into_string()),
            state: Set(ClientSecretState::Pending.as_str().to_owned()),
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
        org_id: &OrgId,
        secret_id: &SecretId,
    ) -> Result<Option<Candidate>, Error> {
        match find_in(&self.db, org_id, secret_id).await {
            Ok(row) => candidate(row).map(Some),
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The org's imported secrets in `in_states` whose hint is `hint`.
    #[tracing::instrument(name = "store.find_imported_by_hint", skip_all)]
    pub async fn find_imported_by_hint(
        &self,
        org_id: &OrgId,
        hint: &str,
        in_states: &[ClientSecretState],
    ) -> Result<Vec<Candidate>, Error> {
        of_org(org_id)
            .filter(client_secrets::Column::Imported.eq(true))
            .filter(client_secrets::Column::Hint.eq(hint))
            .filter(client_secrets::Column::State.is_in(states(in_states)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(candidate)
            .collect()
    }

    /// One page of the org's secrets, newest first.
    #[tracing::instrument(name = "store.list_secrets", skip_all)]
    pub async fn list_secrets(
        &self,
        org_id: &OrgId,
        page: &PageRequest,
    ) -> Result<Page<ClientSecret>, Error> {
        page_of(
            &self.db,
            of_org(org_id),
            client_secrets::Column::Id,
            Order::Desc,
            page,
            ClientSecret::try_from,
        )
        .await
    }

    /// The org's PENDING, ACTIVE and RETIRING secrets, newest first (the caller
    /// judges expiry).
    #[tracing::instrument(name = "store.current_secrets", skip_all)]
    pub async fn current_secrets(&self, org_id: &OrgId) -> Result<Vec<ClientSecret>, Error> {
        of_org(org_id)
            .filter(client_secrets::Column::State.is_in(states(&CURRENT)))
            .order_by_desc(client_secrets::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ClientSecret::try_from)
            .collect()
    }

    /// Activates the secret `secret_id` in one transaction, as
    /// [`secret::plan_activation`] decides. Activating the ACTIVE secret changes
    /// nothing and answers it.
    #[tracing::instrument(name = "store.activate_secret", skip_all)]
    pub async fn activate_secret(
        &self,
        org_id: &OrgId,
        secret_id: &SecretId,
        now: DateTime<Utc>,
        grace: Duration,
        event: NewEvent,
    ) -> Result<ClientSecret, Error> {
        let txn = self.db.begin().await?;
        lock_live_org(&txn, org_id).await?;
        let target: ClientSecret = find_in(&txn, org_id, secret_id).await?.try_into()?;
        let current = of_org(org_id)
            .filter(client_secrets::Column::State.is_in(states(&CURRENT)))
            .all(&txn)
            .await?
            .into_iter()
            .map(ClientSecret::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let steps = match secret::plan_activation(&target, &current, now, grace) {
            Ok(Activation::AlreadyActive) => return Ok(target),
            Ok(Activation::Apply(steps)) => steps,
            Err(refused) => return Err(Error::FailedPrecondition(refused.message().into())),
        };
        for step in &steps {
            apply(&txn, org_id, step).await?;
        }
        let activated = find_in(&txn, org_id, secret_id).await?.try_into()?;
        audit::append(&txn, event, now).await?;
        // Last before the commit: it takes the feed's one global lock.
        super::changes::announce(&txn, &self.origin, org_id).await?;
        txn.commit().await?;
        Ok(activated)
    }

    /// Revokes the secret `secret_id` of org `org_id`; it never verifies again.
    #[tracing::instrument(name = "store.revoke_secret", skip_all)]
    pub async fn revoke_secret(
        &self,
        org_id: &OrgId,
        secret_id: &SecretId,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<ClientSecret, Error> {
        let txn = self.db.begin().await?;
        lock_live_org(&txn, org_id).await?;
        let row = find_in(&txn, org_id, secret_id).await?;
        if row.state == ClientSecretState::Revoked.as_str() {
            return Err(Error::FailedPrecondition(
                "the secret is already revoked".into(),
            ));
        }
        let mut row: client_secrets::ActiveModel = row.into();
        row.state = Set(ClientSecretState::Revoked.as_str().to_owned());
        row.revoke_time = Set(Some(now));
        let row = row.update(&txn).await?;
        audit::append(&txn, event, now).await?;
        // Last before the commit: it takes the feed's one global lock.
        super::changes::announce(&txn, &self.origin, org_id).await?;
        txn.commit().await?;
        row.try_into()
    }

    /// Records that the secret `secret_id` of org `org_id` verified at `now`.
    #[tracing::instrument(name = "store.touch_secret", skip_all)]
    pub async fn touch_secret(
        &self,
        org_id: &OrgId,
        secret_id: &SecretId,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        client_secrets::Entity::update_many()
            .col_expr(client_secrets::Column::LastUsedTime, Expr::value(now))
            .filter(client_secrets::Column::OrgId.eq(org_id.as_str()))
            .filter(client_secrets::Column::Id.eq(secret_id.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
