//! Client secret use cases: generate, import, activate (now or later), list,
//! revoke, verify.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    Error,
    domain::{
        caller::Actor,
        ids,
        paging::{PageRequest, next_page_token},
        secret::{self, ClientSecret, ClientSecretState, Presented},
    },
    service::{
        Clock,
        hasher::Hasher,
        orgs::require_org_id,
        throttle::Throttle,
        verify_cache::{CachedVerdict, VerifyCache},
    },
    store::{
        Store,
        audit::NewEvent,
        client_secrets::{Candidate, NewSecret},
    },
};

/// How often at most `last_used_time` is written for one secret.
const LAST_USED_EVERY: Duration = Duration::minutes(1);

/// Which pending secret to activate.
#[derive(Debug)]
pub enum ActivationTarget {
    /// "Activate now": by id.
    SecretId(String),
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

/// A page of secrets, newest first.
#[derive(Debug, Clone)]
pub struct SecretPage {
    /// The secrets, with their state as of now.
    pub secrets: Vec<ClientSecret>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// The state of an org's secrets, for the integration view.
#[derive(Debug, Clone, Default)]
pub struct SecretOverview {
    /// The ACTIVE secret.
    pub active: Option<ClientSecret>,
    /// How many wait for activation.
    pub pending_count: usize,
    /// Previous secrets still inside their grace period.
    pub retiring: Vec<ClientSecret>,
}

/// Why a verification answered false, for logs and metrics (never to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The client ID cannot be one credd issued.
    MalformedClientId,
    /// The secret is malformed (see the domain's reasons).
    MalformedSecret(secret::MalformedReason),
    /// No such client, or no such secret of that client.
    Unknown,
    /// The secret exists but does not verify now (pending, superseded, revoked, expired).
    NotVerifiable(ClientSecretState),
    /// The secret did not match its hash.
    Mismatch,
}

impl Refusal {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedClientId => "malformed_client_id",
            Self::MalformedSecret(reason) => reason.as_str(),
            Self::Unknown => "unknown",
            Self::NotVerifiable(ClientSecretState::Pending) => "pending",
            Self::NotVerifiable(ClientSecretState::Revoked) => "revoked",
            Self::NotVerifiable(ClientSecretState::Superseded | ClientSecretState::Retiring) => {
                "superseded_or_expired"
            }
            Self::NotVerifiable(ClientSecretState::Active) => "active",
            Self::Mismatch => "mismatch",
        }
    }
}

/// The answer of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The secret is the org's ACTIVE one, or RETIRING inside its grace.
    Valid {
        /// The org.
        org_id: String,
        /// The secret that matched.
        secret_id: String,
    },
    /// Anything else; the caller only learns `valid = false`.
    Invalid(Refusal),
}

/// What [`SecretService::verify`] learned besides the verdict.
struct Judged {
    verdict: Verdict,
    /// The org concerned, when a candidate secret showed it.
    org_id: Option<String>,
    /// A RETIRING secret's grace end, where a cached success must stop.
    expiry: Option<DateTime<Utc>>,
}

/// Counts of verification outcomes since start.
#[derive(Debug, Default)]
pub struct VerifyCounters {
    valid: AtomicU64,
    refused: Mutex<HashMap<&'static str, u64>>,
}

impl VerifyCounters {
    /// Valid verifications so far.
    pub fn valid(&self) -> u64 {
        self.valid.load(Ordering::Relaxed)
    }

    /// Refused verifications so far, by reason.
    pub fn refused(&self) -> HashMap<&'static str, u64> {
        self.refused.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn count(&self, verdict: &Verdict) {
        let outcome = match verdict {
            Verdict::Valid { .. } => "valid",
            Verdict::Invalid(refusal) => refusal.as_str(),
        };
        crate::metrics::METRICS
            .verify_outcomes
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        match verdict {
            Verdict::Valid { .. } => {
                self.valid.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Invalid(refusal) => {
                if let Ok(mut refused) = self.refused.lock() {
                    *refused.entry(refusal.as_str()).or_default() += 1;
                }
            }
        }
    }
}

/// Client secret use cases.
#[derive(Debug, Clone)]
pub struct SecretService {
    store: Store,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    counters: Arc<VerifyCounters>,
    cache: Arc<VerifyCache>,
    throttle: Arc<Throttle>,
    failed_by_org: Arc<Mutex<HashMap<String, u64>>>,
    last_used_written: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
}

impl SecretService {
    /// The service over `store`, hashing with `hasher`, caching successes in `cache`
    /// and throttling cold work with `throttle`.
    pub fn new(
        store: Store,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        cache: VerifyCache,
        throttle: Throttle,
    ) -> Self {
        Self {
            store,
            hasher,
            clock,
            counters: Arc::default(),
            cache: Arc::new(cache),
            throttle: Arc::new(throttle),
            failed_by_org: Arc::default(),
            last_used_written: Arc::default(),
        }
    }

