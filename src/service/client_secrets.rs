//! Client secret use cases: generate, import, activate (now or later), list and
//! revoke. Verification, the hot path, lives in `service::verify`.

use std::sync::Arc;

use chrono::Duration;
use secrecy::{ExposeSecret, SecretString};

use crate::{
    Error,
    domain::{
        caller::{Actor, OrgAccess, ReachedOrg},
        ids::{OrgId, SecretId},
        paging::{Page, PageRequest},
        policy::{CredentialPolicy, Expiration},
        secret::{self, ClientSecret, ClientSecretState, Presented, StoredHash},
    },
    service::{Clock, directory::Directory, hasher::Hasher, verify_cache::VerifyCache},
    store::{
        Store,
        audit::NewEvent,
        client_secrets::{ActivateAtOnce, Candidate, NewSecret, SecretFilter},
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
    /// Write-path argon2 jobs per org, bounded.
    write_hashing: Arc<super::hasher::OrgHashSlots>,
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
            write_hashing: Arc::default(),
        }
    }

    /// The org's policy, or NOT_FOUND.
    async fn policy(&self, org_id: &OrgId) -> Result<CredentialPolicy, Error> {
        Ok(self.store.live_org(org_id).await?.credential_policy)
    }

    /// Stores `new` (the policy's lifetime and wait applied) and, with
    /// `activate`, activates it at once.
    async fn issue(
        &self,
        mut new: NewSecret,
        policy: &CredentialPolicy,
        expiration: Option<Expiration>,
        event: NewEvent,
        activate: Option<(Duration, NewEvent)>,
    ) -> Result<ClientSecret, Error> {
        let now = self.clock.now();
        new.lifetime_end = policy.lifetime_end(now, expiration)?;
        new.pending_expire_time = policy.pending_end(now);
        if let Some((grace, _)) = &activate {
            policy.check_grace("grace_period", *grace)?;
        }
        let org_id = new.org_id.clone();
        let forget = activate
            .is_some()
            .then(|| self.cache.forget_when_done(&org_id));
        let activating = activate.is_some();
        let secret = self
            .store
            .insert_secret(
                new,
                now,
                event,
                policy.max_pending_secrets,
                activate.map(|(grace, event)| ActivateAtOnce { grace, event }),
            )
            .await?;
        if activating {
            self.directory
                .reload_after_write(&org_id, Some(&self.cache))
                .await;
        }
        drop(forget);
        Ok(secret)
    }

    /// Generates a new PENDING secret for the org; the plaintext is in the answer
    /// only, and only its SHA-256 digest is stored (256 random bits need no slow
    /// hash). Its lifetime is `expiration`, or the policy's default, at most the
    /// policy's maximum; at most `max_pending_secrets` may wait at once.
    pub async fn generate(
        &self,
        actor: &Actor,
        org_id: &ReachedOrg,
        description: &str,
        expiration: Option<Expiration>,
    ) -> Result<Generated, Error> {
        let org_id = org_id.id();
        super::record_org(org_id);
        let description = secret::parse_description("description", description)?;
        let policy = self.policy(org_id).await?;
        let (new, plaintext) = generated(org_id, description);
        let event = NewEvent::new(actor, "secret.generate", Some(org_id), &new.id);
        let secret = self.issue(new, &policy, expiration, event, None).await?;
        tracing::info!(%org_id, secret_id = %secret.id, "client secret generated");
        Ok(Generated { secret, plaintext })
    }

    /// Generates a new secret and activates it in one transaction; the previous
    /// ACTIVE one retires for `grace` (zero: superseded at once). The one-button
    /// rotation: a failure leaves the org exactly as it was.
    pub async fn rotate(
        &self,
        actor: &Actor,
        org_id: &ReachedOrg,
        description: &str,
        expiration: Option<Expiration>,
        grace: Duration,
    ) -> Result<Generated, Error> {
        let org_id = org_id.id();
        super::record_org(org_id);
        let description = secret::parse_description("description", description)?;
        let policy = self.policy(org_id).await?;
        let (new, plaintext) = generated(org_id, description);
        let generate = NewEvent::new(actor, "secret.generate", Some(org_id), &new.id)
            .details(serde_json::json!({ "rotation": true }));
        let activate = NewEvent::new(actor, "secret.activate", Some(org_id), &new.id)
            .details(serde_json::json!({ "grace_seconds": grace.num_seconds(), "rotation": true }));
        let secret = self
            .issue(new, &policy, expiration, generate, Some((grace, activate)))
            .await?;
        tracing::info!(%org_id, secret_id = %secret.id, grace_seconds = grace.num_seconds(), "client secret rotated");
        Ok(Generated { secret, plaintext })
    }

    /// Imports an admin-chosen secret as PENDING, or activates it at once with
    /// `activate` (the previous ACTIVE one retiring for its grace). Refused when
    /// the org's policy does not allow imports.
    pub async fn import(
        &self,
        actor: &Actor,
        org_id: &ReachedOrg,
        plaintext: SecretString,
        description: &str,
        expiration: Option<Expiration>,
        activate: Option<Duration>,
    ) -> Result<ClientSecret, Error> {
        let org_id = org_id.id();
        super::record_org(org_id);
        secret::validate_import("plaintext", &plaintext)?;
        let description = secret::parse_description("description", description)?;
        let policy = self.policy(org_id).await?;
        if !policy.allow_import {
            return Err(Error::FailedPrecondition(
                "the org's credential_policy.allow_import is false: generate a secret instead"
                    .into(),
            ));
        }
        // Checked before the hash, so that a refusal costs no argon2.
        policy.lifetime_end(self.clock.now(), expiration)?;
        if let Some(grace) = activate {
            policy.check_grace("grace_period", grace)?;
        } else if let Some(max) = policy.max_pending_secrets {
            self.store
                .check_pending_cap(org_id, max, self.clock.now())
                .await?;
        }
        let hint = secret::hint(plaintext.expose_secret());
        let _slot = self.write_hashing.take(org_id)?;
        let phc = self.hasher.hash(plaintext).await?;
        let new = NewSecret {
            id: SecretId::generate(),
            org_id: org_id.clone(),
            description,
            hint,
            imported: true,
            phc,
            lifetime_end: None,
            pending_expire_time: None,
        };
        let event = NewEvent::new(actor, "secret.import", Some(org_id), &new.id);
        let activate = activate.map(|grace| {
            let event = NewEvent::new(actor, "secret.activate", Some(org_id), &new.id)
                .details(serde_json::json!({ "grace_seconds": grace.num_seconds() }));
            (grace, event)
        });
        let secret = self
            .issue(new, &policy, expiration, event, activate)
            .await?;
        tracing::info!(%org_id, secret_id = %secret.id, state = secret.state.as_str(), "client secret imported");
        Ok(secret)
    }

    /// Activates a PENDING secret; the previous ACTIVE one retires for `grace`.
    pub async fn activate(
        &self,
        actor: &Actor,
        org_id: &ReachedOrg,
        target: ActivationTarget,
        grace: Duration,
    ) -> Result<ClientSecret, Error> {
        let org_id = org_id.id();
        super::record_org(org_id);
        self.policy(org_id)
            .await?
            .check_grace("grace_period", grace)?;
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
        // At most the two candidates a verification would try: the ACTIVE one and
        // the newest PENDING one (imports may share a hint; an older one is
        // activated by its secret_id). Ids are UUIDv7: newest sorts last.
        let mut candidates: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| states.contains(&c.secret.state))
            .collect();
        candidates.sort_by(|a, b| {
            let active = |c: &Candidate| c.secret.state == ClientSecretState::Active;
            active(b)
                .cmp(&active(a))
                .then_with(|| b.secret.id.cmp(&a.secret.id))
        });
        let newest_pending = candidates
            .iter()
            .position(|c| c.secret.state == ClientSecretState::Pending);
        let candidates = candidates.into_iter().enumerate().filter(|(i, c)| {
            c.secret.state == ClientSecretState::Active || Some(*i) == newest_pending
        });
        let _slot = self.write_hashing.take(org_id)?;
        for (_, candidate) in candidates {
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

    /// A page of the secrets of `org` (`None`: every org `access` reaches),
    /// newest first, with their state as of now, matching `filter`.
    pub async fn list(
        &self,
        org: Option<&ReachedOrg>,
        access: &OrgAccess,
        filter: SecretFilter,
        page: PageRequest,
    ) -> Result<Page<ClientSecret>, Error> {
        let org = org.map(ReachedOrg::id);
        if let Some(org_id) = org {
            super::record_org(org_id);
        }
        let now = self.clock.now();
        let page = self
            .store
            .list_secrets(org, access.orgs(), &filter, now, &page)
            .await?;
        if let Some(org_id) = org
            && page.items.is_empty()
            && self.store.find_org(org_id).await?.is_none()
        {
            return Err(Error::NotFound("org"));
        }
        Ok(page)
    }

    /// Revokes a secret; revoking the ACTIVE one leaves the org with none.
    pub async fn revoke(
        &self,
        actor: &Actor,
        org_id: &ReachedOrg,
        secret_id: &SecretId,
    ) -> Result<ClientSecret, Error> {
        let org_id = org_id.id();
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

/// A fresh generated secret of `org_id` as stored (its digest), and its plaintext.
fn generated(org_id: &OrgId, description: String) -> (NewSecret, SecretString) {
    let (id, plaintext) = secret::generate();
    let new = NewSecret {
        hint: secret::hint(plaintext.expose_secret()),
        phc: StoredHash::digest_of(plaintext.expose_secret()).to_phc(),
        id,
        org_id: org_id.clone(),
        description,
        imported: false,
        lifetime_end: None,
        pending_expire_time: None,
    };
    (new, plaintext)
}
