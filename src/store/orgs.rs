//! Queries on orgs. Deleted orgs are invisible to every query but the client-ID
//! uniqueness that keeps their IDs from being reissued.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, Order, QueryFilter,
    sea_query::Expr,
};

use super::{
    Store,
    audit::{self, NewEvent},
    commit_with_event,
    entities::{app_registrations, client_secrets, orgs},
    page_of,
};
use crate::{
    Error,
    domain::{
        app::AppRegistration,
        ids::{ClientId, OrgId},
        org::{NewOrg, Org, OrgChanges},
        paging::{Page, PageRequest},
        policy::CredentialPolicy,
    },
};

const TAKEN_DOMAIN: Error = Error::AlreadyExists {
    what: "an org with this custom_domain",
    field: "custom_domain",
};

impl From<orgs::Model> for Org {
    fn from(row: orgs::Model) -> Self {
        Org {
            credential_policy: policy_from_stored(&row.credential_policy),
            id: OrgId::from_stored(row.id),
            client_id: ClientId::from_stored(row.client_id),
            name: row.name,
            main_website: row.main_website,
            custom_domain: row.custom_domain,
            create_time: row.create_time,
            update_time: row.update_time,
        }
    }
}

/// The policy stored as `text`: JSON with durations in seconds and `null` for no
/// limit; a missing field (or an empty text: never set) takes its default.
pub(super) fn policy_from_stored(text: &str) -> CredentialPolicy {
    let defaults = CredentialPolicy::default();
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return defaults;
    };
    let duration = |key: &str, default: Option<chrono::Duration>| match map.get(key) {
        None => default,
        Some(serde_json::Value::Null) => None,
        Some(value) => value.as_i64().map(chrono::Duration::seconds).or(default),
    };
    CredentialPolicy {
        max_secret_lifetime: duration("max_secret_lifetime", defaults.max_secret_lifetime),
        default_secret_lifetime: duration(
            "default_secret_lifetime",
            defaults.default_secret_lifetime,
        ),
        pending_ttl: duration("pending_ttl", defaults.pending_ttl),
        max_pending_secrets: match map.get("max_pending_secrets") {
            None => defaults.max_pending_secrets,
            Some(value) => value.as_u64().and_then(|n| u32::try_from(n).ok()),
        },
        allow_import: map
            .get("allow_import")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(defaults.allow_import),
        max_grace_period: duration("max_grace_period", defaults.max_grace_period),
    }
}

/// The text stored for `policy`.
fn policy_to_stored(policy: &CredentialPolicy) -> String {
    let seconds = |d: Option<chrono::Duration>| d.map(|d| d.num_seconds());
    serde_json::json!({
        "max_secret_lifetime": seconds(policy.max_secret_lifetime),
        "default_secret_lifetime": seconds(policy.default_secret_lifetime),
        "pending_ttl": seconds(policy.pending_ttl),
        "max_pending_secrets": policy.max_pending_secrets,
        "allow_import": policy.allow_import,
        "max_grace_period": seconds(policy.max_grace_period),
    })
    .to_string()
}

fn live() -> sea_orm::Select<orgs::Entity> {
    orgs::Entity::find().filter(orgs::Column::DeleteTime.is_null())
}

/// Locks the live org `org_id` for the rest of the transaction (a no-op UPDATE), or
/// NOT_FOUND: writes to one org's things then run one at a time on both backends,
/// and a deleted org's things cannot be written.
pub(super) async fn lock_live_org(txn: &super::pooled::Txn, org_id: &OrgId) -> Result<(), Error> {
    let locked = orgs::Entity::update_many()
        .col_expr(
            orgs::Column::UpdateTime,
            Expr::col(orgs::Column::UpdateTime),
        )
        .filter(orgs::Column::Id.eq(org_id.as_str()))
        .filter(orgs::Column::DeleteTime.is_null())
        .exec(txn)
        .await?;
    if locked.rows_affected == 0 {
        return Err(Error::NotFound("org"));
    }
    Ok(())
}