    /// The argon2 pool (tests count its computations).
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Verification outcome counters.
    pub fn counters(&self) -> &VerifyCounters {
        &self.counters
    }

    /// Generates a new PENDING secret for the org; the plaintext is in the answer only.
    pub async fn generate(
        &self,
        actor: &Actor,
        org_id: &str,
        description: &str,
    ) -> Result<Generated, Error> {
        require_org_id("org_id", org_id)?;
        super::record_org(org_id);
        let description = secret::parse_description("description", description)?;
        let id = ids::new_id();
        let plaintext = secret::generate(&id)?;
        let phc = self.hasher.hash(plaintext.clone()).await?;
        let new = NewSecret {
            hint: secret::hint(plaintext.expose_secret()),
            id,
            org_id: org_id.to_owned(),
            description,
            imported: false,
            phc,
        };
        let event = NewEvent::new(actor, "secret.generate", Some(org_id), &new.id);
        let secret = self
            .store
            .insert_secret(new, self.clock.now(), event)
            .await?;
        tracing::info!(org_id, secret_id = %secret.id, "client secret generated");
        Ok(Generated { secret, plaintext })
    }

    /// Imports an admin-chosen secret as PENDING.
    pub async fn import(
        &self,
        actor: &Actor,
        org_id: &str,
        plaintext: SecretString,
        description: &str,
    ) -> Result<ClientSecret, Error> {
        require_org_id("org_id", org_id)?;
        super::record_org(org_id);
        secret::validate_import("plaintext", &plaintext)?;
        let description = secret::parse_description("description", description)?;
        let hint = secret::hint(plaintext.expose_secret());
        let phc = self.hasher.hash(plaintext).await?;
        let new = NewSecret {
            id: ids::new_id(),
            org_id: org_id.to_owned(),
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
        tracing::info!(org_id, secret_id = %secret.id, "client secret imported");
        Ok(secret)
    }

    /// Activates a PENDING secret; the previous ACTIVE one retires for `grace`.
    pub async fn activate(
        &self,
        actor: &Actor,
        org_id: &str,
        target: ActivationTarget,
        grace: Duration,
    ) -> Result<ClientSecret, Error> {
        require_org_id("org_id", org_id)?;
        super::record_org(org_id);
        let secret_id = match target {
            ActivationTarget::SecretId(secret_id) => {
                if !ids::is_id(&secret_id) {
                    return Err(Error::invalid("secret_id", "must be a secret id (a UUID)"));
                }
                secret_id
            }
            ActivationTarget::Plaintext(plaintext) => self.match_pending(org_id, plaintext).await?,
        };
        let now = self.clock.now();
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
        self.cache.forget_org(org_id);
        tracing::info!(org_id, secret_id = %secret.id, grace_seconds = grace.num_seconds(), "client secret activated");
        Ok(secret)
    }

    /// The id of the org's PENDING (or already ACTIVE) secret that `plaintext` is,
    /// at the cost of at most one hash for a generated secret.
    async fn match_pending(&self, org_id: &str, plaintext: SecretString) -> Result<String, Error> {
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
            if self
                .hasher
                .verify(plaintext.clone(), Some(candidate.phc))
                .await?
            {
                return Ok(candidate.secret.id);
            }
        }
        Err(no_match())
    }

    /// A page of the org's secrets, newest first, with their state as of now.
    pub async fn list(&self, org_id: &str, page: PageRequest) -> Result<SecretPage, Error> {
        require_org_id("org_id", org_id)?;
        super::record_org(org_id);
        let (mut secrets, more) = self.store.list_secrets(org_id, &page).await?;
        if secrets.is_empty()
            && page.after.is_none()
            && self.store.find_org(org_id).await?.is_none()
        {
            return Err(Error::NotFound("org"));
        }
        let now = self.clock.now();
        for secret in &mut secrets {
            secret.state = secret.state_at(now);
        }
        let next_page_token = match secrets.last() {
            Some(last) if more => next_page_token(&last.id),
            _ => String::new(),
        };
        Ok(SecretPage {
            secrets,
            next_page_token,
        })
    }

