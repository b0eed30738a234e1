//! Queries on client secrets. Every write locks the org's row first, so that writes
//! to one org's secrets run one at a time on both backends, and a deleted org's
//! secrets cannot be written. Which secret becomes what is decided in
//! `domain::secret`; this module applies it.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, Order,
    QueryFilter, QueryOrder, sea_query::Expr,
};

use super::{
    Store,
    audit::{self, NewEvent},
    entities::{client_secrets, orgs},
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
    /// The end of its lifetime (`None`: none).
    pub lifetime_end: Option<DateTime<Utc>>,
    /// When it stops waiting for activation (`None`: never).
    pub pending_expire_time: Option<DateTime<Utc>>,
}

/// Activating a secret as it is stored (Rotate, Import with `activate`).
pub struct ActivateAtOnce {
    /// The previous ACTIVE secret's grace.
    pub grace: Duration,
    /// The activation's audit event.
    pub event: NewEvent,
}

/// One secret whose end the sweeper stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The org.
    pub org_id: OrgId,
    /// The secret.
    pub secret_id: SecretId,
    /// Its stored state before.
    pub from: ClientSecretState,
    /// Its stored state now: EXPIRED, or SUPERSEDED (a grace ended).
    pub to: ClientSecretState,
}

/// What ListClientSecrets asks for.
#[derive(Debug, Clone, Default)]
pub struct SecretFilter {
    /// Only these states as of now (empty: any).
    pub states: Vec<ClientSecretState>,
    /// Only secrets whose `expire_time` is before this.
    pub expire_before: Option<DateTime<Utc>>,
}

/// The stored states a secret may be in to be in `state` as of now (the sweeper
/// stores an end a little after it passed).
fn stored_states_for(state: ClientSecretState) -> &'static [ClientSecretState] {
    use ClientSecretState::*;
    match state {
        Pending => &[Pending],
        Active => &[Active],
        Retiring => &[Retiring],
        Superseded => &[Superseded, Retiring],
        Revoked => &[Revoked],
        Expired => &[Expired, Pending, Active, Retiring],
    }
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
            lifetime_end: row.lifetime_end,
            pending_expire_time: row.pending_expire_time,
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
        // Retryable: the next attempt sees the winner's state.
        Ok(_) => Err(Error::Aborted(
            "the org's secrets changed during the activation; retry",
        )),
        Err(err) if is_unique_violation(&err) => Err(Error::Aborted(
            "another activation for this org committed at the same time; retry",
        )),
        Err(err) => Err(err.into()),
    }
}

/// Activates `secret_id` inside `txn` (the org's row already locked).
async fn activate_in(
    txn: &super::pooled::Txn,
    org_id: &OrgId,
    secret_id: &SecretId,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<ClientSecret, Error> {
    let target: ClientSecret = find_in(txn, org_id, secret_id).await?.try_into()?;
    let current = of_org(org_id)
        .filter(client_secrets::Column::State.is_in(states(&CURRENT)))
        .all(txn)
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
        apply(txn, org_id, step).await?;
    }
    find_in(txn, org_id, secret_id).await?.try_into()
}

