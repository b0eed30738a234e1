//! The verify hot path: VerifyClientSecret, read top to bottom — the verdict cache
//! with single-flight, the per-client throttle, the store lookup of at most one
//! candidate (two for imports), the hasher, and the counting of outcomes and
//! failures.

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
        ids::{ClientId, OrgId, SecretId},
        secret::{self, ClientSecretState, Presented},
    },
    service::{
        Clock,
        hasher::Hasher,
        throttle::Throttle,
        verify_cache::{CachedVerdict, VerifyCache},
    },
    store::{Store, audit::NewEvent, client_secrets::Candidate},
};

/// How often the refusals of one org (or of all unknown clients) are summed up in
/// one log line.
pub const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How often at most `last_used_time` is written for one secret.
const LAST_USED_EVERY: Duration = Duration::minutes(1);

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
        org_id: OrgId,
        /// The secret that matched.
        secret_id: SecretId,
    },
    /// Anything else; the caller only learns `valid = false`.
    Invalid(Refusal),
}

/// What [`VerifyService::judge`] learned besides the verdict.
struct Judged {
    verdict: Verdict,
    /// The org concerned, when a candidate secret showed it.
    org_id: Option<OrgId>,
    /// A RETIRING secret's grace end, where a cached success must stop.
    expiry: Option<DateTime<Utc>>,
}

impl Judged {
    fn refused(refusal: Refusal) -> Self {
        Self {
            verdict: Verdict::Invalid(refusal),
            org_id: None,
            expiry: None,
        }
    }
}

/// Where a refusal is logged: its org (the client exists), or one bucket for all
/// clients that do not exist and one for malformed client IDs — bounded by the
/// number of orgs, whatever callers send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RefusalKey {
    Org(OrgId),
    UnknownClient,
    MalformedClient,
}