    /// Revokes a secret; revoking the ACTIVE one leaves the org with none.
    pub async fn revoke(
        &self,
        actor: &Actor,
        org_id: &str,
        secret_id: &str,
    ) -> Result<ClientSecret, Error> {
        require_org_id("org_id", org_id)?;
        super::record_org(org_id);
        if !ids::is_id(secret_id) {
            return Err(Error::invalid("secret_id", "must be a secret id (a UUID)"));
        }
        let secret = self
            .store
            .revoke_secret(
                org_id,
                secret_id,
                self.clock.now(),
                NewEvent::new(actor, "secret.revoke", Some(org_id), secret_id),
            )
            .await?;
        self.cache.forget_org(org_id);
        tracing::info!(org_id, secret_id, "client secret revoked");
        Ok(secret)
    }

    /// The org's active, pending and retiring secrets as of now.
    pub async fn overview(&self, org_id: &str) -> Result<SecretOverview, Error> {
        let now = self.clock.now();
        let summary = self.store.secret_summary(org_id).await?;
        let mut overview = SecretOverview::default();
        for mut secret in summary.current {
            secret.state = secret.state_at(now);
            match secret.state {
                ClientSecretState::Active => overview.active = Some(secret),
                ClientSecretState::Pending => overview.pending_count += 1,
                ClientSecretState::Retiring => overview.retiring.push(secret),
                ClientSecretState::Superseded | ClientSecretState::Revoked => {}
            }
        }
        Ok(overview)
    }

    /// Checks a client ID and secret. Every refusal is the same `Invalid` to the
    /// caller; the reason is logged and counted. A store outage is an error, never
    /// a verdict. A cached success costs no argon2 work and no database round trip;
    /// uncached work is throttled per client (`Overloaded`, never a wrong `false`).
    pub async fn verify(
        &self,
        client_id: &str,
        client_secret: SecretString,
    ) -> Result<Verdict, Error> {
        let now = self.clock.now();
        let key = self
            .cache
            .enabled()
            .then(|| self.cache.key(client_id, client_secret.expose_secret()));
        // Held until the verdict is cached: identical concurrent verifications wait.
        let mut _leader = None;
        if let Some(key) = &key {
            loop {
                if let Some(hit) = self.cache.get(key, now) {
                    self.cache.count_lookup(true);
                    let verdict = Verdict::Valid {
                        org_id: hit.org_id.to_string(),
                        secret_id: hit.secret_id.to_string(),
                    };
                    self.counters.count(&verdict);
                    super::record_org(&hit.org_id);
                    self.note_used(&hit.secret_id);
                    return Ok(verdict);
                }
                if let Some(leader) = self.cache.lead_or_wait(*key).await {
                    self.cache.count_lookup(false);
                    _leader = Some(leader);
                    break;
                }
            }
        }
        let generation = self.cache.generation();
        let judged = self.judge(client_id, client_secret).await?;
        self.counters.count(&judged.verdict);
        match &judged.verdict {
            Verdict::Valid { org_id, secret_id } => {
                super::record_org(org_id);
                tracing::debug!(client_id, org_id, secret_id, "client secret verified");
                self.note_used(secret_id);
                if let Some(key) = key {
                    let cached = CachedVerdict {
                        org_id: org_id.as_str().into(),
                        secret_id: secret_id.as_str().into(),
                    };
                    self.cache
                        .insert(key, cached, now, judged.expiry, generation);
                }
            }
            Verdict::Invalid(refusal) => {
                // A malformed client_id may be a secret sent in the wrong field: keep
                // it out of the logs.
                let shown = if ids::is_client_id(client_id) {
                    client_id
                } else {
                    "(malformed, not logged)"
                };
                tracing::info!(
                    client_id = shown,
                    reason = refusal.as_str(),
                    "client secret refused"
                );
                self.count_failure(client_id, judged.org_id).await;
            }
        }
        Ok(judged.verdict)
    }

    /// Forgets the cached verifications of `org_id` (after a write that changes them).
    pub fn forget_org(&self, org_id: &str) {
        self.cache.forget_org(org_id);
    }

    /// The verdict cache (the change feed and tests reach it here).
    pub fn cache(&self) -> &Arc<VerifyCache> {
        &self.cache
    }

