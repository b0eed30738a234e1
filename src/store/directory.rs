//! The reads that fill the in-memory directory (`service::directory`): every live
//! org with its app registrations and the secrets that can verify, with their
//! stored hashes; and the same for one org, when the change feed names it.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use super::{
    Store,
    entities::{app_registrations, client_secrets, orgs},
};
use crate::{
    Error,
    domain::{
        app::AppRegistration,
        ids::{ClientId, OrgId, SecretId},
        org::Org,
        secret::{ClientSecret, ClientSecretState},
    },
};

/// The stored states of secrets that can verify.
const VERIFIABLE: [&str; 2] = [
    ClientSecretState::Active.as_str(),
    ClientSecretState::Retiring.as_str(),
];

/// Rows read at a time when the whole directory is loaded.
const PAGE: u64 = 5000;

/// One row of the whole directory, as [`Store::directory`] hands it over.
pub enum DirectoryRow {
    /// A live org (all of them come first).
    Org(Org),
    /// An app registration.
    App(AppRegistration),
    /// An ACTIVE or RETIRING secret with its stored hash string.
    Secret(ClientSecret, String),
}

/// One live org as the directory holds it.
pub struct OrgRows {
    /// The org.
    pub org: Org,
    /// Its app registrations, oldest first.
    pub apps: Vec<AppRegistration>,
    /// Its ACTIVE and RETIRING secrets with their stored hash strings.
    pub secrets: Vec<(ClientSecret, String)>,
}

impl std::fmt::Debug for OrgRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgRows")
            .field("org", &self.org.id)
            .field("apps", &self.apps.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

fn secret_row(row: client_secrets::Model) -> Result<(ClientSecret, String), Error> {
    let phc = row.phc.clone();
    Ok((ClientSecret::try_from(row)?, phc))
}

impl Store {
    /// Every live org, then every app registration, then every verifiable
    /// secret, handed to `take` one row at a time: read in one transaction so
    /// that the reads agree, a page of rows at a time (keyset on the id), so that
    /// the rows of 100,000 orgs are never all in memory beside what is built of
    /// them. Apps and secrets of orgs not handed over (deleted ones) may follow;
    /// the taker skips them.
    #[tracing::instrument(name = "store.directory", skip_all)]
    pub async fn directory(&self, mut take: impl FnMut(DirectoryRow)) -> Result<(), Error> {
        let txn = self.begin().await?;
        let mut after = String::new();
        loop {
            let page = orgs::Entity::find()
                .filter(orgs::Column::DeleteTime.is_null())
                .filter(orgs::Column::Id.gt(after.as_str()))
                .order_by_asc(orgs::Column::Id)
                .limit(PAGE)
                .all(&txn)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            page.into_iter()
                .for_each(|row| take(DirectoryRow::Org(Org::from(row))));
        }
        let mut after = String::new();
        loop {
            let page = app_registrations::Entity::find()
                .filter(app_registrations::Column::Id.gt(after.as_str()))
                .order_by_asc(app_registrations::Column::Id)
                .limit(PAGE)
                .all(&txn)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for row in page {
                take(DirectoryRow::App(AppRegistration::try_from(row)?));
            }
        }
        let mut after = String::new();
        loop {
            let page = client_secrets::Entity::find()
                .filter(client_secrets::Column::State.is_in(VERIFIABLE))
                .filter(client_secrets::Column::Id.gt(after.as_str()))
                .order_by_asc(client_secrets::Column::Id)
                .limit(PAGE)
                .all(&txn)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for row in page {
                let (secret, phc) = secret_row(row)?;
                take(DirectoryRow::Secret(secret, phc));
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// The live org `org_id` with its apps and verifiable secrets; `None` when it
    /// does not exist or was deleted.
    #[tracing::instrument(name = "store.directory_entry", skip_all)]
    pub async fn directory_entry(&self, org_id: &OrgId) -> Result<Option<OrgRows>, Error> {
        let txn = self.begin().await?;
        let entry = org_rows(&txn, org_id).await?;
        txn.commit().await?;
        Ok(entry)
    }

    /// The id of the live org with `client_id`.
    #[tracing::instrument(name = "store.org_id_of_client", skip_all)]
    pub async fn org_id_of_client(&self, client_id: &ClientId) -> Result<Option<OrgId>, Error> {
        Ok(orgs::Entity::find()
            .filter(orgs::Column::ClientId.eq(client_id.as_str()))
            .filter(orgs::Column::DeleteTime.is_null())
            .one(&self.conn())
            .await?
            .map(|row| OrgId::from_stored(row.id)))
    }

    /// Replaces the stored hash of a secret that just verified with `new_phc`, if
    /// it is still `old_phc` (another process may have done it first), and
    /// announces the change so that every process reads the new hash. Answers
    /// whether this call replaced it.
    #[tracing::instrument(name = "store.replace_secret_hash", skip_all)]
    pub async fn replace_secret_hash(
        &self,
        org_id: &OrgId,
        secret_id: &SecretId,
        old_phc: &str,
        new_phc: &str,
    ) -> Result<bool, Error> {
        let txn = self.begin().await?;
        let replaced = client_secrets::Entity::update_many()
            .col_expr(client_secrets::Column::Phc, Expr::value(new_phc))
            .filter(client_secrets::Column::OrgId.eq(org_id.as_str()))
            .filter(client_secrets::Column::Id.eq(secret_id.as_str()))
            .filter(client_secrets::Column::Phc.eq(old_phc))
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if replaced {
            super::changes::announce(&txn, &self.origin, org_id).await?;
        }
        txn.commit().await?;
        Ok(replaced)
    }
}

async fn org_rows<C: ConnectionTrait>(db: &C, org_id: &OrgId) -> Result<Option<OrgRows>, Error> {
    let Some(org) = orgs::Entity::find()
        .filter(orgs::Column::Id.eq(org_id.as_str()))
        .filter(orgs::Column::DeleteTime.is_null())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let apps = app_registrations::Entity::find()
        .filter(app_registrations::Column::OrgId.eq(org_id.as_str()))
        .order_by_asc(app_registrations::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(AppRegistration::try_from)
        .collect::<Result<_, _>>()?;
    let secrets = client_secrets::Entity::find()
        .filter(client_secrets::Column::OrgId.eq(org_id.as_str()))
        .filter(client_secrets::Column::State.is_in(VERIFIABLE))
        .all(db)
        .await?
        .into_iter()
        .map(secret_row)
        .collect::<Result<_, _>>()?;
    Ok(Some(OrgRows {
        org: Org::from(org),
        apps,
        secrets,
    }))
}