/// Refusals of one key since its last log line.
#[derive(Debug, Default)]
struct Refusals {
    /// A client ID to name in the line (well-formed, so never a secret).
    client_id: Option<ClientId>,
    /// Refusals not yet logged, by reason.
    unlogged: std::collections::BTreeMap<&'static str, u64>,
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

/// Verifies client secrets.
#[derive(Debug, Clone)]
pub struct VerifyService {
    store: Store,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    counters: Arc<VerifyCounters>,
    cache: Arc<VerifyCache>,
    throttle: Arc<Throttle>,
    failed_by_org: Arc<Mutex<HashMap<OrgId, u64>>>,
    refusal_log: Arc<Mutex<HashMap<RefusalKey, Refusals>>>,
    last_used_written: Arc<Mutex<HashMap<SecretId, DateTime<Utc>>>>,
}

impl VerifyService {
    /// The service over `store`, hashing with `hasher`, caching successes in `cache`
    /// (which the write use cases invalidate) and throttling cold work with
    /// `throttle`.
    pub fn new(
        store: Store,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        cache: Arc<VerifyCache>,
        throttle: Throttle,
    ) -> Self {
        Self {
            store,
            hasher,
            clock,
            counters: Arc::default(),
            cache,
            throttle: Arc::new(throttle),
            failed_by_org: Arc::default(),
            refusal_log: Arc::default(),
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

    /// The verdict cache (the change feed and tests reach it here).
    pub fn cache(&self) -> &Arc<VerifyCache> {
        &self.cache
    }

    /// Checks a client ID (`None`: what was presented cannot be one credd issued)
    /// and secret. Every refusal is the same `Invalid` to the caller; the reason is
    /// logged and counted. A store outage is an error, never a verdict. A cached
    /// success costs no argon2 work and no database round trip; uncached work is
    /// throttled per client (`Overloaded`, never a wrong `false`).
    pub async fn verify(
        &self,
        client_id: Option<&ClientId>,
        client_secret: SecretString,
    ) -> Result<Verdict, Error> {
        let Some(client_id) = client_id else {
            // It may be a secret sent in the wrong field: it stays out of the logs.
            let verdict = Verdict::Invalid(Refusal::MalformedClientId);
            self.counters.count(&verdict);
            self.log_refusal(
                RefusalKey::MalformedClient,
                None,
                Refusal::MalformedClientId,
            );
            return Ok(verdict);
        };
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
                    let org_id = OrgId::from_stored(hit.org_id.to_string());
                    let secret_id = SecretId::from_stored(hit.secret_id.to_string());
                    super::record_org(&org_id);
                    self.note_used(&org_id, &secret_id);
                    let verdict = Verdict::Valid { org_id, secret_id };
                    self.counters.count(&verdict);
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
        let known_good = key.is_some_and(|key| self.cache.known_good(&key, now));
        let judged = self.judge(client_id, client_secret, known_good).await?;
        self.counters.count(&judged.verdict);
        match &judged.verdict {
            Verdict::Valid { org_id, secret_id } => {
                super::record_org(org_id);
                tracing::debug!(%client_id, %org_id, %secret_id, "client secret verified");
                self.note_used(org_id, secret_id);
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
                let key = match self.count_failure(client_id, judged.org_id).await {
                    Some(org_id) => {
                        crate::metrics::METRICS
                            .verify_failures
                            .get_or_create(&crate::metrics::OrgLabels {
                                org_id: org_id.as_str().to_owned(),
                            })
                            .inc();
                        RefusalKey::Org(org_id)
                    }
                    None => RefusalKey::UnknownClient,
                };
                self.log_refusal(key, Some(client_id), *refusal);
            }
        }
        Ok(judged.verdict)
    }

    /// The verdict for a client ID and secret that missed the cache. `known_good`:
    /// this very secret verified recently, so it skips the client's throttle.
    ///
    /// The throttle comes before the store, so its answer depends on nothing stored:
    /// a client whose bucket is empty costs neither a query nor a hash, and client
    /// IDs without a bucket (made-up ones among them) share one to get theirs. A
    /// malformed secret costs nothing and is throttled by nothing.
    async fn judge(
        &self,
        client_id: &ClientId,
        client_secret: SecretString,
        known_good: bool,
    ) -> Result<Judged, Error> {
        let presented = secret::classify(client_secret.expose_secret());
        if let Presented::Malformed(reason) = presented {
            return Ok(Judged::refused(Refusal::MalformedSecret(reason)));
        }
        // `allow` first: a known-good secret still spends a token when there is one.
        let bypassed = !self.throttle.allow(client_id);
        if bypassed && !known_good {
            return Err(Error::Overloaded(
                "too many uncached verifications for this client; retry shortly",
            ));
        }
        let candidates: Vec<Candidate> = match presented {
            Presented::Malformed(_) => Vec::new(),
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
        let now = self.clock.now();
        let mut judged = Judged::refused(Refusal::Unknown);
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
            // A known-good pass covers a secret that can still verify, nothing else.
            if bypassed {
                return Err(Error::Overloaded(
                    "too many uncached verifications for this client; retry shortly",
                ));
            }
            // The same argon2 work as a real check, so that timing does not tell
            // unknown clients or unusable secrets from wrong ones.
            self.hasher.verify(client_secret, None).await?;
        }
        Ok(judged)
    }

    /// Counts a failed verification against its org (when the client exists), for
    /// the `verify.failed` audit events, and answers that org. Best effort: a store
    /// error is logged.
    async fn count_failure(&self, client_id: &ClientId, org_id: Option<OrgId>) -> Option<OrgId> {
        let org_id = match org_id {
            Some(org_id) => org_id,
            None => match self.store.find_org_by_client_id(client_id).await {
                Ok(Some(org)) => org.id,
                Ok(None) => return None,
                Err(err) => {
                    tracing::warn!(%client_id, error = %err, "could not count a failed verification");
                    return None;
                }
            },
        };
        if let Ok(mut failed) = self.failed_by_org.lock() {
            *failed.entry(org_id.clone()).or_default() += 1;
        }
        Some(org_id)
    }

    /// Logs a refusal: the first of its key in an interval at once (an operator
    /// trying one bad secret sees it), the rest summed up by
    /// [`VerifyService::flush_refusal_log`] — so a flood of wrong secrets is a
    /// couple of lines per org per interval, not a line per request.
    fn log_refusal(&self, key: RefusalKey, client_id: Option<&ClientId>, refusal: Refusal) {
        let first = match self.refusal_log.lock() {
            Ok(mut log) => {
                let first = !log.contains_key(&key);
                let entry = log.entry(key.clone()).or_default();
                if entry.client_id.is_none() {
                    entry.client_id = client_id.cloned();
                }
                if !first {
                    *entry.unlogged.entry(refusal.as_str()).or_default() += 1;
                }
                first
            }
            Err(_) => false,
        };
        if first {
            log_refusals(&key, client_id, refusal.as_str(), 1);
        }
    }

    /// Writes one line per org (and for unknown or malformed clients) with the
    /// refusals not logged since the last flush, and starts a new interval.
    pub fn flush_refusal_log(&self) {
        let log = match self.refusal_log.lock() {
            Ok(mut log) => std::mem::take(&mut *log),
            Err(_) => return,
        };
        for (key, refusals) in log {
            if refusals.unlogged.is_empty() {
                continue;
            }
            let count = refusals.unlogged.values().sum();
            let reasons = refusals
                .unlogged
                .iter()
                .map(|(reason, n)| format!("{reason}={n}"))
                .collect::<Vec<_>>()
                .join(" ");
            log_refusals(&key, refusals.client_id.as_ref(), &reasons, count);
        }
    }

    /// Writes one `verify.failed` audit event per org with failures since the last
    /// flush, carrying their count. Called once a minute, so the trail gets at most
    /// one such event per org per minute however hard a client is hammered.
    pub async fn flush_failed_verifications(&self) {
        let failed: Vec<(OrgId, u64)> = match self.failed_by_org.lock() {
            Ok(mut failed) => failed.drain().collect(),
            Err(_) => return,
        };
        let actor = Actor::internal("credd");
        for (org_id, count) in failed {
            let event = NewEvent::new(&actor, "verify.failed", Some(&org_id), &org_id)
                .outcome("refused")
                .details(serde_json::json!({ "count": count }));
            if let Err(err) = self.store.append_event(event, self.clock.now()).await {
                tracing::warn!(%org_id, count, error = %err, "could not record failed verifications");
            }
        }
    }

    /// Writes `last_used_time` at most once a minute per secret, off the RPC path.
    fn note_used(&self, org_id: &OrgId, secret_id: &SecretId) {
        let now = self.clock.now();
        let due = match self.last_used_written.lock() {
            Ok(mut written) => match written.get(secret_id) {
                Some(last) if now - *last < LAST_USED_EVERY => false,
                _ => {
                    written.insert(secret_id.clone(), now);
                    true
                }
            },
            Err(_) => false,
        };
        if due {
            let store = self.store.clone();
            let (org_id, secret_id) = (org_id.clone(), secret_id.clone());
            tokio::spawn(async move {
                if let Err(err) = store.touch_secret(&org_id, &secret_id, now).await {
                    tracing::warn!(%secret_id, error = %err, "could not record last_used_time");
                }
            });
        }
    }
}

/// One log line for `count` refusals of `key`, with their reasons.
fn log_refusals(key: &RefusalKey, client_id: Option<&ClientId>, reasons: &str, count: u64) {
    match key {
        RefusalKey::Org(org_id) => tracing::info!(
            %org_id,
            client_id = %client_id.map(ClientId::as_str).unwrap_or_default(),
            count,
            reasons,
            "client secret refused"
        ),
        RefusalKey::UnknownClient => tracing::info!(
            client_id = %client_id.map(ClientId::as_str).unwrap_or_default(),
            count,
            reasons,
            "client secret refused: no such client"
        ),
        RefusalKey::MalformedClient => tracing::info!(
            client_id = "(malformed, not logged)",
            count,
            reasons,
            "client secret refused"
        ),
    }
}
