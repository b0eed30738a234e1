//! The verdict cache: successful verifications only, keyed by an HMAC of the client
//! ID and secret under a per-process random key (the secret itself is never kept),
//! bounded in size and time.
//!
//! Invalidation: writes that change an org's verifications forget that org's
//! entries at once in this process; other processes learn of them through the
//! store's change feed. Every invalidation also bumps a generation, and a verdict
//! computed before it is not cached after it, so a verification racing a rotation
//! cannot put a stale "valid" back.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Duration, Utc};
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::{
    domain::{
        caller::OrgAccess,
        ids::{self, ClientId, OrgId},
    },
    metrics::{CacheLabels, METRICS},
};

/// The most entries the cache holds.
pub const DEFAULT_CAPACITY: usize = 100_000;

type Key = [u8; 32];
/// A known-good key's org and end.
type KnownGood = (Arc<str>, DateTime<Utc>);

#[derive(Debug, Clone)]
struct Entry {
    org_id: Arc<str>,
    secret_id: Arc<str>,
    until: DateTime<Utc>,
}

/// How long a secret that verified stays "known good": recognised, without argon2,
/// as one that verified before, so that it skips its client's throttle (never a
/// verdict: it is still checked against the store).
const KNOWN_GOOD_FOR: Duration = Duration::hours(24);

/// A cached successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedVerdict {
    /// The org.
    pub org_id: Arc<str>,
    /// The secret that verified.
    pub secret_id: Arc<str>,
}

