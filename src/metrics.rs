//! Prometheus metrics: one process-wide registry, rendered as text on
//! `CREDD_METRICS_LISTEN` (off when unset).

use std::sync::{
    Arc, LazyLock, OnceLock,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text::encode},
    metrics::{
        MetricType, TypedMetric, counter::Counter, family::Family, gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

/// An RPC and the gRPC status code it answered. Both come from fixed sets (the
/// methods credd serves, or `unknown`), never from what a caller sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/package.Service/Method`, or `unknown`.
    pub method: &'static str,
    /// The gRPC status code name (`OK`, `INVALID_ARGUMENT`, …).
    pub code: &'static str,
}

/// An RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `/package.Service/Method`, or `unknown`.
    pub method: &'static str,
}

/// A verification outcome: `valid`, or the reason it was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `valid`, `mismatch`, `unknown`, `bad_checksum`, … (a fixed set).
    pub outcome: &'static str,
}

/// An org (only orgs that exist: the set is bounded by the orgs an admin made,
/// never by what a caller sends).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrgLabels {
    /// The org's id.
    pub org_id: String,
}

/// A verify cache lookup result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// A kind of database error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `unavailable` or `other`.
    pub kind: String,
}

/// Pool connection states.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `idle` or `in_use`.
    pub state: String,
}

/// Every metric credd exports.
pub struct Metrics {
    registry: Registry,
    /// RPCs by method and status code.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// RPC latency by method, seconds.
    pub rpc_duration: Family<MethodLabels, AtomicHistogram, fn() -> AtomicHistogram>,
    /// Verifications by outcome.
    pub verify_outcomes: Family<OutcomeLabels, Counter>,
    /// Verify cache lookups by result.
    pub verify_cache: Family<CacheLabels, Counter>,
    /// Refused verifications of an existing client, by its org.
    pub verify_failures: Family<OrgLabels, Counter>,
    /// ACTIVE or RETIRING secrets that stop verifying within CREDD_EXPIRY_WARNING,
    /// by org.
    pub secrets_expiring: Family<OrgLabels, Gauge>,
    /// Secret ends (expiries, grace ends) the sweeper stored.
    pub secrets_ended: Counter,
    /// Verifications refused by the per-client throttle.
    pub verify_throttled: Counter,
    /// argon2 computations running now.
    pub argon2_in_flight: Gauge,
    /// Callers waiting for an argon2 worker now.
    pub argon2_waiting: Gauge,
    /// Time spent waiting for an argon2 worker, seconds.
    pub argon2_queue_wait: Histogram,
    /// Hashes refused because the wait queue was full.
    pub argon2_rejected: Counter,
    /// Callers the argon2 queue holds at most (CREDD_ARGON2_QUEUE).
    pub argon2_queue_capacity: Gauge,
    /// 1 while the store answers the health probe, 0 otherwise.
    pub store_up: Gauge,
    /// Database errors by kind.
    pub db_errors: Family<KindLabels, Counter>,
    /// Pooled database connections by state.
    pub db_pool: Family<PoolLabels, Gauge>,
    /// 1 while health reports SERVING, 0 otherwise.
    pub serving: Gauge,
    /// Resident memory of the process, bytes.
    pub resident_memory: Gauge,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("credd");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_duration = Family::<MethodLabels, AtomicHistogram>::new_with_constructor(
            (|| AtomicHistogram::new(latency_buckets())) as fn() -> AtomicHistogram,
        );
        let verify_outcomes = Family::<OutcomeLabels, Counter>::default();
        let verify_cache = Family::<CacheLabels, Counter>::default();
        let verify_failures = Family::<OrgLabels, Counter>::default();
        let secrets_expiring = Family::<OrgLabels, Gauge>::default();
        let secrets_ended = Counter::default();
        let argon2_queue_capacity = Gauge::default();
        let store_up = Gauge::default();
        let verify_throttled = Counter::default();
        let argon2_in_flight = Gauge::default();
        let argon2_waiting = Gauge::default();
        let argon2_queue_wait = Histogram::new(latency_buckets());
        let argon2_rejected = Counter::default();
        let db_errors = Family::<KindLabels, Counter>::default();
        let db_pool = Family::<PoolLabels, Gauge>::default();
        let serving = Gauge::default();
        let resident_memory = Gauge::default();
        registry.register(
            "rpc_requests",
            "RPCs by method and gRPC status code",
            rpc_requests.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "RPC latency by method",
            rpc_duration.clone(),
        );
        registry.register(
            "verify_outcomes",
            "Client secret verifications by outcome",
            verify_outcomes.clone(),
        );
        registry.register(
            "verify_cache_lookups",
            "Verify cache lookups by result",
            verify_cache.clone(),
        );
        registry.register(
            "verify_failures",
            "Refused verifications of an existing client, by org",
            verify_failures.clone(),
        );
        registry.register(
            "secrets_expiring",
            "ACTIVE or RETIRING secrets that stop verifying within CREDD_EXPIRY_WARNING, by org",
            secrets_expiring.clone(),
        );
        registry.register(
            "secrets_ended",
            "Secret expiries and grace ends the sweeper stored",
            secrets_ended.clone(),
        );
        registry.register(
            "argon2_queue_capacity",
            "Callers the argon2 wait queue holds at most",
            argon2_queue_capacity.clone(),
        );
        registry.register(
            "store_up",
            "1 while the store answers the health probe",
            store_up.clone(),
        );
        registry.register(
            "verify_throttled",
            "Verifications refused by the per-client throttle",
            verify_throttled.clone(),
        );
        registry.register(
            "argon2_in_flight",
            "argon2 computations running now",
            argon2_in_flight.clone(),
        );
        registry.register(
            "argon2_waiting",
            "Callers waiting for an argon2 worker now",
            argon2_waiting.clone(),
        );
        registry.register(
            "argon2_queue_wait_seconds",
            "Time waited for an argon2 worker",
            argon2_queue_wait.clone(),
        );
        registry.register(
            "argon2_rejected",
            "Hashes refused because the wait queue was full",
            argon2_rejected.clone(),
        );
        registry.register("db_errors", "Database errors by kind", db_errors.clone());
        registry.register(
            "db_pool_connections",
            "Pooled database connections by state",
            db_pool.clone(),
        );
        registry.register("serving", "1 while health reports SERVING", serving.clone());
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            resident_memory.clone(),
        );
        // Every label set whose values are known in advance exists from the start at
        // zero, so that rates and alerts see a series before the first event.
        for kind in ["unavailable", "other"] {
            drop(db_errors.get_or_create(&KindLabels { kind: kind.into() }));
        }
        for result in ["hit", "miss"] {
            drop(verify_cache.get_or_create(&CacheLabels { result }));
        }
        for state in ["idle", "in_use"] {
            drop(db_pool.get_or_create(&PoolLabels {
                state: state.into(),
            }));
        }
        Self {
            registry,
            rpc_requests,
            rpc_duration,
            verify_outcomes,
            verify_cache,
            verify_failures,
            secrets_expiring,
            secrets_ended,
            argon2_queue_capacity,
            store_up,
            verify_throttled,
            argon2_in_flight,
            argon2_waiting,
            argon2_queue_wait,
            argon2_rejected,
            db_errors,
            db_pool,
            serving,
            resident_memory,
        }
    }

    /// The text exposition of every metric, with process memory read now.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// A latency histogram whose observations are a few relaxed atomic additions:
