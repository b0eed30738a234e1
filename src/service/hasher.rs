//! argon2id off the async threads: a fixed number of workers, each with its own
//! pre-allocated memory block, and a bounded wait queue.
//!
//! A hash acquires a permit (there are as many as configured workers) and takes a
//! memory block from the pool; the permit moves into the blocking task, so a
//! cancelled RPC cannot push more hashes than permits onto the blocking pool.
//! When more callers wait than the queue holds, the answer is `Overloaded`
//! (RESOURCE_EXHAUSTED), not an ever-growing backlog.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::{Error, domain::ids, metrics::METRICS};

const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

/// argon2id cost parameters and the size of the worker pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HasherConfig {
    /// Memory per hash, KiB (OWASP: 19456).
    pub m_kib: u32,
    /// Passes (OWASP: 2).
    pub t: u32,
    /// Lanes (OWASP: 1).
    pub p: u32,
    /// Hashes that run at once; each owns one memory block.
    pub workers: usize,
    /// Callers that may wait for a worker before the answer is RESOURCE_EXHAUSTED.
    pub queue: usize,
}

impl HasherConfig {
    /// OWASP's argon2id parameters with one worker per core.
    pub fn owasp() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            m_kib: 19_456,
            t: 2,
            p: 1,
            workers: cores,
            queue: 1024,
        }
    }

    fn params(&self) -> Result<Params, argon2::Error> {
        Params::new(self.m_kib, self.t, self.p, Some(OUTPUT_LEN))
    }

    /// Checks the parameters, naming the variable of the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.params().map(|_| ()).map_err(|err| {
            format!("CREDD_ARGON2_M_KIB / CREDD_ARGON2_T / CREDD_ARGON2_P are not valid argon2 parameters: {err}")
        })
    }
}

/// Hashes and verifies secrets with argon2id on a bounded worker pool.
#[derive(Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    permits: Arc<Semaphore>,
    blocks: Mutex<Vec<Vec<Block>>>,
    waiting: AtomicUsize,
    max_waiting: usize,
    computations: AtomicU64,
    /// A hash of a random secret, verified against when there is no real
    /// candidate, so that unknown clients cost the same as known ones.
    dummy_phc: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.inner.params)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// A pool per `config`; allocates every worker's memory block now.
    pub fn new(config: HasherConfig) -> Result<Self, String> {
        config.validate()?;
        let params = config.params().map_err(|err| err.to_string())?;
        let workers = config.workers.max(1);
        let blocks = (0..workers)
            .map(|_| vec![Block::default(); params.block_count()])
            .collect();
        METRICS.argon2_queue_capacity.set(config.queue as i64);
        let mut hasher = Self {
            inner: Arc::new(Inner {
                params,
                permits: Arc::new(Semaphore::new(workers)),
                blocks: Mutex::new(blocks),
                waiting: AtomicUsize::new(0),
                max_waiting: config.queue,
                computations: AtomicU64::new(0),
                dummy_phc: String::new(),
            }),
        };
        let dummy = SecretString::from(ids::ClientId::generate().into_string());
        let dummy_phc = hasher.run_hash(&dummy).map_err(|err| err.to_string())?;
        if let Some(inner) = Arc::get_mut(&mut hasher.inner) {
            inner.dummy_phc = dummy_phc;
        }
        Ok(hasher)
    }

    /// How many callers wait for a worker now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// How many argon2 computations ran since start (hashes and verifications).
    pub fn computations(&self) -> u64 {
        self.inner.computations.load(Ordering::Relaxed)
    }

    /// The PHC string of a fresh argon2id hash of `secret`.
    pub async fn hash(&self, secret: SecretString) -> Result<String, Error> {
        let this = self.clone();
        self.on_worker("argon2.hash", move || this.run_hash(&secret))
            .await
    }

    /// Whether `secret` matches `phc`. With `None`, verifies against a dummy hash
    /// (same cost) and answers false.
    pub async fn verify(&self, secret: SecretString, phc: Option<String>) -> Result<bool, Error> {
        let this = self.clone();
        self.on_worker("argon2.verify", move || match phc {
            Some(phc) => this.run_verify(&secret, &phc),
            None => this
                .run_verify(&secret, &this.inner.dummy_phc)
                .map(|_| false),
        })
        .await
    }

    /// Whether `phc` is not what this hasher would store today: argon2id with other
    /// parameters (or another algorithm) than the configured ones.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        parsed.algorithm != argon2::ARGON2ID_IDENT
            || Params::try_from(&parsed).map_or(true, |params| {
                (params.m_cost(), params.t_cost(), params.p_cost())
                    != (
                        self.inner.params.m_cost(),
                        self.inner.params.t_cost(),
                        self.inner.params.p_cost(),
                    )
            })
    }

    /// Runs `work` on the blocking pool once a worker is free, inside the caller's span.
    async fn on_worker<T: Send + 'static>(
        &self,
        name: &'static str,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let inner = &self.inner;
        // The place is given back when it drops: after the wait, or when the caller's
        // RPC is cancelled while waiting (a dropped future runs no code after its
        // `.await`, so a count lowered there would leak).
        let place = QueuePlace::take(inner).ok_or_else(|| {
            METRICS.argon2_rejected.inc();
            Error::Overloaded("too many secrets are waiting to be hashed; retry shortly")
        })?;
        let waited = std::time::Instant::now();
        let permit = inner
            .permits
            .clone()
            .acquire_owned()
            .instrument(tracing::info_span!("argon2.wait"))
            .await;
        drop(place);
        METRICS
            .argon2_queue_wait
            .observe(waited.elapsed().as_secs_f64());
        let permit = permit.map_err(|err| Error::Internal(Box::new(err)))?;
        let span = tracing::info_span!("argon2.work", op = name);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _in_flight = InFlight::start();
            span.in_scope(work)
        })
        .await
        .map_err(|err| Error::Internal(Box::new(err)))?
    }

    fn run_hash(&self, secret: &SecretString) -> Result<String, Error> {
        let salt: [u8; SALT_LEN] = ids::random_bytes();
        let mut out = [0u8; OUTPUT_LEN];
        self.compute(&self.inner.params, secret, &salt, &mut out)?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.inner.params).map_err(internal)?,
            salt: Some(Salt::new(&salt).map_err(internal)?),
            hash: Some(Output::new(&out).map_err(internal)?),
        };
        Ok(phc.to_string())
    }

    fn run_verify(&self, secret: &SecretString, phc: &str) -> Result<bool, Error> {
        let parsed = PasswordHash::new(phc).map_err(internal)?;
        if parsed.algorithm != argon2::ARGON2ID_IDENT {
            return Err(internal(format!(
                "stored hash uses {}, not argon2id",
                parsed.algorithm
            )));
        }
        let params = Params::try_from(&parsed).map_err(internal)?;
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return Err(internal("stored hash lacks its salt or output"));
        };
        let mut out = vec![0u8; expected.len()];
        self.compute(&params, secret, salt.as_ref(), &mut out)?;
        Ok(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
    }

    /// One argon2id computation with a pooled memory block (or a one-off block for
    /// a stored hash with larger parameters than today's).
    fn compute(
        &self,
        params: &Params,
        secret: &SecretString,
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        self.inner.computations.fetch_add(1, Ordering::Relaxed);
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let pwd = secret.expose_secret().as_bytes();
        let pooled = self.inner.blocks.lock().map_err(internal_poison)?.pop();
        match pooled {
            Some(mut blocks) if blocks.len() >= params.block_count() => {
                let result = argon2.hash_password_into_with_memory(pwd, salt, out, &mut blocks[..]);
                self.inner
                    .blocks
                    .lock()
                    .map_err(internal_poison)?
                    .push(blocks);
                result.map_err(internal)
            }
            other => {
                if let Some(blocks) = other {
                    self.inner
                        .blocks
                        .lock()
                        .map_err(internal_poison)?
                        .push(blocks);
                }
                let mut blocks = vec![Block::default(); params.block_count()];
                argon2
                    .hash_password_into_with_memory(pwd, salt, out, &mut blocks[..])
                    .map_err(internal)
            }
        }
    }
}