/// Successful verifications, for a bounded time.
pub struct VerifyCache {
    key: [u8; 32],
    in_flight: std::sync::Mutex<HashMap<Key, Arc<tokio::sync::Notify>>>,
    ttl: Duration,
    capacity: usize,
    entries: RwLock<HashMap<Key, Entry>>,
    /// Keys of secrets that verified in the last [`KNOWN_GOOD_FOR`], with their org
    /// and until when: the throttle lets them through (a rightful client under a
    /// flood of wrong secrets keeps verifying). Forgotten with their org.
    known_good: RwLock<HashMap<Key, KnownGood>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl VerifyCache {
    /// A cache keeping verdicts for `ttl` (zero disables it), at most `capacity`.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            key: ids::random_bytes(),
            in_flight: std::sync::Mutex::default(),
            ttl,
            capacity,
            entries: RwLock::default(),
            known_good: RwLock::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// Whether verdicts are cached at all.
    pub fn enabled(&self) -> bool {
        self.ttl > Duration::zero() && self.capacity > 0
    }

    /// The cache key of a client ID and secret: HMAC-SHA-256 under this process's key.
    pub fn key(&self, client_id: &ClientId, secret: &str) -> Key {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!());
        mac.update(client_id.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The cached verdict for `key`, if one is still good at `now` and its org is
    /// one `reach` reaches: the key is the same whoever asks, so a verdict another
    /// caller cached answers only a caller that could have had it from the store.
    pub fn get(&self, key: &Key, now: DateTime<Utc>, reach: &OrgAccess) -> Option<CachedVerdict> {
        self.entries
            .read()
            .ok()
            .and_then(|entries| {
                entries
                    .get(key)
                    .filter(|e| e.until > now && reach.reaches_id(&e.org_id))
                    .cloned()
            })
            .map(|e| CachedVerdict {
                org_id: e.org_id,
                secret_id: e.secret_id,
            })
    }

    /// Counts one verification's lookup as a hit or a miss (a caller that waited
    /// for another and then found the verdict counts once, as a hit).
    pub fn count_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        METRICS
            .verify_cache
            .get_or_create(&CacheLabels { result })
            .inc();
    }

    /// The current generation; read it before looking a verdict up in the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a successful verification until `now + ttl`, or `expiry` when that is
    /// earlier (a RETIRING secret's grace end), unless an invalidation happened
    /// since `generation` was read.
    pub fn insert(
        &self,
        key: Key,
        verdict: CachedVerdict,
        now: DateTime<Utc>,
        expiry: Option<DateTime<Utc>>,
        generation: u64,
    ) {
        if !self.enabled() {
            return;
        }
        let until = match expiry {
            Some(expiry) => expiry.min(now + self.ttl),
            None => now + self.ttl,
        };
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Checked under the write lock, which invalidations also take.
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        if let Ok(mut known_good) = self.known_good.write() {
            if known_good.len() >= self.capacity {
                known_good.retain(|_, (_, until)| *until > now);
                if known_good.len() >= self.capacity {
                    known_good.clear();
                }
            }
            // Never past a RETIRING secret's grace end: then it cannot verify.
            let known_until =
                expiry.map_or(now + KNOWN_GOOD_FOR, |end| end.min(now + KNOWN_GOOD_FOR));
            known_good.insert(key, (verdict.org_id.clone(), known_until));
        }
        entries.insert(
            key,
            Entry {
                org_id: verdict.org_id,
                secret_id: verdict.secret_id,
                until,
            },
        );
    }

    /// Whether the secret behind `key` verified recently (and its org has not
    /// changed since) in an org `reach` reaches: the throttle may let it through.
    pub fn known_good(&self, key: &Key, now: DateTime<Utc>, reach: &OrgAccess) -> bool {
        self.known_good.read().is_ok_and(|known| {
            known
                .get(key)
                .is_some_and(|(org, until)| *until > now && reach.reaches_id(org))
        })
    }

    /// Waits while another caller verifies the same client ID and secret, so that a
    /// burst of identical cold verifications (a gateway starting up) costs one
    /// argon2 verification instead of one each. Answers `Some(guard)` when this
    /// caller is to verify (and must keep the guard until the verdict is cached),
    /// `None` after waiting for another, when the cache should be read again.
    pub async fn lead_or_wait(self: &Arc<Self>, key: Key) -> Option<Leader> {
        let waiting = {
            let Ok(mut in_flight) = self.in_flight.lock() else {
                return Some(Leader {
                    cache: self.clone(),
                    key,
                    notify: Arc::new(tokio::sync::Notify::new()),
                });
            };
            match in_flight.get(&key) {
                // Created under the lock, so the leader's wake-up cannot be missed.
                Some(notify) => Arc::clone(notify),
                None => {
                    let notify = Arc::new(tokio::sync::Notify::new());
                    in_flight.insert(key, notify.clone());
                    return Some(Leader {
                        cache: self.clone(),
                        key,
                        notify,
                    });
                }
            }
        };
        let notified = waiting.notified();
        // The leader may have finished between the lock and here.
        if self
            .in_flight
            .lock()
            .map(|m| m.get(&key).is_some_and(|n| Arc::ptr_eq(n, &waiting)))
            .unwrap_or(false)
        {
            notified.await;
        }
        None
    }

    /// Forgets the cached verdicts of `org_id` but keeps its known-good keys (no
    /// verdict, only priority past the throttle): for a change this process made
    /// itself and already forgot, seen again in the change feed.
    pub fn forget_verdicts(&self, org_id: &OrgId) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.retain(|_, e| &*e.org_id != org_id.as_str());
        }
    }

    /// Forgets every verdict of `org_id`.
    pub fn forget_org(&self, org_id: &OrgId) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.retain(|_, e| &*e.org_id != org_id.as_str());
        }
        if let Ok(mut known_good) = self.known_good.write() {
            known_good.retain(|_, (org, _)| &**org != org_id.as_str());
        }
    }

    /// Forgets every verdict (another process changed something we cannot pin
    /// down, or the change feed was interrupted). Known-good keys stay: they are
    /// no verdict, only priority past the throttle for a secret the store still
    /// checks, and a feed hiccup is when clients most need it.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.clear();
        }
    }

    /// How many verdicts are cached.
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Forgets an org's verdicts when dropped. A write that changes what verifies
/// creates it before the store call: the org is forgotten after the commit even
/// when the RPC is cancelled meanwhile, or the commit's answer is lost after the
/// database committed (the change feed's next poll reads the org again and
/// forgets it once more, after the directory holds the new state).
#[must_use = "the org is forgotten when this is dropped"]
pub struct ForgetOnDrop {
    cache: Arc<VerifyCache>,
    org_id: OrgId,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        self.cache.forget_org(&self.org_id);
    }
}

impl VerifyCache {
    /// A guard that forgets `org_id`'s verdicts when it is dropped.
    pub fn forget_when_done(self: &Arc<Self>, org_id: &OrgId) -> ForgetOnDrop {
        ForgetOnDrop {
            cache: self.clone(),
            org_id: org_id.clone(),
        }
    }
}

