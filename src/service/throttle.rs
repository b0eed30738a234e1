//! A token bucket per client ID on cold (argon2) verifications, so that one client
//! hammering wrong or uncached secrets cannot take every argon2 worker from the rest.

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

/// Per-client token buckets; a rate of zero turns throttling off.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<ClientId, Bucket>>,
}

impl Throttle {
    /// `rate` cold verifications a second per client, bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
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
        let bucket = buckets.entry(client_id.clone()).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
            logged: None,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.refilled).as_secs_f64() * self.rate)
            .min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return true;
        }
        METRICS.verify_throttled.inc();
        if bucket
            .logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            bucket.logged = Some(now);
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