/// One caller's place in the argon2 wait queue, counted in `waiting` and the
/// `argon2_waiting` gauge for exactly as long as it lives.
struct QueuePlace<'a> {
    inner: &'a Inner,
}

impl<'a> QueuePlace<'a> {
    /// A place, or `None` when the queue is full.
    fn take(inner: &'a Inner) -> Option<Self> {
        if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.max_waiting {
            inner.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        METRICS.argon2_waiting.inc();
        Some(Self { inner })
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
        METRICS.argon2_waiting.dec();
    }
}

/// One running computation in the `argon2_in_flight` gauge, also if it panics.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        METRICS.argon2_in_flight.inc();
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.argon2_in_flight.dec();
    }
}

fn internal(err: impl std::fmt::Display) -> Error {
    Error::Internal(err.to_string().into())
}

fn internal_poison<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::Internal("argon2 memory pool lock poisoned".into())
}

/// How many argon2 jobs of write paths (imports, activations by plaintext) one
/// org may have at once: one tenant's admin cannot queue the shared pool full.
pub const WRITE_JOBS_PER_ORG: usize = 2;

/// Write-path argon2 jobs in flight, per org.
#[derive(Debug, Default)]
pub struct OrgHashSlots {
    in_flight: std::sync::Mutex<std::collections::HashMap<crate::domain::ids::OrgId, usize>>,
}