/// The one caller verifying a given client ID and secret; others wait for it.
/// Dropping it (done, failed or cancelled) lets them go.
pub struct Leader {
    cache: Arc<VerifyCache>,
    key: Key,
    notify: Arc<tokio::sync::Notify>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.cache.in_flight.lock() {
            in_flight.remove(&self.key);
        }
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> ClientId {
        ClientId::from_stored(name.into())
    }

    fn verdict(org: &str) -> CachedVerdict {
        CachedVerdict {
            org_id: org.into(),
            secret_id: "s".into(),
        }
    }

    #[test]
    fn keys_depend_on_both_parts_and_the_process_key() {
        let cache = VerifyCache::new(Duration::minutes(5), 10);
        assert_eq!(cache.key(&id("c"), "s"), cache.key(&id("c"), "s"));
        assert_ne!(cache.key(&id("c"), "s"), cache.key(&id("c"), "t"));
        assert_ne!(cache.key(&id("cs"), ""), cache.key(&id("c"), "s"));
        assert_ne!(
            VerifyCache::new(Duration::minutes(5), 10).key(&id("c"), "s"),
            cache.key(&id("c"), "s")
        );
    }

    #[test]
    fn entries_expire_at_the_ttl_or_the_grace_end() {
        let cache = VerifyCache::new(Duration::minutes(5), 10);
        let now = Utc::now();
        let (a, b) = (cache.key(&id("c"), "a"), cache.key(&id("c"), "b"));
        cache.insert(a, verdict("o"), now, None, cache.generation());
        cache.insert(
            b,
            verdict("o"),
            now,
            Some(now + Duration::seconds(60)),
            cache.generation(),
        );
        assert!(
            cache
                .get(&a, now + Duration::seconds(299), &OrgAccess::All)
                .is_some()
        );
        assert!(
            cache
                .get(&a, now + Duration::seconds(300), &OrgAccess::All)
                .is_none()
        );
        assert!(
            cache
                .get(&b, now + Duration::seconds(59), &OrgAccess::All)
                .is_some()
        );
        assert!(
            cache
                .get(&b, now + Duration::seconds(60), &OrgAccess::All)
                .is_none()
        );
    }

    #[test]
    fn forgetting_an_org_and_racing_inserts() {
        let cache = VerifyCache::new(Duration::minutes(5), 10);
        let now = Utc::now();
        let (a, b) = (cache.key(&id("c"), "a"), cache.key(&id("d"), "b"));
        cache.insert(a, verdict("o1"), now, None, cache.generation());
        cache.insert(b, verdict("o2"), now, None, cache.generation());
        let seen = cache.generation();
        cache.forget_org(&OrgId::from_stored("o1".into()));
        assert!(cache.get(&a, now, &OrgAccess::All).is_none());
        assert!(cache.get(&b, now, &OrgAccess::All).is_some());
        // A verdict computed before the invalidation is not cached after it.
        cache.insert(a, verdict("o1"), now, None, seen);
        assert!(cache.get(&a, now, &OrgAccess::All).is_none());
    }

    #[test]
    fn a_verdict_and_a_known_good_key_answer_only_callers_that_reach_the_org() {
        let cache = VerifyCache::new(Duration::minutes(5), 10);
        let now = Utc::now();
        let (org, other) = (OrgId::generate(), OrgId::generate());
        let key = cache.key(&id("c"), "s");
        cache.insert(key, verdict(org.as_str()), now, None, cache.generation());
        let own = OrgAccess::of(vec![org.clone()]);
        let elsewhere = OrgAccess::of(vec![other]);
        assert!(cache.get(&key, now, &OrgAccess::All).is_some());
        assert!(cache.get(&key, now, &own).is_some());
        assert!(cache.get(&key, now, &elsewhere).is_none());
        assert!(cache.known_good(&key, now, &own));
        assert!(!cache.known_good(&key, now, &elsewhere));
    }

    #[test]
    fn it_stays_within_its_capacity_and_can_be_off() {
        let cache = VerifyCache::new(Duration::minutes(5), 3);
        let now = Utc::now();
        for i in 0..10 {
            cache.insert(
                cache.key(&id("c"), &i.to_string()),
                verdict("o"),
                now,
                None,
                cache.generation(),
            );
            assert!(cache.len() <= 3);
        }
        let off = VerifyCache::new(Duration::zero(), 3);
        off.insert(
            off.key(&id("c"), "s"),
            verdict("o"),
            now,
            None,
            off.generation(),
        );
        assert!(off.is_empty());
    }
}
