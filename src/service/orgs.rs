//! Org use cases.

use std::sync::Arc;

use crate::{
    Error,
    domain::{
        caller::{Actor, OrgAccess, ReachedOrg},
        host,
        ids::{ClientId, OrgId},
        org::{NewOrg, Org, OrgChanges},
        paging::{Page, PageRequest},
        secret::SecretOverview,
    },
    service::{Clock, directory::Directory, verify_cache::VerifyCache},
    store::{Store, audit::NewEvent},
};

/// How the caller names the org to get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgLookup {
    /// By `id`.
    Id(OrgId),
    /// By public client ID.
    ClientId(ClientId),
    /// By custom login domain (as sent; checked here).
    CustomDomain(String),
}

/// What an app developer needs to integrate with an org. Never a secret.
#[derive(Debug, Clone)]
pub struct Integration {
    /// The org.
    pub org: Org,
    /// The host users log in on.
    pub login_domain: String,
    /// The state of the org's secrets (metadata only).
    pub secrets: SecretOverview,
}

/// Creates, reads, updates and deletes orgs.
#[derive(Debug, Clone)]
pub struct OrgService {
    store: Store,
    directory: Arc<Directory>,
    cache: Arc<VerifyCache>,
    clock: Arc<dyn Clock>,
    default_login_domain: String,
}

impl OrgService {
    /// The service over `store`, answering lookups from `directory`; orgs without
    /// a custom domain log in on `default_login_domain`. Deleting an org forgets
    /// its entries in `cache`.
    pub fn new(
        store: Store,
        directory: Arc<Directory>,
        cache: Arc<VerifyCache>,
        clock: Arc<dyn Clock>,
        default_login_domain: String,
    ) -> Self {
        Self {
            store,
            directory,
            cache,
            clock,
            default_login_domain,
        }
    }

    /// The host users of `org` log in on.
    pub fn login_domain(&self, org: &Org) -> String {
        org.login_domain(&self.default_login_domain).to_owned()
    }

    /// A custom domain equal to the default login domain would resolve every org
    /// there and this one nowhere: INVALID_ARGUMENT naming `field`.
    fn check_custom_domain(&self, field: &str, domain: Option<&str>) -> Result<(), Error> {
        if domain == Some(self.default_login_domain.as_str()) {
            return Err(Error::invalid(
                field,
                format!(
                    "must not be the default login domain ({}), which every org without a custom domain uses",
                    self.default_login_domain
                ),
            ));
        }
        Ok(())
    }

    /// Creates an org with a fresh id and client ID.
    pub async fn create(&self, actor: &Actor, org: NewOrg) -> Result<Org, Error> {
        self.check_custom_domain("custom_domain", org.custom_domain.as_deref())?;
        let id = OrgId::generate();
        let event = NewEvent::new(actor, "org.create", Some(&id), &id);
        let org = self
            .store
            .insert_org(id, ClientId::generate(), org, self.clock.now(), event)
            .await?;
        self.directory.reload_after_write(&org.id, None).await;
        tracing::info!(org_id = %org.id, client_id = %org.client_id, "org created");
        Ok(org)
    }

    /// The org named by `lookup`, from the in-memory directory (no database
    /// round trip: this is the gateway's login path).
    pub async fn get(&self, lookup: OrgLookup, access: &OrgAccess) -> Result<Org, Error> {
        if let OrgLookup::Id(id) = &lookup {
            super::reach(access, id.clone())?;
        }
        let found = match lookup {
            OrgLookup::Id(id) => self.directory.by_id(&id, access)?,
            OrgLookup::ClientId(client_id) => self.directory.by_client_id(&client_id, access)?,
            OrgLookup::CustomDomain(domain) => {
                let domain = host::parse_dns_host("custom_domain", &domain)?;
                self.directory.by_custom_domain(&domain, access)?
            }
        };
        match found {
            Some(entry) => Ok(entry.org.clone()),
            None => Err(super::missing_for(access, Error::NotFound("org"))),
        }
    }

    /// A page of the orgs `access` reaches, in creation order.
    pub async fn list(&self, page: PageRequest, access: &OrgAccess) -> Result<Page<Org>, Error> {
        self.store.list_orgs(&page, access.orgs()).await
    }

    /// Applies validated changes to the org `id`.
    pub async fn update(
        &self,
        actor: &Actor,
        id: &ReachedOrg,
        changes: OrgChanges,
    ) -> Result<Org, Error> {
        let id = id.id();
        super::record_org(id);
        if let Some(domain) = &changes.custom_domain {
            self.check_custom_domain("org.custom_domain", domain.as_deref())?;
        }
        let event = NewEvent::new(actor, "org.update", Some(id), id)
            .details(serde_json::json!({ "fields": changes.field_names() }));
        let org = self
            .store
            .update_org(id, changes, self.clock.now(), event)
            .await?;
        self.directory.reload_after_write(id, None).await;
        tracing::info!(org_id = %org.id, "org updated");
        Ok(org)
    }

    /// Deletes the org `id`; its client ID is never issued again.
    pub async fn delete(&self, actor: &Actor, id: &ReachedOrg) -> Result<(), Error> {
        let id = id.id();
        super::record_org(id);
        let event = NewEvent::new(actor, "org.delete", Some(id), id);
        let forget = self.cache.forget_when_done(id);
        self.store.delete_org(id, self.clock.now(), event).await?;
        self.directory
            .reload_after_write(id, Some(&self.cache))
            .await;
        drop(forget);
        tracing::info!(org_id = %id, "org deleted");
        Ok(())
    }

    /// The integration view of the org `org_id`.
    pub async fn integration(&self, org_id: &ReachedOrg) -> Result<Integration, Error> {
        let org_id = org_id.id();
        super::record_org(org_id);
        let org = self.store.live_org(org_id).await?;
        Ok(Integration {
            login_domain: self.login_domain(&org),
            secrets: SecretOverview::of(
                self.store.current_secrets(&org.id).await?,
                self.clock.now(),
            ),
            org,
        })
    }
}