impl OrgHashSlots {
    /// A slot for one write-path argon2 job of `org_id`, given back when the
    /// guard drops (also when the RPC is cancelled mid-hash); RESOURCE_EXHAUSTED
    /// when the org already has [`WRITE_JOBS_PER_ORG`] running.
    pub fn take(
        self: &std::sync::Arc<Self>,
        org_id: &crate::domain::ids::OrgId,
    ) -> Result<OrgHashSlot, Error> {
        let mut in_flight = self
            .in_flight
            .lock()
            .map_err(|_| Error::Internal("hash slots lock poisoned".into()))?;
        let count = in_flight.entry(org_id.clone()).or_default();
        if *count >= WRITE_JOBS_PER_ORG {
            return Err(Error::Overloaded(
                "this org already has argon2 work of imports or activations running; retry shortly",
            ));
        }
        *count += 1;
        Ok(OrgHashSlot {
            slots: self.clone(),
            org_id: org_id.clone(),
        })
    }

    /// How many jobs `org_id` has running.
    pub fn in_flight(&self, org_id: &crate::domain::ids::OrgId) -> usize {
        self.in_flight
            .lock()
            .map(|m| m.get(org_id).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// One write-path argon2 job's slot; dropping it gives the slot back.
#[must_use = "the slot is given back when this is dropped"]
pub struct OrgHashSlot {
    slots: std::sync::Arc<OrgHashSlots>,
    org_id: crate::domain::ids::OrgId,
}

impl Drop for OrgHashSlot {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.slots.in_flight.lock()
            && let Some(count) = in_flight.get_mut(&self.org_id)
        {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.org_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_org_gets_two_write_slots_and_dropping_gives_them_back() {
        let slots = std::sync::Arc::new(OrgHashSlots::default());
        let (org, other) = (
            crate::domain::ids::OrgId::generate(),
            crate::domain::ids::OrgId::generate(),
        );
        let first = slots.take(&org).unwrap();
        let second = slots.take(&org).unwrap();
        assert!(matches!(slots.take(&org), Err(Error::Overloaded(_))));
        assert!(slots.take(&other).is_ok(), "another org is untouched");
        drop(first);
        let third = slots.take(&org).unwrap();
        drop((second, third));
        assert_eq!(slots.in_flight(&org), 0);
    }

    fn cheap() -> Hasher {
        Hasher::new(HasherConfig {
            m_kib: 64,
            t: 1,
            p: 1,
            workers: 2,
            queue: 4,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_secret_and_nothing_else() {
        let hasher = cheap();
        let phc = hasher
            .hash(SecretString::from("right-secret"))
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("right-secret"));
        assert!(
            hasher
                .verify("right-secret".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong-secret".into(), Some(phc))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("right-secret".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_are_due_for_a_rehash() {
        let old = Hasher::new(HasherConfig {
            m_kib: 128,
            t: 2,
            p: 1,
            workers: 1,
            queue: 4,
        })
        .unwrap();
        let hasher = cheap();
        let theirs = old.hash("s".into()).await.unwrap();
        let ours = hasher.hash("s".into()).await.unwrap();
        assert!(hasher.needs_rehash(&theirs));
        assert!(!hasher.needs_rehash(&ours));
        assert!(old.needs_rehash(&ours));
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        let old = Hasher::new(HasherConfig {
            m_kib: 128,
            t: 2,
            p: 1,
            workers: 1,
            queue: 4,
        })
        .unwrap();
        let phc = old.hash("s".into()).await.unwrap();
        assert!(cheap().verify("s".into(), Some(phc)).await.unwrap());
    }

    #[test]
    fn bad_parameters_are_refused_naming_the_variables() {
        let err = Hasher::new(HasherConfig {
            m_kib: 1,
            t: 0,
            p: 1,
            workers: 1,
            queue: 1,
        })
        .unwrap_err();
        assert!(err.contains("CREDD_ARGON2_M_KIB"), "{err}");
    }

    /// One worker slow enough for callers to queue behind it, and a queue of 2.
    fn one_slow_worker() -> Hasher {
        Hasher::new(HasherConfig {
            m_kib: 8192,
            t: 4,
            p: 1,
            workers: 1,
            queue: 2,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn callers_past_the_queue_bound_are_told_to_retry() {
        let hasher = one_slow_worker();
        let calls: Vec<_> = (0..12)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash("s".into()).await })
            })
            .collect();
        let mut overloaded = 0;
        for call in calls {
            if let Err(Error::Overloaded(_)) = call.await.unwrap() {
                overloaded += 1;
            }
        }
        assert!(
            overloaded > 0,
            "12 hashes on 1 worker with a queue of 2 must refuse some"
        );
    }

    #[tokio::test]
    async fn callers_cancelled_while_waiting_give_their_place_back() {
        let hasher = one_slow_worker();
        let busy = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.hash("s".into()).await }
        });
        while hasher.inner.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // More cancelled waiters than the queue holds: a deadline passes while they
        // wait for the one busy worker.
        for _ in 0..5 {
            let waiting =
                tokio::time::timeout(std::time::Duration::from_millis(1), hasher.hash("s".into()))
                    .await;
            assert!(waiting.is_err(), "the worker is busy: the wait times out");
        }
        assert_eq!(
            hasher.waiting(),
            0,
            "every cancelled waiter gave its place back"
        );
        busy.await.unwrap().unwrap();
        hasher
            .hash("s".into())
            .await
            .expect("the queue is not full of ghosts");
    }
}
