//! Token buckets on cold (argon2) verifications, taken before the database is
//! asked, so that the decision depends on nothing stored (no oracle):
//! - one per client ID, so that one client hammering wrong or uncached secrets
//!   cannot take every argon2 worker from the rest. Only a caller that reaches
//!   the client's org spends it: a token limited to org A cannot empty org C's
//!   bucket and lock C's rightful secret out;
//! - one shared by every client ID that has no bucket yet, which a new bucket is
//!   paid from, so that made-up client IDs — each of which would otherwise arrive
//!   with a full bucket of its own — share one client's rate between them;
//! - one shared by every verification of a client outside the caller's orgs
//!   (which always answers `valid = false`): a client that exists elsewhere and
//!   one that exists nowhere spend the same bucket, so the throttle tells a
//!   limited caller nothing about other tenants.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    domain::{caller::OrgAccess, ids::ClientId},
    metrics::METRICS,
    service::directory::OrgEntry,
};

/// The most clients tracked at once; past it, full (idle) buckets are dropped.
const MAX_CLIENTS: usize = 100_000;
/// How often at most a throttled client is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    logged: Option<Instant>,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            refilled: now,
            logged: None,
        }
    }

    /// Refills for the time since the last take, then takes a token if there is one.
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }

    /// Whether a refusal should be logged now (at most every [`LOG_EVERY`]).
    fn due_for_log(&mut self, now: Instant) -> bool {
        let due = self
            .logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if due {
            self.logged = Some(now);
        }
        due
    }
}

/// The buckets; a rate of zero turns throttling off.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<ClientId, Bucket>,
    /// What new buckets are paid from (created full on first use).
    newcomers: Option<Bucket>,
    /// Spent by verifications of clients outside the caller's orgs.
    out_of_reach: Option<Bucket>,
}

impl Throttle {
    /// `rate` cold verifications a second per client, bursts of `burst`; new
    /// client IDs together get the same.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            state: Mutex::default(),
        }
    }

    /// Takes a token for a cold verification of `client_id` by a caller with
    /// `access`; `found` is the client's org as the directory answered that
    /// caller. The client's own bucket is spent only when the caller reaches the
    /// client's org (or reaches every org, so that a made-up client ID is treated
    /// like a real one: no oracle); otherwise the out-of-reach bucket. False when
    /// the bucket is empty, or when the client has none yet and the newcomers'
    /// shared bucket is empty.
    pub fn allow(
        &self,
        client_id: &ClientId,
        found: Option<&OrgEntry>,
        access: &OrgAccess,
    ) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let reached = match found {
            Some(entry) => &entry.org.client_id == client_id && access.reaches(&entry.org.id),
            None => access.orgs().is_none(),
        };
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        let State {
            clients,
            newcomers,
            out_of_reach,
        } = &mut *state;
        let (rate, burst) = (self.rate, self.burst);
        if !reached {
            let shared = out_of_reach.get_or_insert_with(|| Bucket::full(burst, now));
            if shared.take(now, rate, burst) {
                return true;
            }
            METRICS.verify_throttled.inc();
            if shared.due_for_log(now) {
                tracing::warn!(
                    rate,
                    burst,
                    "cold verifications of clients outside the caller's orgs throttled"
                );
            }
            return false;
        }
        if let Some(bucket) = clients.get_mut(client_id) {
            if bucket.take(now, rate, burst) {
                return true;
            }
            METRICS.verify_throttled.inc();
            if bucket.due_for_log(now) {
                tracing::warn!(%client_id, rate, burst, "cold verifications throttled for this client");
            }
            return false;
        }
        let shared = newcomers.get_or_insert_with(|| Bucket::full(burst, now));
        if !shared.take(now, rate, burst) {
            METRICS.verify_throttled.inc();
            if shared.due_for_log(now) {
                tracing::warn!(
                    rate,
                    burst,
                    "cold verifications of client IDs not seen lately throttled (made-up client IDs?)"
                );
            }
            return false;
        }
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, b| {
                b.tokens + now.duration_since(b.refilled).as_secs_f64() * rate < burst
            });
        }
        let mut bucket = Bucket::full(burst, now);
        bucket.tokens -= 1.0;
        clients.insert(client_id.clone(), bucket);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> ClientId {
        ClientId::from_stored(name.into())
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_untouched() {
        let throttle = Throttle::new(0.001, 3);
        assert!((0..3).all(|_| throttle.allow(&id("a"), None, &OrgAccess::All)));
        assert!(!throttle.allow(&id("a"), None, &OrgAccess::All));
        assert!(throttle.allow(&id("b"), None, &OrgAccess::All));
    }

    #[test]
    fn new_client_ids_share_one_bucket_and_known_ones_keep_theirs() {
        let throttle = Throttle::new(0.001, 3);
        assert!(
            throttle.allow(&id("known"), None, &OrgAccess::All),
            "a first bucket, paid by newcomers"
        );
        assert!(throttle.allow(&id("x1"), None, &OrgAccess::All));
        assert!(throttle.allow(&id("x2"), None, &OrgAccess::All));
        assert!(
            !throttle.allow(&id("x3"), None, &OrgAccess::All),
            "newcomers' bucket spent"
        );
        assert!(!throttle.allow(&id("x4"), None, &OrgAccess::All));
        assert!(
            throttle.allow(&id("known"), None, &OrgAccess::All),
            "a known client keeps its own bucket"
        );
        assert!(throttle.allow(&id("x1"), None, &OrgAccess::All));
        assert!(
            Throttle::new(0.0, 1).allow(&id("y"), None, &OrgAccess::All),
            "a zero rate is off"
        );
    }

    #[test]
    fn callers_outside_an_org_spend_their_own_shared_bucket_not_the_clients() {
        let throttle = Throttle::new(0.001, 2);
        let elsewhere = OrgAccess::of(vec![crate::domain::ids::OrgId::generate()]);
        assert!(throttle.allow(&id("c"), None, &elsewhere));
        assert!(throttle.allow(&id("d"), None, &elsewhere));
        assert!(
            !throttle.allow(&id("c"), None, &elsewhere),
            "the out-of-reach bucket is spent, whatever the client ID"
        );
        assert!(
            throttle.allow(&id("c"), None, &OrgAccess::All),
            "c's own bucket is untouched"
        );
        assert!(throttle.allow(&id("c"), None, &OrgAccess::All));
    }

    #[test]
    fn a_zero_rate_never_throttles() {
        let throttle = Throttle::new(0.0, 1);
        assert!((0..100).all(|_| throttle.allow(&id("a"), None, &OrgAccess::All)));
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let throttle = Throttle::new(10.0, 1);
        assert!(throttle.allow(&id("a"), None, &OrgAccess::All));
        assert!(
            !throttle.allow(&id("a"), None, &OrgAccess::All),
            "the burst of one is spent"
        );
        // One token comes back every 100 ms.
        std::thread::sleep(Duration::from_millis(150));
        assert!(throttle.allow(&id("a"), None, &OrgAccess::All));
    }
}
