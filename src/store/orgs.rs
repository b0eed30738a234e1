//! Queries on orgs. Deleted orgs are invisible to every query but the client-ID
//! uniqueness that keeps their IDs from being reissued.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, sea_query::Expr,
};

use super::{
    Store,
    audit::{self, NewEvent},
    entities::{app_registrations, client_secrets, orgs},
    is_unique_violation,
};
use crate::{
    Error,
    domain::{
        org::{NewOrg, Org, OrgChanges},
        paging::PageRequest,
    },
};

const TAKEN_DOMAIN: Error = Error::AlreadyExists {
    what: "an org with this custom_domain",
    field: "custom_domain",
};

impl From<orgs::Model> for Org {
    fn from(row: orgs::Model) -> Self {
        Org {
            id: row.id,
            client_id: row.client_id,
            name: row.name,
            main_website: row.main_website,
            custom_domain: row.custom_domain,
            create_time: row.create_time,
            update_time: row.update_time,
        }
    }
}

fn live() -> sea_orm::Select<orgs::Entity> {
    orgs::Entity::find().filter(orgs::Column::DeleteTime.is_null())
}

impl Store {
    /// Inserts a new org with the given id and client ID.
    #[tracing::instrument(name = "store.insert_org", skip_all)]
    pub async fn insert_org(
        &self,
        id: String,
        client_id: String,
        org: NewOrg,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<Org, Error> {
        let txn = self.db.begin().await?;
        let row = orgs::ActiveModel {
            id: Set(id),
            client_id: Set(client_id),
            name: Set(org.name),
            main_website: Set(org.main_website),
            custom_domain: Set(org.custom_domain),
            create_time: Set(now),
            update_time: Set(now),
            delete_time: Set(None),
        };
        let row = match row.insert(&txn).await {
            Ok(row) => row,
            // The custom domain is the only caller-chosen unique column.
            Err(err) if is_unique_violation(&err) => return Err(TAKEN_DOMAIN),
            Err(err) => return Err(err.into()),
        };
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        Ok(row.into())
    }

    /// The live org with this id.
    #[tracing::instrument(name = "store.find_org", skip_all)]
    pub async fn find_org(&self, id: &str) -> Result<Option<Org>, Error> {
        Ok(live()
            .filter(orgs::Column::Id.eq(id))
            .one(&self.db)
            .await?
            .map(Org::from))
    }

    /// The live org with this client ID.
    #[tracing::instrument(name = "store.find_org_by_client_id", skip_all)]
    pub async fn find_org_by_client_id(&self, client_id: &str) -> Result<Option<Org>, Error> {
        Ok(live()
            .filter(orgs::Column::ClientId.eq(client_id))
            .one(&self.db)
            .await?
            .map(Org::from))
    }

    /// The live org with this (canonical) custom domain.
    #[tracing::instrument(name = "store.find_org_by_custom_domain", skip_all)]
    pub async fn find_org_by_custom_domain(&self, domain: &str) -> Result<Option<Org>, Error> {
        Ok(live()
            .filter(orgs::Column::CustomDomain.eq(domain))
            .one(&self.db)
            .await?
            .map(Org::from))
    }

    /// One page of live orgs in id order (which is creation order), and whether
    /// more follow.
    #[tracing::instrument(name = "store.list_orgs", skip_all)]
    pub async fn list_orgs(&self, page: &PageRequest) -> Result<(Vec<Org>, bool), Error> {
        let mut query = live().order_by_asc(orgs::Column::Id);
        if let Some(after) = &page.after {
            query = query.filter(orgs::Column::Id.gt(after.as_str()));
        }
        let mut rows = query.limit(page.size + 1).all(&self.db).await?;
        let more = rows.len() as u64 > page.size;
        rows.truncate(page.size as usize);
        Ok((rows.into_iter().map(Org::from).collect(), more))
    }

    /// Applies `changes` to the live org `id`.
    #[tracing::instrument(name = "store.update_org", skip_all)]
    pub async fn update_org(
        &self,
        id: &str,
        changes: OrgChanges,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<Org, Error> {
        let txn = self.db.begin().await?;
        // Lock first: a delete committing between our read and write would otherwise
        // see its released domain written back onto the tombstone.
        super::client_secrets::lock_live_org(&txn, id).await?;
        let Some(row) = live().filter(orgs::Column::Id.eq(id)).one(&txn).await? else {
            return Err(Error::NotFound("org"));
        };
        let mut row: orgs::ActiveModel = row.into();
        if let Some(name) = changes.name {
            row.name = Set(name);
        }
        if let Some(main_website) = changes.main_website {
            row.main_website = Set(main_website);
        }
        if let Some(custom_domain) = changes.custom_domain {
            row.custom_domain = Set(custom_domain);
        }
        row.update_time = Set(now);
        let row = match row.update(&txn).await {
            Ok(row) => row,
            Err(err) if is_unique_violation(&err) => return Err(TAKEN_DOMAIN),
            Err(err) => return Err(err.into()),
        };
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        Ok(row.into())
    }

    /// Deletes the live org `id`: its secrets and app registrations go at once, and its row stays as a
    /// tombstone (so its client ID is never reissued) with the custom domain released.
    #[tracing::instrument(name = "store.delete_org", skip_all)]
    pub async fn delete_org(
        &self,
        id: &str,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<(), Error> {
        let txn = self.db.begin().await?;
        let result = orgs::Entity::update_many()
            .col_expr(orgs::Column::DeleteTime, Expr::value(now))
            .col_expr(orgs::Column::UpdateTime, Expr::value(now))
            .col_expr(
                orgs::Column::CustomDomain,
                Expr::value(Option::<String>::None),
            )
            .filter(orgs::Column::Id.eq(id))
            .filter(orgs::Column::DeleteTime.is_null())
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(Error::NotFound("org"));
        }
        client_secrets::Entity::delete_many()
            .filter(client_secrets::Column::OrgId.eq(id))
            .exec(&txn)
            .await?;
        app_registrations::Entity::delete_many()
            .filter(app_registrations::Column::OrgId.eq(id))
            .exec(&txn)
            .await?;
        super::changes::announce(&txn, id).await?;
        audit::append(&txn, event, now).await?;
        txn.commit().await?;
        Ok(())
    }
}