    async fn judge(&self, client_id: &str, client_secret: SecretString) -> Result<Judged, Error> {
        let refused = |refusal| Judged {
            verdict: Verdict::Invalid(refusal),
            org_id: None,
            expiry: None,
        };
        if !ids::is_client_id(client_id) {
            return Ok(refused(Refusal::MalformedClientId));
        }
        let candidates: Vec<Candidate> = match secret::classify(client_secret.expose_secret()) {
            Presented::Malformed(reason) => return Ok(refused(Refusal::MalformedSecret(reason))),
            Presented::Generated { secret_id } => self
                .store
                .verify_candidate(client_id, &secret_id)
                .await?
                .into_iter()
                .collect(),
            Presented::ImportShaped { hint } => {
                self.store
                    .verify_import_candidates(client_id, &hint)
                    .await?
            }
        };
        // Everything past here costs argon2 work: the client's bucket pays for it.
        if !self.throttle.allow(client_id) {
            return Err(Error::Overloaded(
                "too many uncached verifications for this client; retry shortly",
            ));
        }
        let now = self.clock.now();
        let mut judged = refused(Refusal::Unknown);
        let mut hashed = false;
        for candidate in candidates {
            judged.org_id = Some(candidate.secret.org_id.clone());
            if !candidate.secret.verifies_at(now) {
                judged.verdict =
                    Verdict::Invalid(Refusal::NotVerifiable(candidate.secret.state_at(now)));
                continue;
            }
            hashed = true;
            if self
                .hasher
                .verify(client_secret.clone(), Some(candidate.phc))
                .await?
            {
                judged.expiry = (candidate.secret.state == ClientSecretState::Retiring)
                    .then_some(candidate.secret.expire_time)
                    .flatten();
                judged.verdict = Verdict::Valid {
                    org_id: candidate.secret.org_id,
                    secret_id: candidate.secret.id,
                };
                return Ok(judged);
            }
            judged.verdict = Verdict::Invalid(Refusal::Mismatch);
        }
        if !hashed {
            // The same argon2 work as a real check, so that timing does not tell
            // unknown clients or unusable secrets from wrong ones.
            self.hasher.verify(client_secret, None).await?;
        }
        Ok(judged)
    }

    /// Counts a failed verification against its org (when the client exists), for
    /// the `verify.failed` audit events. Best effort: a store error is logged.
    async fn count_failure(&self, client_id: &str, org_id: Option<String>) {
        let org_id = match org_id {
            Some(org_id) => org_id,
            None if ids::is_client_id(client_id) => {
                match self.store.find_org_by_client_id(client_id).await {
                    Ok(Some(org)) => org.id,
                    Ok(None) => return,
                    Err(err) => {
                        tracing::warn!(client_id, error = %err, "could not count a failed verification");
                        return;
                    }
                }
            }
            None => return,
        };
        if let Ok(mut failed) = self.failed_by_org.lock() {
            *failed.entry(org_id).or_default() += 1;
        }
    }

    /// Writes one `verify.failed` audit event per org with failures since the last
    /// flush, carrying their count. Called once a minute, so the trail gets at most
    /// one such event per org per minute however hard a client is hammered.
    pub async fn flush_failed_verifications(&self) {
        let failed: Vec<(String, u64)> = match self.failed_by_org.lock() {
            Ok(mut failed) => failed.drain().collect(),
            Err(_) => return,
        };
        let actor = Actor {
            caller: "credd".into(),
            request_id: ids::new_id(),
        };
        for (org_id, count) in failed {
            let event = NewEvent::new(&actor, "verify.failed", Some(&org_id), &org_id)
                .outcome("refused")
                .details(serde_json::json!({ "count": count }));
            if let Err(err) = self.store.append_event(event, self.clock.now()).await {
                tracing::warn!(org_id, count, error = %err, "could not record failed verifications");
            }
        }
    }

    /// Writes `last_used_time` at most once a minute per secret, off the RPC path.
    fn note_used(&self, secret_id: &str) {
        let now = self.clock.now();
        let due = match self.last_used_written.lock() {
            Ok(mut written) => match written.get(secret_id) {
                Some(last) if now - *last < LAST_USED_EVERY => false,
                _ => {
                    written.insert(secret_id.to_owned(), now);
                    true
                }
            },
            Err(_) => false,
        };
        if due {
            let store = self.store.clone();
            let secret_id = secret_id.to_owned();
            tokio::spawn(async move {
                if let Err(err) = store.touch_secret(&secret_id, now).await {
                    tracing::warn!(secret_id, error = %err, "could not record last_used_time");
                }
            });
        }
    }
}
