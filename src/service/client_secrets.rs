//! Client secret use cases: generate, import, activate (now or later), list and
//! revoke. Verification, the hot path, lives in `service::verify`.

use std::sync::Arc;

use chrono::Duration;
use secrecy::{ExposeSecret, SecretString};

use crate::{
    Error,
    domain::{
        caller::Actor,
        ids::{OrgId, SecretId},
        paging::{Page, PageRequest},
        secret::{self, ClientSecret, ClientSecretState, Presented, StoredHash},
    },
    service::{Clock, directory::Directory, hasher::Hasher, verify_cache::VerifyCache},
    store::{
        Store,
        audit::NewEvent,
        client_secrets::{Candidate, NewSecret},
    },
};

/// Which pending secret to activate.
#[derive(Debug)]
pub enum ActivationTarget {
    /// "Activate now": by id.
    SecretId(SecretId),
    /// "Activate later": the admin presents the generated (or imported) secret.
    Plaintext(SecretString),
}

/// A freshly generated secret: its metadata and the plaintext, shown once.
#[derive(Debug)]
pub struct Generated {
    /// The PENDING secret's metadata.
    pub secret: ClientSecret,
    /// The secret itself (redacted in Debug output).
    pub plaintext: SecretString,
}

/// Client secret use cases.
#[derive(Debug, Clone)]
pub struct SecretService {
    store: Store,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    cache: Arc<VerifyCache>,
    directory: Arc<Directory>,
}

impl SecretService {
    /// The service over `store`, hashing imports with `hasher`; writes that change
    /// what verifies forget the org's entries in `cache` and read it again into
    /// `directory`.
    pub fn new(
        store: Store,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        cache: Arc<VerifyCache>,
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            store,
            hasher,
            clock,
            cache,
            directory,
        }
    }

    /// Generates a new PENDING secret for the org; the plaintext is in the answer
    /// only, and only its SHA-256 digest is stored (256 random bits need no slow
    /// hash).
    pub async fn generate(
        &self,
        actor: &Actor,
        org_id: &OrgId,
        description: &str,
    ) -> Result<Generated, Error> {
        super::record_org(org_id);
        let description = secret::parse_description("description", description)?;
        let (id, plaintext) = secret::generate();
        let phc = StoredHash::digest_of(plaintext.expose_secret()).to_phc();
        let new = NewSecret {
            hint: secret::hint(plaintext.expose_secret()),
            id,
            org_id: org_id.clone(),
            description,
            imported: false,
            phc,
        };
        let event = NewEvent::new(actor, "secret.generate", Some(org_id), &new.id);
        let secret = self
            .store
            .insert_secret(new, self.clock.now(), event)
            .await?;
        tracing::info!(%org_id, secret_id = %secret.id, "client secret generated");
        Ok(Generated { secret, plaintext })
    }

    /// Imports an admin-chosen secret as PENDING.
    pub async fn import(
        &self,
        actor: &Actor,
        org_id: &OrgId,
        plaintext: SecretString,
        description: &str,
    ) -> Result<ClientSecret, Error> {
        super::record_org(org_id);
        secret::validate_import("plaintext", &plaintext)?;
        let description = secret::parse_description("description", description)?;
        let hint = secret::hint(plaintext.expose_secret());
        let phc = self.hasher.hash(plaintext).await?;
        let new = NewSecret {
            id: SecretId::generate(),
            org_id: org_id.clone(),
            description,
            hint,
            imported: true,
            phc,
        };
        let event = NewEvent::new(actor, "secret.import", Some(org_id), &new.id);
        let secret = self
            .store
            .insert_secret(new, self.clock.now(), event)
            .await?;
        tracing::info!(%org_id, secret_id = %secret.id, "client secret imported");
        Ok(secret)
    }

    /// Activates a PENDING secret; the previous ACTIVE one retires for `grace`.
    pub async fn activate(
        &self,
        actor: &Actor,
        org_id: &OrgId,
        target: ActivationTarget,
        grace: Duration,
    ) -> Result<ClientSecret, Error> {
        super::record_org(org_id);
        let secret_id = match target {
            ActivationTarget::SecretId(secret_id) => secret_id,
            ActivationTarget::Plaintext(plaintext) => self.match_pending(org_id, plaintext).await?,
        };
        let now = self.clock.now();
        let forget = self.cache.forget_when_done(org_id);
        let secret = self
            .store
            .activate_secret(
                org_id,
                &secret_id,
                now,
                grace,
                NewEvent::new(actor, "secret.activate", Some(org_id), &secret_id)
                    .details(serde_json::json!({ "grace_seconds": grace.num_seconds() })),
            )
            .await?;
        self.directory
            .reload_after_write(org_id, Some(&self.cache))
            .await;
        drop(forget);
        tracing::info!(%org_id, secret_id = %secret.id, grace_seconds = grace.num_seconds(), "client secret activated");
        Ok(secret)
    }

    /// The id of the org's PENDING (or already ACTIVE) secret that `plaintext` is:
    /// a digest compare for a generated secret, argon2 for an imported one.
    async fn match_pending(
        &self,
        org_id: &OrgId,
        plaintext: SecretString,
    ) -> Result<SecretId, Error> {
        let no_match = || Error::invalid("plaintext", "matches no pending secret of this org");
        let states = [ClientSecretState::Pending, ClientSecretState::Active];
        let candidates: Vec<Candidate> = match secret::classify(plaintext.expose_secret()) {
            Presented::Generated { secret_id } => self
                .store
                .find_secret(org_id, &secret_id)
                .await?
                .into_iter()
                .collect(),
            Presented::ImportShaped { hint } => {
                self.store
                    .find_imported_by_hint(org_id, &hint, &states)
                    .await?
            }
            Presented::Malformed(_) => return Err(no_match()),
        };
        for candidate in candidates
            .into_iter()
            .filter(|c| states.contains(&c.secret.state))
        {
            let matches = match StoredHash::parse(&candidate.phc) {
                Some(hash @ StoredHash::Digest(_)) => {
                    hash.digest_matches(plaintext.expose_secret())
                }
                Some(StoredHash::Argon2(phc)) => {
                    self.hasher.verify(plaintext.clone(), Some(phc)).await?
                }
                None => false,
            };
            if matches {
                return Ok(candidate.secret.id);
            }
        }
        Err(no_match())
    }

    /// A page of the org's secrets, newest first, with their state as of now.
    pub async fn list(
        &self,
        org_id: &OrgId,
        page: PageRequest,
    ) -> Result<Page<ClientSecret>, Error> {
        super::record_org(org_id);
        let mut page = self.store.list_secrets(org_id, &page).await?;
        if page.items.is_empty() && self.store.find_org(org_id).await?.is_none() {
            return Err(Error::NotFound("org"));
        }
        let now = self.clock.now();
        for secret in &mut page.items {
            secret.state = secret.state_at(now);
        }
        Ok(page)
    }

    /// Revokes a secret; revoking the ACTIVE one leaves the org with none.
    pub async fn revoke(
        &self,
        actor: &Actor,
        org_id: &OrgId,
        secret_id: &SecretId,
    ) -> Result<ClientSecret, Error> {
        super::record_org(org_id);
        let forget = self.cache.forget_when_done(org_id);
        let secret = self
            .store
            .revoke_secret(
                org_id,
                secret_id,
                self.clock.now(),
                NewEvent::new(actor, "secret.revoke", Some(org_id), secret_id),
            )
            .await?;
        self.directory
            .reload_after_write(org_id, Some(&self.cache))
            .await;
        drop(forget);
        tracing::info!(%org_id, %secret_id, "client secret revoked");
        Ok(secret)
    }
}
