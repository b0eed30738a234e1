//! The verify hot path: VerifyClientSecret, read top to bottom — the directory
//! lookup, a digest for generated secrets; for argon2-stored ones the verdict
//! cache with single-flight, the per-client throttle and the hasher; then the
//! counting of outcomes and failures.

use std::{
    collections::{HashMap, HashSet},
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
        caller::{Actor, OrgAccess},
        ids::{ClientId, OrgId, SecretId},
        secret::{self, ClientSecretState, Presented, StoredHash},
    },
    service::{
        Clock,
        directory::{Directory, OrgEntry, VerifiableSecret},
        hasher::Hasher,
        throttle::Throttle,
        verify_cache::{CachedVerdict, VerifyCache},
    },
    store::{Store, audit::NewEvent},
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
            Self::NotVerifiable(ClientSecretState::Expired) => "expired",
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
        let outcome = |outcome| {
            crate::metrics::METRICS
                .verify_outcomes
                .get_or_create(&crate::metrics::OutcomeLabels { outcome })
                .clone()
        };
        match verdict {
            Verdict::Valid { .. } => {
                // Resolved once: the hot path's count is one atomic addition.
                static VALID: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
                    std::sync::LazyLock::new(|| {
                        crate::metrics::METRICS
                            .verify_outcomes
                            .get_or_create(&crate::metrics::OutcomeLabels { outcome: "valid" })
                            .clone()
                    });
                VALID.inc();
                self.valid.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Invalid(refusal) => {
                outcome(refusal.as_str()).inc();
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
    directory: Arc<Directory>,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    counters: Arc<VerifyCounters>,
    cache: Arc<VerifyCache>,
    throttle: Arc<Throttle>,
    failed_by_org: Arc<Mutex<HashMap<OrgId, u64>>>,
    refusal_log: Arc<Mutex<HashMap<RefusalKey, Refusals>>>,
    /// Secrets whose hash is being replaced now (one replacement each at a time).
    rehashing: Arc<Mutex<HashSet<SecretId>>>,
    /// A random digest, compared against when there is no real one, so that an
    /// unknown client costs what a known one does.
    dummy_digest: [u8; 32],
}

impl VerifyService {
    /// The service answering from `directory` (generated secrets: a digest;
    /// imported ones: argon2 with `hasher`), caching argon2 successes in `cache`
    /// (which the write use cases invalidate) and throttling argon2 work with
    /// `throttle`. `store` records use, failures and replaced hashes.
    pub fn new(
        store: Store,
        directory: Arc<Directory>,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        cache: Arc<VerifyCache>,
        throttle: Throttle,
    ) -> Self {
        Self {
            store,
            directory,
            hasher,
            clock,
            counters: Arc::default(),
            cache,
            throttle: Arc::new(throttle),
            failed_by_org: Arc::default(),
            refusal_log: Arc::default(),
            rehashing: Arc::default(),
            dummy_digest: crate::domain::ids::random_bytes(),
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

    /// The in-memory directory the verdicts come from.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Checks a client ID (`None`: what was presented cannot be one credd issued)
    /// and secret. Every refusal is the same `Invalid` to the caller; the reason is
    /// logged and counted. A generated secret costs a lookup in memory and one
    /// SHA-256, whatever the client; an imported one (or a generated one stored
    /// before digests) one argon2 verification, cached on success and throttled
    /// per client. What the directory cannot answer (the store unreachable past
    /// `CREDD_STALE_IF_ERROR`, or an absence while the change feed is unreadable)
    /// is UNAVAILABLE, never a verdict.
    pub async fn verify(
        &self,
        client_id: Option<&ClientId>,
        client_secret: SecretString,
        access: &OrgAccess,
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
        let presented = secret::classify(client_secret.expose_secret());
        // A client of an org the caller does not reach is absent from what the
        // directory answers this caller: the same work, the same `false`.
        let entry = self.directory.by_client_id(client_id, access);
        if let Presented::Malformed(reason) = presented {
            // Certain whatever the store says: refused without any hashing.
            let mut judged = Judged::refused(Refusal::MalformedSecret(reason));
            judged.org_id = entry.ok().flatten().map(|e| e.org.id.clone());
            return self.conclude(client_id, judged, None);
        }
        let mut entry = entry?;
        // A secret memory does not hold may be one made a moment ago on another
        // replica: the org is read again — but the throttle comes first, so that
        // nothing stored is asked before it decides, and a flood of made-up
        // secrets is a flood of refusals, not of queries.
        let mut throttled = None;
        if !holds(entry.as_deref(), &presented) {
            let allowed = self.throttle.allow(client_id, entry.as_deref(), access);
            throttled = Some(!allowed);
            if allowed
                && let Some(again) = self
                    .directory
                    .recheck(client_id, entry.as_deref(), access)
                    .await
            {
                entry = again;
            }
        }
        if let Presented::Generated { secret_id } = &presented {
            let found = entry.as_deref().and_then(|e| e.secret(secret_id));
            if !found.is_some_and(|s| matches!(s.hash, StoredHash::Argon2(_))) {
                let judged =
                    self.judge_digest(entry.as_deref(), found, client_secret.expose_secret());
                return self.conclude(client_id, judged, entry.as_deref());
            }
        }
        self.verify_with_argon2(
            client_id,
            entry,
            presented,
            client_secret,
            access,
            throttled,
        )
        .await
    }

    /// A generated secret against its digest: one SHA-256 and a constant-time
    /// compare, against a random digest when there is no such secret.
    fn judge_digest(
        &self,
        entry: Option<&OrgEntry>,
        found: Option<&VerifiableSecret>,
        presented: &str,
    ) -> Judged {
        let now = self.clock.now();
        let mut judged = Judged::refused(Refusal::Unknown);
        judged.org_id = entry.map(|e| e.org.id.clone());
        let Some(found) = found else {
            secret::digest_matches(&self.dummy_digest, presented);
            return judged;
        };
        let matches = found.hash.digest_matches(presented);
        judged.verdict = if !found.verifies_at(now) {
            Verdict::Invalid(Refusal::NotVerifiable(found.state_at(now)))
        } else if matches && let Some(entry) = entry {
            Verdict::Valid {
                org_id: entry.org.id.clone(),
                secret_id: found.id.clone(),
            }
        } else {
            Verdict::Invalid(Refusal::Mismatch)
        };
        judged
    }

    /// Counts, logs and records a verdict. A refusal for want of a secret the
    /// directory does not hold is UNAVAILABLE while the change feed is unreadable:
    /// it may be one activated meanwhile.
    fn conclude(
        &self,
        client_id: &ClientId,
        judged: Judged,
        entry: Option<&OrgEntry>,
    ) -> Result<Verdict, Error> {
        if judged.verdict == Verdict::Invalid(Refusal::Unknown) {
            self.directory.absence_is_an_answer()?;
        }
        self.counters.count(&judged.verdict);
        match &judged.verdict {
            Verdict::Valid { org_id, secret_id } => {
                super::record_org(org_id);
                tracing::debug!(%client_id, %org_id, %secret_id, "client secret verified");
                self.note_used(entry, org_id, secret_id);
            }
            Verdict::Invalid(refusal) => {
                let key = match judged.org_id {
                    Some(org_id) => {
                        if let Ok(mut failed) = self.failed_by_org.lock() {
                            *failed.entry(org_id.clone()).or_default() += 1;
                        }
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

    /// The argon2 path: an imported secret, or a generated one whose hash predates
    /// digests. Successes are cached; identical concurrent verifications wait for
    /// one another; the throttle bounds the work per client.
    /// `throttled`: the throttle's answer when it was already asked for this
    /// call (before reading the org again), so that one call spends one token.
    async fn verify_with_argon2(
        &self,
        client_id: &ClientId,
        entry: Option<Arc<OrgEntry>>,
        presented: Presented,
        client_secret: SecretString,
        access: &OrgAccess,
        throttled: Option<bool>,
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
                if let Some(hit) = self.cache.get(key, now, access) {
                    self.cache.count_lookup(true);
                    let org_id = OrgId::from_stored(hit.org_id.to_string());
                    let secret_id = SecretId::from_stored(hit.secret_id.to_string());
                    let judged = Judged {
                        verdict: Verdict::Valid { org_id, secret_id },
                        org_id: None,
                        expiry: None,
                    };
                    return self.conclude(client_id, judged, entry.as_deref());
                }
                if let Some(leader) = self.cache.lead_or_wait(*key).await {
                    self.cache.count_lookup(false);
                    _leader = Some(leader);
                    break;
                }
            }
        }
        let generation = self.cache.generation();
        let known_good = key.is_some_and(|key| self.cache.known_good(&key, now, access));
        let throttled =
            throttled.unwrap_or_else(|| !self.throttle.allow(client_id, entry.as_deref(), access));
        let judged = self
            .judge_argon2(
                entry.as_deref(),
                presented,
                &client_secret,
                throttled,
                known_good,
            )
            .await?;
        if let (Verdict::Valid { org_id, secret_id }, Some(key)) = (&judged.verdict, key) {
            let cached = CachedVerdict {
                org_id: org_id.as_str().into(),
                secret_id: secret_id.as_str().into(),
            };
            self.cache
                .insert(key, cached, now, judged.expiry, generation);
        }
        if let (Verdict::Valid { secret_id, .. }, Some(entry)) = (&judged.verdict, &entry)
            && let Some(found) = entry.secret(secret_id)
        {
            self.rehash_if_due(&entry.org.id, found, client_secret);
        }
        self.conclude(client_id, judged, entry.as_deref())
    }

    /// The verdict for an argon2-stored secret that missed the cache.
    /// `known_good`: this very secret verified recently, so it skips the client's
    /// throttle.
    ///
    /// The throttle comes before the hash, and its answer depends on nothing
    /// stored: a client whose bucket is empty costs no hash, and client IDs
    /// without a bucket (made-up ones among them) share one to get theirs.
    async fn judge_argon2(
        &self,
        entry: Option<&OrgEntry>,
        presented: Presented,
        client_secret: &SecretString,
        throttled: bool,
        known_good: bool,
    ) -> Result<Judged, Error> {
        let overloaded =
            || Error::Overloaded("too many uncached verifications for this client; retry shortly");
        // The throttle was asked first: a known-good secret still spent a token
        // when there was one.
        let bypassed = throttled;
        if bypassed && !known_good {
            return Err(overloaded());
        }
        let candidates: Vec<&VerifiableSecret> = match (&presented, entry) {
            (Presented::Generated { secret_id }, Some(entry)) => {
                entry.secret(secret_id).into_iter().collect()
            }
            (Presented::ImportShaped { hint }, Some(entry)) => {
                entry.imported_with_hint(hint).take(2).collect()
            }
            _ => Vec::new(),
        };
        let now = self.clock.now();
        let mut judged = Judged::refused(Refusal::Unknown);
        judged.org_id = entry.map(|e| e.org.id.clone());
        let mut hashed = false;
        for candidate in candidates {
            if !candidate.verifies_at(now) {
                judged.verdict = Verdict::Invalid(Refusal::NotVerifiable(candidate.state_at(now)));
                continue;
            }
            let StoredHash::Argon2(phc) = &candidate.hash else {
                continue;
            };
            hashed = true;
            if self
                .hasher
                .verify(client_secret.clone(), Some(phc.clone()))
                .await?
            {
                // A cached success ends where the secret does (a grace end, a
                // lifetime end), to the second.
                judged.expiry = candidate.expire_time;
                judged.verdict = Verdict::Valid {
                    org_id: entry
                        .map_or_else(|| OrgId::from_stored(String::new()), |e| e.org.id.clone()),
                    secret_id: candidate.id.clone(),
                };
                return Ok(judged);
            }
            judged.verdict = Verdict::Invalid(Refusal::Mismatch);
        }
        if !hashed {
            // A known-good pass covers a secret that can still verify, nothing else.
            if bypassed {
                return Err(overloaded());
            }
            // The same argon2 work as a real check, so that timing does not tell
            // unknown clients or unusable secrets from wrong ones.
            self.hasher.verify(client_secret.clone(), None).await?;
        }
        Ok(judged)
    }

    /// After `found` verified with argon2: stores what credd would store today,
    /// off the RPC path — a digest for a generated secret stored before digests,
    /// a fresh argon2id hash for an imported one whose parameters differ from the
    /// configured ones. A compare-and-swap on the old hash, so replicas racing to
    /// do it do it once; the change feed then brings the new hash everywhere.
    fn rehash_if_due(&self, org_id: &OrgId, found: &VerifiableSecret, client_secret: SecretString) {
        let generated = !found.imported;
        let old_phc = found.hash.to_phc();
        if !generated && !self.hasher.needs_rehash(&old_phc) {
            return;
        }
        let secret_id = found.id.clone();
        let first = self
            .rehashing
            .lock()
            .is_ok_and(|mut rehashing| rehashing.insert(secret_id.clone()));
        if !first {
            return;
        }
        let (store, hasher, directory, rehashing) = (
            self.store.clone(),
            self.hasher.clone(),
            self.directory.clone(),
            self.rehashing.clone(),
        );
        let org_id = org_id.clone();
        tokio::spawn(async move {
            let new_phc = if generated {
                Ok(StoredHash::digest_of(client_secret.expose_secret()).to_phc())
            } else {
                hasher.hash(client_secret).await
            };
            let replaced = match new_phc {
                Ok(new_phc) => {
                    store
                        .replace_secret_hash(&org_id, &secret_id, &old_phc, &new_phc)
                        .await
                }
                Err(err) => Err(err),
            };
            match replaced {
                Ok(true) => {
                    tracing::info!(%org_id, %secret_id, to = if generated { "sha256" } else { "argon2id" }, "stored hash replaced by today's format");
                    directory.reload_after_write(&org_id, None).await;
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(%org_id, %secret_id, error = %err, "could not replace a stored hash; the next verification tries again");
                }
            }
            if let Ok(mut rehashing) = rehashing.lock() {
                rehashing.remove(&secret_id);
            }
        });
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

    /// Writes `last_used_time` at most once a minute per secret (per process),
    /// off the RPC path.
    fn note_used(&self, entry: Option<&OrgEntry>, org_id: &OrgId, secret_id: &SecretId) {
        let now = self.clock.now();
        let due = entry
            .filter(|e| &e.org.id == org_id)
            .and_then(|e| e.secret(secret_id))
            .is_some_and(|s| s.last_used_due(now, LAST_USED_EVERY));
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

/// Whether `entry` holds a secret that `presented` may be: the generated secret
/// it locates, or an imported one with its hint.
fn holds(entry: Option<&OrgEntry>, presented: &Presented) -> bool {
    match (entry, presented) {
        (Some(entry), Presented::Generated { secret_id }) => entry.secret(secret_id).is_some(),
        (Some(entry), Presented::ImportShaped { hint }) => {
            entry.imported_with_hint(hint).next().is_some()
        }
        _ => false,
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
