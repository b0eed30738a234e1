//! Queries on app registrations. Every query names the org (or says it may reach
//! any org), so that none can forget the tenant.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder,
};

use super::{
    Store,
    audit::{self, NewEvent},
    commit_with_event,
    entities::app_registrations,
    orgs::lock_live_org,
    page_of,
};
use crate::{
    Error,
    domain::{
        app::{AppKind, AppRegistration, Platform, ValidApp},
        ids::{AppRegistrationId, OrgId},
        org::OrgScope,
        paging::{Page, PageRequest},
    },
};

impl TryFrom<app_registrations::Model> for AppRegistration {
    type Error = Error;

    fn try_from(row: app_registrations::Model) -> Result<Self, Error> {
        let platform = Platform::parse(&row.platform).ok_or_else(|| {
            Error::Internal(format!("unknown platform {:?} in row {}", row.platform, row.id).into())
        })?;
        let kind = match platform {
            Platform::Ios => AppKind::Ios {
                bundle_id: row.app_id,
                app_link: row.redirect_uri,
                apple_team_id: Some(row.apple_team_id).filter(|t| !t.is_empty()),
            },
            Platform::Android => AppKind::Android {
                package_name: row.app_id,
                app_link: row.redirect_uri,
                sha256_cert_fingerprints: row
                    .sha256_cert_fingerprints
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
            Platform::Web => AppKind::Web {
                callback_url: row.redirect_uri,
                require_pkce: row.require_pkce,
            },
        };
        Ok(AppRegistration {
            id: AppRegistrationId::from_stored(row.id),
            org_id: OrgId::from_stored(row.org_id),
            name: row.name,
            kind,
            create_time: row.create_time,
            update_time: row.update_time,
        })
    }
}

/// Sets the columns that hold `app`'s name and platform fields.
fn set_fields(row: &mut app_registrations::ActiveModel, app: ValidApp) {
    let kind = &app.kind;
    row.platform = Set(kind.platform().as_str().to_owned());
    row.natural_key = Set(kind.natural_key().to_owned());
    row.redirect_uri = Set(kind.redirect_uri().to_owned());
    row.require_pkce = Set(kind.require_pkce());
    let (app_id, apple_team_id, fingerprints) = match app.kind {
        AppKind::Ios {
            bundle_id,
            apple_team_id,
            ..
        } => (bundle_id, apple_team_id.unwrap_or_default(), String::new()),
        AppKind::Android {
            package_name,
            sha256_cert_fingerprints,
            ..
        } => (
            package_name,
            String::new(),
            sha256_cert_fingerprints.join(","),
        ),
        AppKind::Web { .. } => (String::new(), String::new(), String::new()),
    };
    row.name = Set(app.name);
    row.app_id = Set(app_id);
    row.apple_team_id = Set(apple_team_id);
    row.sha256_cert_fingerprints = Set(fingerprints);
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

/// The apps `scope` may reach.
fn in_scope(scope: OrgScope<'_>) -> sea_orm::Select<app_registrations::Entity> {
    let query = app_registrations::Entity::find();
    match scope {
        OrgScope::Any => query,
        OrgScope::Only(org_id) => {
            query.filter(app_registrations::Column::OrgId.eq(org_id.as_str()))
        }
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
        id: AppRegistrationId,
        org_id: &OrgId,
        app: ValidApp,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<AppRegistration, Error> {
        let platform = app.kind.platform();
        let txn = self.begin().await?;
        lock_live_org(&txn, org_id).await?;
        let mut row = app_registrations::ActiveModel {
            id: Set(id.into_string()),
            org_id: Set(org_id.as_str().to_owned()),
            create_time: Set(now),
            update_time: Set(now),
            ..Default::default()
        };
        set_fields(&mut row, app);
        let written = row.insert(&txn).await;
        commit_with_event(
            txn,
            written,
            duplicate(platform),
            event,
            now,
            Some((&self.origin, org_id)),
        )
        .await?
        .try_into()
    }

    /// The app registration `id`, if `scope` reaches its org.
    #[tracing::instrument(name = "store.find_app", skip_all)]
    pub async fn find_app(
        &self,
        scope: OrgScope<'_>,
        id: &AppRegistrationId,
    ) -> Result<Option<AppRegistration>, Error> {
        in_scope(scope)
            .filter(app_registrations::Column::Id.eq(id.as_str()))
            .one(&self.conn())
            .await?
            .map(AppRegistration::try_from)
            .transpose()
    }

    /// One page of the org's apps, oldest first.
    #[tracing::instrument(name = "store.list_apps", skip_all)]
    pub async fn list_apps(
        &self,
        org_id: &OrgId,
        page: &PageRequest,
    ) -> Result<Page<AppRegistration>, Error> {
        page_of(
            &self.conn(),
            in_scope(OrgScope::Only(org_id)),
            app_registrations::Column::Id,
            Order::Asc,
            page,
            AppRegistration::try_from,
        )
        .await
    }

    /// Every app of the org, oldest first.
    #[tracing::instrument(name = "store.apps_of_org", skip_all)]
    pub async fn apps_of_org(&self, org_id: &OrgId) -> Result<Vec<AppRegistration>, Error> {
        rows(
            in_scope(OrgScope::Only(org_id))
                .order_by_asc(app_registrations::Column::Id)
                .all(&self.conn())
                .await?,
        )
    }

    /// Replaces the validated fields of the org's app `id`.
    #[tracing::instrument(name = "store.update_app", skip_all)]
    pub async fn update_app(
        &self,
        org_id: &OrgId,
        id: &AppRegistrationId,
        valid: ValidApp,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<AppRegistration, Error> {
        let platform = valid.kind.platform();
        let txn = self.begin().await?;
        lock_live_org(&txn, org_id).await?;
        let Some(row) = in_scope(OrgScope::Only(org_id))
            .filter(app_registrations::Column::Id.eq(id.as_str()))
            .one(&txn)
            .await?
        else {
            return Err(Error::NotFound("app registration"));
        };
        if row.platform != platform.as_str() {
            return Err(Error::Internal(
                format!("app {id}: an update may not change the platform").into(),
            ));
        }
        let mut row: app_registrations::ActiveModel = row.into();
        set_fields(&mut row, valid);
        row.update_time = Set(now);
        let written = row.update(&txn).await;
        commit_with_event(
            txn,
            written,
            duplicate(platform),
            event,
            now,
            Some((&self.origin, org_id)),
        )
        .await?
        .try_into()
    }

    /// Deletes the org's app registration `id`.
    #[tracing::instrument(name = "store.delete_app", skip_all)]
    pub async fn delete_app(
        &self,
        org_id: &OrgId,
        id: &AppRegistrationId,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<(), Error> {
        let txn = self.begin().await?;
        let result = app_registrations::Entity::delete_many()
            .filter(app_registrations::Column::OrgId.eq(org_id.as_str()))
            .filter(app_registrations::Column::Id.eq(id.as_str()))
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(Error::NotFound("app registration"));
        }
        audit::append(&txn, event, now).await?;
        // Last before the commit: it takes the feed's one global lock.
        super::changes::announce(&txn, &self.origin, org_id).await?;
        txn.commit().await?;
        Ok(())
    }
}