impl Store {
    /// Inserts a new org with the given id and client ID.
    #[tracing::instrument(name = "store.insert_org", skip_all)]
    pub async fn insert_org(
        &self,
        id: OrgId,
        client_id: ClientId,
        org: NewOrg,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<Org, Error> {
        let txn = self.begin().await?;
        let id_for_feed = id.clone();
        let row = orgs::ActiveModel {
            id: Set(id.into_string()),
            client_id: Set(client_id.into_string()),
            name: Set(org.name),
            main_website: Set(org.main_website),
            custom_domain: Set(org.custom_domain),
            create_time: Set(now),
            update_time: Set(now),
            delete_time: Set(None),
            credential_policy: Set(String::new()),
        };
        // The custom domain is the only caller-chosen unique column.
        let written = row.insert(&txn).await;
        let announced = Some((&*self.origin, &id_for_feed));
        Ok(
            commit_with_event(txn, written, TAKEN_DOMAIN, event, now, announced)
                .await?
                .into(),
        )
    }

    /// The live org with this id, or NOT_FOUND.
    pub async fn live_org(&self, id: &OrgId) -> Result<Org, Error> {
        self.find_org(id).await?.ok_or(Error::NotFound("org"))
    }

    /// The live org with this id.
    #[tracing::instrument(name = "store.find_org", skip_all)]
    pub async fn find_org(&self, id: &OrgId) -> Result<Option<Org>, Error> {
        Ok(live()
            .filter(orgs::Column::Id.eq(id.as_str()))
            .one(&self.conn())
            .await?
            .map(Org::from))
    }

    /// One page of live orgs in id order (which is creation order), of `only`
    /// when given.
    #[tracing::instrument(name = "store.list_orgs", skip_all)]
    pub async fn list_orgs(
        &self,
        page: &PageRequest,
        only: Option<&[OrgId]>,
    ) -> Result<Page<Org>, Error> {
        let mut query = live();
        if let Some(only) = only {
            query = query.filter(orgs::Column::Id.is_in(only.iter().map(OrgId::as_str)));
        }
        page_of(
            &self.conn(),
            query,
            orgs::Column::Id,
            Order::Asc,
            page,
            |row| Ok(Org::from(row)),
        )
        .await
    }

    /// Applies `changes` to the live org `id`.
    #[tracing::instrument(name = "store.update_org", skip_all)]
    pub async fn update_org(
        &self,
        id: &OrgId,
        changes: OrgChanges,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<Org, Error> {
        let txn = self.begin().await?;
        // Lock first: a delete committing between our read and write would otherwise
        // see its released domain written back onto the tombstone.
        lock_live_org(&txn, id).await?;
        let Some(row) = live()
            .filter(orgs::Column::Id.eq(id.as_str()))
            .one(&txn)
            .await?
        else {
            return Err(Error::NotFound("org"));
        };
        if let Some(main_website) = &changes.main_website {
            // Seed 002's rule holds after the fact too: no native app's link may
            // end up on the main website's host.
            let apps: Vec<AppRegistration> = app_registrations::Entity::find()
                .filter(app_registrations::Column::OrgId.eq(id.as_str()))
                .all(&txn)
                .await?
                .into_iter()
                .map(AppRegistration::try_from)
                .collect::<Result<_, _>>()?;
            let clashing = crate::domain::app::links_on_website_host(&apps, main_website);
            if !clashing.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "main_website would be on {}, the host of the App Link / Universal Link of these app registrations: {}; change their app_link first",
                    url::Url::parse(main_website)
                        .ok()
                        .and_then(|u| u.host_str().map(str::to_owned))
                        .unwrap_or_default(),
                    clashing
                        .iter()
                        .map(|app| format!("{} ({})", app.id, app.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let policy = match &changes.credential_policy {
            Some(change) => Some(
                change
                    .apply(policy_from_stored(&row.credential_policy))
                    .map_err(Error::Invalid)?,
            ),
            None => None,
        };
        let mut row: orgs::ActiveModel = row.into();
        if let Some(name) = changes.name {
            row.name = Set(name);
        }
        if let Some(main_website) = changes.main_website {
            row.main_website = Set(main_website);
        }
        if let Some(policy) = policy {
            row.credential_policy = Set(policy_to_stored(&policy));
        }
        if let Some(custom_domain) = changes.custom_domain {
            row.custom_domain = Set(custom_domain);
        }
        row.update_time = Set(now);
        let written = row.update(&txn).await;
        Ok(commit_with_event(
            txn,
            written,
            TAKEN_DOMAIN,
            event,
            now,
            Some((&self.origin, id)),
        )
        .await?
        .into())
    }

    /// Deletes the live org `id`: its secrets and app registrations go at once, and its row stays as a
    /// tombstone (so its client ID is never reissued) with the custom domain released.
    #[tracing::instrument(name = "store.delete_org", skip_all)]
    pub async fn delete_org(
        &self,
        id: &OrgId,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<(), Error> {
        let txn = self.begin().await?;
        let result = orgs::Entity::update_many()
            .col_expr(orgs::Column::DeleteTime, Expr::value(now))
            .col_expr(orgs::Column::UpdateTime, Expr::value(now))
            .col_expr(
                orgs::Column::CustomDomain,
                Expr::value(Option::<String>::None),
            )
            .filter(orgs::Column::Id.eq(id.as_str()))
            .filter(orgs::Column::DeleteTime.is_null())
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(Error::NotFound("org"));
        }
        client_secrets::Entity::delete_many()
            .filter(client_secrets::Column::OrgId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        app_registrations::Entity::delete_many()
            .filter(app_registrations::Column::OrgId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        audit::append(&txn, event, now).await?;
        // Last before the commit: it takes the feed's one global lock.
        super::changes::announce(&txn, &self.origin, id).await?;
        txn.commit().await?;
        Ok(())
    }
}