impl Store {
    /// Stores a new PENDING secret of the live org `new.org_id` — at most
    /// `max_pending` of them at once (FAILED_PRECONDITION past it) — and, with
    /// `activate`, activates it in the same transaction: a failure leaves the org
    /// exactly as it was.
    #[tracing::instrument(name = "store.insert_secret", skip_all)]
    pub async fn insert_secret(
        &self,
        new: NewSecret,
        now: DateTime<Utc>,
        event: NewEvent,
        max_pending: Option<u32>,
        activate: Option<ActivateAtOnce>,
    ) -> Result<ClientSecret, Error> {
        let txn = self.begin().await?;
        lock_live_org(&txn, &new.org_id).await?;
        if let (Some(max), None) = (max_pending, &activate) {
            check_pending_cap(pending_count(&txn, &new.org_id, now).await?, max)?;
        }
        let (org_id, secret_id) = (new.org_id.clone(), new.id.clone());
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
            // One meaning: when it stops verifying; so far its lifetime end.
            expire_time: Set(new.lifetime_end),
            revoke_time: Set(None),
            last_used_time: Set(None),
            lifetime_end: Set(new.lifetime_end),
            pending_expire_time: Set(new.pending_expire_time),
            expiring_announced: Set(false),
        }
        .insert(&txn)
        .await?;
        audit::append(&txn, event, now).await?;
        let Some(activate) = activate else {
            txn.commit().await?;
            return row.try_into();
        };
        let activated = activate_in(&txn, &org_id, &secret_id, now, activate.grace).await?;
        audit::append(&txn, activate.event, now).await?;
        super::changes::announce(&txn, &self.origin, &org_id).await?;
        txn.commit().await?;
        Ok(activated)
    }

    /// The secret `secret_id` of org `org_id`, with its hash.
    #[tracing::instrument(name = "store.find_secret", skip_all)]
    pub async fn find_secret(
        &self,
        org_id: &OrgId,
        secret_id: &SecretId,
    ) -> Result<Option<Candidate>, Error> {
        match find_in(&self.conn(), org_id, secret_id).await {
            Ok(row) => candidate(row).map(Some),
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Refuses a new PENDING secret when the org already has `max` waiting (the
    /// check `insert_secret` makes again in its transaction), so that an import
    /// is refused before its argon2 hash is paid for.
    #[tracing::instrument(name = "store.check_pending_cap", skip_all)]
    pub async fn check_pending_cap(
        &self,
        org_id: &OrgId,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        check_pending_cap(pending_count(&self.conn(), org_id, now).await?, max)
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
            .all(&self.conn())
            .await?
            .into_iter()
            .map(candidate)
            .collect()
    }

    /// One page of the secrets of `org` (`None`: of the live orgs `only` names,
    /// or of every live org when that is `None` too), newest first, matching
    /// `filter` as of `now`. The states are judged as of now (an end the sweeper
    /// has not stored yet counts), so a page may come back shorter than asked
    /// while the list goes on.
    #[tracing::instrument(name = "store.list_secrets", skip_all)]
    pub async fn list_secrets(
        &self,
        org: Option<&OrgId>,
        only: Option<&[OrgId]>,
        filter: &SecretFilter,
        now: DateTime<Utc>,
        page: &PageRequest,
    ) -> Result<Page<ClientSecret>, Error> {
        let mut query = match org {
            Some(org_id) => of_org(org_id),
            None => {
                let mut query = client_secrets::Entity::find()
                    .inner_join(orgs::Entity)
                    .filter(orgs::Column::DeleteTime.is_null());
                if let Some(only) = only {
                    query = query.filter(
                        client_secrets::Column::OrgId.is_in(only.iter().map(OrgId::as_str)),
                    );
                }
                query
            }
        };
        if !filter.states.is_empty() {
            let mut stored: Vec<&str> = filter
                .states
                .iter()
                .flat_map(|s| stored_states_for(*s))
                .map(|s| s.as_str())
                .collect();
            stored.sort_unstable();
            stored.dedup();
            query = query.filter(client_secrets::Column::State.is_in(stored));
        }
        if let Some(before) = filter.expire_before {
            query = query.filter(client_secrets::Column::ExpireTime.lt(before));
        }
        let mut page = page_of(
            &self.conn(),
            query,
            client_secrets::Column::Id,
            Order::Desc,
            page,
            ClientSecret::try_from,
        )
        .await?;
        for secret in &mut page.items {
            secret.state = secret.state_at(now);
        }
        if !filter.states.is_empty() {
            page.items.retain(|s| filter.states.contains(&s.state));
        }
        Ok(page)
    }

    /// Stores the ends that have passed by `now` (at most `limit` of them): a
    /// PENDING secret past its wait or lifetime, an ACTIVE one past its lifetime,
    /// become EXPIRED; a RETIRING one past its grace SUPERSEDED (EXPIRED when its
    /// lifetime ended). Each is a compare-and-set on its stored state, in a
    /// transaction with its audit event (`secret.expired`, `secret.grace_ended`,
    /// caller `credd`) and its change announcement: with several replicas
    /// sweeping at once, each end is stored — and its event written — once.
    #[tracing::instrument(name = "store.sweep_secret_ends", skip_all)]
    pub async fn sweep_secret_ends(
        &self,
        now: DateTime<Utc>,
        limit: u64,
        actor: &crate::domain::caller::Actor,
    ) -> Result<Vec<Ended>, Error> {
        use sea_orm::Condition;
        use sea_orm::QuerySelect as _;
        let due = client_secrets::Entity::find()
            .filter(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(
                                client_secrets::Column::State
                                    .eq(ClientSecretState::Pending.as_str()),
                            )
                            .add(
                                Condition::any()
                                    .add(client_secrets::Column::PendingExpireTime.lte(now))
                                    .add(client_secrets::Column::LifetimeEnd.lte(now)),
                            ),
                    )
                    .add(
                        Condition::all()
                            .add(
                                client_secrets::Column::State
                                    .eq(ClientSecretState::Active.as_str()),
                            )
                            .add(client_secrets::Column::LifetimeEnd.lte(now)),
                    )
                    .add(
                        Condition::all()
                            .add(
                                client_secrets::Column::State
                                    .eq(ClientSecretState::Retiring.as_str()),
                            )
                            .add(client_secrets::Column::ExpireTime.lte(now)),
                    ),
            )
            .limit(limit)
            .all(&self.conn())
            .await?;
        let mut ended = Vec::new();
        for row in due {
            let secret: ClientSecret = row.try_into()?;
            let to = match secret.state_at(now) {
                state @ (ClientSecretState::Expired | ClientSecretState::Superseded) => state,
                _ => continue,
            };
            let txn = self.begin().await?;
            let end = secret.expire_time.map_or(now, |end| end.min(now));
            let mut update = client_secrets::Entity::update_many()
                .col_expr(client_secrets::Column::State, Expr::value(to.as_str()))
                .filter(client_secrets::Column::OrgId.eq(secret.org_id.as_str()))
                .filter(client_secrets::Column::Id.eq(secret.id.as_str()))
                .filter(client_secrets::Column::State.eq(secret.state.as_str()));
            if secret.expire_time.is_none_or(|e| e > now) {
                update = update.col_expr(client_secrets::Column::ExpireTime, Expr::value(end));
            }
            if update.exec(&txn).await?.rows_affected != 1 {
                // Another replica stored it first (or a write changed it).
                txn.rollback().await?;
                continue;
            }
            let action = if to == ClientSecretState::Superseded {
                "secret.grace_ended"
            } else {
                "secret.expired"
            };
            let event = NewEvent::new(actor, action, Some(&secret.org_id), &secret.id)
                .details(serde_json::json!({ "from": secret.state.as_str(), "to": to.as_str() }));
            audit::append(&txn, event, now).await?;
            super::changes::announce(&txn, &self.origin, &secret.org_id).await?;
            txn.commit().await?;
            ended.push(Ended {
                org_id: secret.org_id,
                secret_id: secret.id,
                from: secret.state,
                to,
            });
        }
        Ok(ended)
    }

    /// Writes one `secret.expiring` event for each ACTIVE secret whose lifetime
    /// ends between `now` and `until` and that has none yet (at most `limit`),
    /// marking it in the same transaction with a compare-and-swap, so that of
    /// several replicas sweeping at once exactly one writes it. Answers the
    /// secrets announced.
    #[tracing::instrument(name = "store.announce_expiring", skip_all)]
    pub async fn announce_expiring(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u64,
        actor: &crate::domain::caller::Actor,
    ) -> Result<Vec<(OrgId, SecretId)>, Error> {
        use sea_orm::QuerySelect as _;
        let due = client_secrets::Entity::find()
            .filter(client_secrets::Column::State.eq(ClientSecretState::Active.as_str()))
            .filter(client_secrets::Column::ExpiringAnnounced.eq(false))
            .filter(client_secrets::Column::LifetimeEnd.gt(now))
            .filter(client_secrets::Column::LifetimeEnd.lte(until))
            .limit(limit)
            .all(&self.conn())
            .await?;
        let mut announced = Vec::new();
        for row in due {
            let Some(end) = row.lifetime_end else {
                continue;
            };
            let txn = self.begin().await?;
            let marked = client_secrets::Entity::update_many()
                .col_expr(client_secrets::Column::ExpiringAnnounced, Expr::value(true))
                .filter(client_secrets::Column::Id.eq(row.id.as_str()))
                .filter(client_secrets::Column::ExpiringAnnounced.eq(false))
                .exec(&txn)
                .await?;
            if marked.rows_affected != 1 {
                // Another replica wrote it first.
                txn.rollback().await?;
                continue;
            }
            let org_id = OrgId::from_stored(row.org_id);
            let event = NewEvent::new(actor, "secret.expiring", Some(&org_id), &row.id).details(
                serde_json::json!({ "expire_time": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }),
            );
            audit::append(&txn, event, now).await?;
            txn.commit().await?;
            announced.push((org_id, SecretId::from_stored(row.id)));
        }
        Ok(announced)
    }

    /// Per org, how many ACTIVE or RETIRING secrets stop verifying between `now`
    /// and `until` (orgs with none are left out).
    #[tracing::instrument(name = "store.expiring_by_org", skip_all)]
    pub async fn expiring_by_org(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(OrgId, u64)>, Error> {
        use sea_orm::QuerySelect as _;
        let rows: Vec<(String, i64)> = client_secrets::Entity::find()
            .select_only()
            .column(client_secrets::Column::OrgId)
            .column_as(client_secrets::Column::Id.count(), "n")
            .filter(client_secrets::Column::State.is_in(states(&[
                ClientSecretState::Active,
                ClientSecretState::Retiring,
            ])))
            .filter(client_secrets::Column::ExpireTime.gt(now))
            .filter(client_secrets::Column::ExpireTime.lte(until))
            .group_by(client_secrets::Column::OrgId)
            .into_tuple()
            .all(&self.conn())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(org, n)| (OrgId::from_stored(org), u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// The org's PENDING, ACTIVE and RETIRING secrets, newest first (the caller
    /// judges expiry).
    #[tracing::instrument(name = "store.current_secrets", skip_all)]
    pub async fn current_secrets(&self, org_id: &OrgId) -> Result<Vec<ClientSecret>, Error> {
        of_org(org_id)
            .filter(client_secrets::Column::State.is_in(states(&CURRENT)))
            .order_by_desc(client_secrets::Column::Id)
            .all(&self.conn())
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
        let txn = self.begin().await?;
        lock_live_org(&txn, org_id).await?;
        let target: ClientSecret = find_in(&txn, org_id, secret_id).await?.try_into()?;
        if target.state == ClientSecretState::Active {
            return Ok(target);
        }
        let activated = activate_in(&txn, org_id, secret_id, now, grace).await?;
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
        let txn = self.begin().await?;
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
            .exec(&self.conn())
            .await?;
        Ok(())
    }
}

/// How many secrets of `org_id` are PENDING as of `now`.
async fn pending_count(
    conn: &impl sea_orm::ConnectionTrait,
    org_id: &OrgId,
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    Ok(of_org(org_id)
        .filter(client_secrets::Column::State.eq(ClientSecretState::Pending.as_str()))
        .all(conn)
        .await?
        .into_iter()
        .map(ClientSecret::try_from)
        .filter(|s| {
            s.as_ref()
                .is_ok_and(|s| s.state_at(now) == ClientSecretState::Pending)
        })
        .count())
}

/// FAILED_PRECONDITION when `waiting` PENDING secrets reach `max`.
fn check_pending_cap(waiting: usize, max: u32) -> Result<(), Error> {
    if waiting >= max as usize {
        return Err(Error::FailedPrecondition(format!(
            "the org already has {waiting} PENDING secrets, its credential_policy.max_pending_secrets ({max}); activate or revoke one first"
        )));
    }
    Ok(())
}