/// prometheus-client's own `Histogram` takes a write lock on every observation,
/// which every RPC would contend for.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, the last one `f64::MAX` (+Inf).
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative).
    counts: Vec<AtomicU64>,
    /// Sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (seconds), plus +Inf.
    pub fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.collect();
        bounds.push(f64::MAX);
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                counts,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let inner = &self.inner;
        let bucket = inner
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(inner.bounds.len() - 1);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner
            .sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .zip(&inner.counts)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The names of the gRPC status codes, by their number.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// One RPC method's series, resolved once: observing an answer costs no label
/// allocation, no hashing and no lock. A code's counter is created on its first
/// answer, so that /metrics lists only the codes a method gave.
pub struct RpcSeries {
    method: &'static str,
    duration: AtomicHistogram,
    requests: [OnceLock<Counter>; 17],
}

impl RpcSeries {
    /// The series of `method` (one of the methods served, or `unknown`).
    pub fn new(method: &'static str) -> Self {
        Self {
            method,
            duration: METRICS
                .rpc_duration
                .get_or_create(&MethodLabels { method })
                .clone(),
            requests: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Records one answer with gRPC status `code` (its number) after `seconds`.
    pub fn observe(&self, code: usize, seconds: f64) {
        let code = code.min(CODE_NAMES.len() - 1);
        self.requests[code]
            .get_or_init(|| {
                METRICS
                    .rpc_requests
                    .get_or_create(&RpcLabels {
                        method: self.method,
                        code: CODE_NAMES[code],
                    })
                    .clone()
            })
            .inc();
        self.duration.observe(seconds);
    }
}

/// Resident set size from /proc (Linux); `None` elsewhere.
fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
