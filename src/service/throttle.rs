//! Token buckets on cold (argon2) verifications, taken before the database is asked:
//! one per client ID, so that one client hammering wrong or uncached secrets cannot
//! take every argon2 worker from the rest, and one shared by every verification
//! that finds no candidate secret (unknown clients, made-up locators), so that
//! random client IDs — each of which would get a fresh bucket — cannot either.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{domain::ids::ClientId, metrics::METRICS};

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
        METRICS.verify_throttled.inc();
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

/// Per-client token buckets and the shared bucket of verifications that find no
/// candidate; a rate of zero turns throttling off.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<ClientId, Bucket>>,
    no_candidate: Mutex<Option<Bucket>>,
}

impl Throttle {
    /// `rate` cold verifications a second per client, bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
            no_candidate: Mutex::default(),
        }
    }

    /// Takes a token from the bucket every verification without a candidate secret
    /// shares (an unknown client, or a locator no row has): whatever client IDs a
    /// caller makes up, their dummy-hash work is bounded by one client's rate.
    pub fn allow_no_candidate(&self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let Ok(mut bucket) = self.no_candidate.lock() else {
            return true;
        };
        let bucket = bucket.get_or_insert_with(|| Bucket::full(self.burst, now));
        if bucket.take(now, self.rate, self.burst) {
            return true;
        }
        if bucket.due_for_log(now) {
            tracing::warn!(
                rate = self.rate,
                burst = self.burst,
                "cold verifications of unknown clients throttled"
            );
        }
        false
    }

    /// Takes a token for `client_id`; false when its bucket is empty.
    pub fn allow(&self, client_id: &ClientId) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(client_id) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.refilled).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets
            .entry(client_id.clone())
            .or_insert_with(|| Bucket::full(self.burst, now));
        if bucket.take(now, self.rate, self.burst) {
            return true;
        }
        if bucket.due_for_log(now) {
            tracing::warn!(
                %client_id,
                rate = self.rate,
                burst = self.burst,
                "cold verifications throttled for this client"
            );
        }
        false
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
        assert!((0..3).all(|_| throttle.allow(&id("a"))));
        assert!(!throttle.allow(&id("a")));
        assert!(throttle.allow(&id("b")));
    }

    #[test]
    fn verifications_without_a_candidate_share_one_bucket() {
        let throttle = Throttle::new(0.001, 3);
        assert!((0..3).all(|_| throttle.allow_no_candidate()));
        assert!(!throttle.allow_no_candidate());
        assert!(throttle.allow(&id("a")), "clients keep their own buckets");
        assert!(
            Throttle::new(0.0, 1).allow_no_candidate(),
            "a zero rate is off"
        );
    }

    #[test]
    fn a_zero_rate_never_throttles() {
        let throttle = Throttle::new(0.0, 1);
        assert!((0..100).all(|_| throttle.allow(&id("a"))));
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let throttle = Throttle::new(10.0, 1);
        assert!(throttle.allow(&id("a")));
        assert!(!throttle.allow(&id("a")), "the burst of one is spent");
        // One token comes back every 100 ms.
        std::thread::sleep(Duration::from_millis(150));
        assert!(throttle.allow(&id("a")));
    }
}
