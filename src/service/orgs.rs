//! Org use cases.

use std::sync::Arc;

use crate::{
    Error,
    domain::{
        caller::Actor,
        host, ids,
        org::{NewOrg, Org, OrgChanges},
        paging::{PageRequest, next_page_token},
    },
    service::{Clock, SecretService, client_secrets::SecretOverview},
    store::{Store, audit::NewEvent},
};

/// How the caller names the org to get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgLookup {
    /// By `id`.
    Id(String),
    /// By public client ID.
    ClientId(String),
    /// By custom login domain.
    CustomDomain(String),
}

/// A page of orgs and the token for the next.
#[derive(Debug, Clone)]
pub struct OrgPage {
    /// The orgs, oldest first.
    pub orgs: Vec<Org>,
    /// Empty on the last page.
    pub next_page_token: String,
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
    secrets: SecretService,
    clock: Arc<dyn Clock>,
    default_login_domain: String,
}

impl OrgService {
    /// The service over `store`; orgs without a custom domain log in on
    /// `default_login_domain`. `secrets` fills in the integration view.
    pub fn new(
        store: Store,
        secrets: SecretService,
        clock: Arc<dyn Clock>,
        default_login_domain: String,
    ) -> Self {
        Self {
            store,
            secrets,
            clock,
            default_login_domain,
        }
    }

    /// The host users of `org` log in on.
    pub fn login_domain(&self, org: &Org) -> String {
        org.login_domain(&self.default_login_domain).to_owned()
    }

    /// Creates an org with a fresh id and client ID.
    pub async fn create(&self, actor: &Actor, org: NewOrg) -> Result<Org, Error> {
        let id = ids::new_id();
        let event = NewEvent::new(actor, "org.create", Some(&id), &id);
        let org = self
            .store
            .insert_org(id, ids::new_client_id(), org, self.clock.now(), event)
            .await?;
        tracing::info!(org_id = %org.id, client_id = %org.client_id, "org created");
        Ok(org)
    }

    /// The org named by `lookup`.
    pub async fn get(&self, lookup: OrgLookup) -> Result<Org, Error> {
        let found = match lookup {
            OrgLookup::Id(id) => {
                if !ids::is_id(&id) {
                    return Err(Error::invalid("id", "must be an org id (a UUID)"));
                }
                self.store.find_org(&id).await?
            }
            OrgLookup::ClientId(client_id) => {
                if !ids::is_client_id(&client_id) {
                    // No org can have it; answering NOT_FOUND like any unknown ID.
                    return Err(Error::NotFound("org"));
                }
                self.store.find_org_by_client_id(&client_id).await?
            }
            OrgLookup::CustomDomain(domain) => {
                let domain = host::parse_dns_host("custom_domain", &domain)?;
                self.store.find_org_by_custom_domain(&domain).await?
            }
        };
        found.ok_or(Error::NotFound("org"))
    }

    /// A page of orgs in creation order.
    pub async fn list(&self, page: PageRequest) -> Result<OrgPage, Error> {
        let (orgs, more) = self.store.list_orgs(&page).await?;
        let next_page_token = match orgs.last() {
            Some(last) if more => next_page_token(&last.id),
            _ => String::new(),
        };
        Ok(OrgPage {
            orgs,
            next_page_token,
        })
    }

    /// Applies validated changes to the org `id`.
    pub async fn update(&self, actor: &Actor, id: &str, changes: OrgChanges) -> Result<Org, Error> {
        require_org_id("org.id", id)?;
        super::record_org(id);
        let event = NewEvent::new(actor, "org.update", Some(id), id)
            .details(serde_json::json!({ "fields": changes.field_names() }));
        let org = self
            .store
            .update_org(id, changes, self.clock.now(), event)
            .await?;
        tracing::info!(org_id = %org.id, "org updated");
        Ok(org)
    }

    /// Deletes the org `id`; its client ID is never issued again.
    pub async fn delete(&self, actor: &Actor, id: &str) -> Result<(), Error> {
        require_org_id("id", id)?;
        super::record_org(id);
        let event = NewEvent::new(actor, "org.delete", Some(id), id);
        self.store.delete_org(id, self.clock.now(), event).await?;
        self.secrets.forget_org(id);
        tracing::info!(org_id = %id, "org deleted");
        Ok(())
    }

    /// The integration view of the org `org_id`.
    pub async fn integration(&self, org_id: &str) -> Result<Integration, Error> {
        require_org_id("org_id", org_id)?;
        super::record_org(org_id);
        let org = self
            .store
            .find_org(org_id)
            .await?
            .ok_or(Error::NotFound("org"))?;
        Ok(Integration {
            login_domain: self.login_domain(&org),
            secrets: self.secrets.overview(&org.id).await?,
            org,
        })
    }
}

/// Refuses what cannot be an org id before it reaches the store.
pub fn require_org_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        Err(Error::invalid(field, "is required"))
    } else if !ids::is_id(id) {
        Err(Error::invalid(field, "must be an org id (a UUID)"))
    } else {
        Ok(())
    }
}
