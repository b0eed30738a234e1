//! Queries on app registrations.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

use super::{
    Store,
    audit::{self, NewEvent},
    client_secrets::lock_live_org,
    entities::{app_registrations, orgs},
    is_unique_violation,
};
use crate::{
    Error,
    domain::{
        app::{AppFields, AppRegistration, Platform, ValidApp},
        paging::PageRequest,
    },
};

impl TryFrom<app_registrations::Model> for AppRegistration {
    type Error = Error;

    fn try_from(row: app_registrations::Model) -> Result<Self, Error> {
        let platform = Platform::parse(&row.platform).ok_or_else(|| {
            Error::Internal(format!("unknown platform {:?} in row {}", row.platform, row.id).into())
        })?;
        Ok(AppRegistration {
            id: row.id,
            org_id: row.org_id,
            name: row.name,
            platform,
            fields: AppFields {
                app_id: row.app_id,
                redirect_uri: row.redirect_uri,
                apple_team_id: row.apple_team_id,
                sha256_cert_fingerprints: row
                    .sha256_cert_fingerprints
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
            require_pkce: row.require_pkce,
            create_time: row.create_time,
            update_time: row.update_time,
        })
    }
}

fn duplicate(platform: Platform) -> Error {
    match platform {
        Platform::Ios => Error::AlreadyExists {
            what: "an iOS app with this bundle_id in this org",
            field: "bundle_id",
        },
        Platform::Android => Error::AlreadyExists {
            what: "an Android app with this package_name in this org",
            field: "package_name",
        },
        Platform::Web => Error::AlreadyExists {
            what: "a web app with this callback_url in this org",
            field: "callback_url",
        },
    }
}

fn rows(models: Vec<app_registrations::Model>) -> Result<Vec<AppRegistration>, Error> {
    models.into_iter().map(AppRegistration::try_from).collect()
}

impl Store {
    /// Registers an app for the live org `org_id`.
    #[tracing::instrument(name = "store.insert_app", skip_all)]
    pub async fn insert_app(
        &self,
        id: String,
        org_id: &str,
        platform: Platform,
        app: ValidApp,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<AppRegistration, Error> {
        let txn = self.db.begin().await?;
        lock_live_org(&txn, org_id).await?;
        let row = app_registrations::ActiveModel {
            id: Set(id),
            org_id: Set(org_id.to_owned()),
            name: Set(app.name),
            platform: Set(platform.as_str().to_owned()),
            natural_key: Set(app.fields.natural_key(platform).to_owned()),
            app_id: Set(app.fields.app_id),
            redirect_uri: Set(app.fields.redirect_uri),
            apple_team_id: Set(app.fields.apple_team_id),
            sha256_cert_fingerprints: Set(app.fields.sha256_cert_fingerprints.join(",")),
            require_pkce: Set(app.require_pkce),
            create_time: Set(now),
            update_time: Set(now),
        };
        let row = match row.insert(&txn).await {
            Ok(row) => row,
            Err(err) if is_unique_violation(&err) => return Err(duplicate(platform)),
            Err(err) => return Err(err.into()),
        };
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        row.try_into()
    }

    /// The app registration `id`.
    #[tracing::instrument(name = "store.find_app", skip_all)]
    pub async fn find_app(&self, id: &str) -> Result<Option<AppRegistration>, Error> {
        app_registrations::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(AppRegistration::try_from)
            .transpose()
    }

    /// One page of the org's apps, oldest first, and whether more follow.
    #[tracing::instrument(name = "store.list_apps", skip_all)]
    pub async fn list_apps(
        &self,
        org_id: &str,
        page: &PageRequest,
    ) -> Result<(Vec<AppRegistration>, bool), Error> {
        let mut query = app_registrations::Entity::find()
            .filter(app_registrations::Column::OrgId.eq(org_id))
            .order_by_asc(app_registrations::Column::Id);
        if let Some(after) = &page.after {
            query = query.filter(app_registrations::Column::Id.gt(after.as_str()));
        }
        let mut models = query.limit(page.size + 1).all(&self.db).await?;
        let more = models.len() as u64 > page.size;
        models.truncate(page.size as usize);
        Ok((rows(models)?, more))
    }

    /// Every app of the org, oldest first.
    #[tracing::instrument(name = "store.apps_of_org", skip_all)]
    pub async fn apps_of_org(&self, org_id: &str) -> Result<Vec<AppRegistration>, Error> {
        rows(
            app_registrations::Entity::find()
                .filter(app_registrations::Column::OrgId.eq(org_id))
                .order_by_asc(app_registrations::Column::Id)
                .all(&self.db)
                .await?,
        )
    }

    /// Every app of the live org with `client_id`.
    #[tracing::instrument(name = "store.apps_of_client", skip_all)]
    pub async fn apps_of_client(&self, client_id: &str) -> Result<Vec<AppRegistration>, Error> {
        rows(
            app_registrations::Entity::find()
                .inner_join(orgs::Entity)
                .filter(orgs::Column::ClientId.eq(client_id))
                .filter(orgs::Column::DeleteTime.is_null())
                .order_by_asc(app_registrations::Column::Id)
                .all(&self.db)
                .await?,
        )
    }

    /// Replaces the validated fields of app `app.id`.
    #[tracing::instrument(name = "store.update_app", skip_all)]
    pub async fn update_app(
        &self,
        app: &AppRegistration,
        valid: ValidApp,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<AppRegistration, Error> {
        let txn = self.db.begin().await?;
        lock_live_org(&txn, &app.org_id).await?;
        let Some(row) = app_registrations::Entity::find_by_id(app.id.clone())
            .one(&txn)
            .await?
        else {
            return Err(Error::NotFound("app registration"));
        };
        let mut row: app_registrations::ActiveModel = row.into();
        row.name = Set(valid.name);
        row.natural_key = Set(valid.fields.natural_key(app.platform).to_owned());
        row.app_id = Set(valid.fields.app_id);
        row.redirect_uri = Set(valid.fields.redirect_uri);
        row.apple_team_id = Set(valid.fields.apple_team_id);
        row.sha256_cert_fingerprints = Set(valid.fields.sha256_cert_fingerprints.join(","));
        row.require_pkce = Set(valid.require_pkce);
        row.update_time = Set(now);
        let row = match row.update(&txn).await {
            Ok(row) => row,
            Err(err) if is_unique_violation(&err) => return Err(duplicate(app.platform)),
            Err(err) => return Err(err.into()),
        };
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        row.try_into()
    }

    /// Deletes the app registration `id`.
    #[tracing::instrument(name = "store.delete_app", skip_all)]
    pub async fn delete_app(
        &self,
        id: &str,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<(), Error> {
        let txn = self.db.begin().await?;
        let result = app_registrations::Entity::delete_by_id(id.to_owned())
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(Error::NotFound("app registration"));
        }
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        Ok(())
    }
}
