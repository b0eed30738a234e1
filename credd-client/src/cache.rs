//! Valid verdicts, kept for a few seconds and forgotten as soon as credd's audit
//! trail reports a change to their org (WatchAuditEvents).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{Credd, Credentials, pb};

/// How many verdicts the cache holds at most.
pub const CAPACITY: usize = 10_000;
/// How long a verdict is kept while the watch is not following: a revocation
/// then takes at most this long to be honoured.
pub const UNWATCHED_TTL: Duration = Duration::from_secs(1);

/// A verdict worth keeping: the client is who it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The client's org.
    pub org_id: String,
    /// The secret that verified.
    pub secret_id: String,
}

#[derive(Debug)]
struct Entry {
    known: Known,
    until: Instant,
}

/// Valid verdicts by a digest of the credentials (the secret itself is never
/// kept).
#[derive(Debug)]
pub struct VerdictCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    /// Whether the watch follows credd's trail now (else entries live
    /// [`UNWATCHED_TTL`] at most).
    watching: AtomicBool,
    /// Bumped by every forgetting: a verdict asked for before one is not kept.
    epoch: AtomicU64,
}

fn key(credentials: &Credentials) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(credentials.client_id.as_bytes());
    digest.update([0]);
    digest.update(credentials.secret.as_bytes());
    digest.finalize().into()
}

impl VerdictCache {
    /// A cache keeping verdicts for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
            watching: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }

    /// The verdict kept for `credentials`, if still fresh.
    pub fn get(&self, credentials: &Credentials) -> Option<Known> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&key(credentials))?;
        (entry.until > Instant::now()).then(|| entry.known.clone())
    }

    /// The current epoch: read it before asking credd, pass it to
    /// [`VerdictCache::put`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Keeps a valid verdict asked for at `epoch`, unless something was
    /// forgotten since (the verdict may predate a revocation).
    pub fn put(&self, credentials: &Credentials, known: Known, epoch: u64) {
        let ttl = if self.watching.load(Ordering::Acquire) {
            self.ttl
        } else {
            self.ttl.min(UNWATCHED_TTL)
        };
        if ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Under the lock, which every forgetting takes too.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= CAPACITY {
            let now = Instant::now();
            entries.retain(|_, entry| entry.until > now);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(
            key(credentials),
            Entry {
                known,
                until: Instant::now() + ttl,
            },
        );
    }

    /// Forgets every verdict of `org_id`.
    pub fn forget_org(&self, org_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.retain(|_, entry| entry.known.org_id != org_id);
        }
    }

    /// Forgets everything (the watch lost track).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }

    /// How many verdicts are kept.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |entries| entries.len())
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the watch follows credd's trail now.
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Acquire)
    }
}

/// Follows credd's audit trail for as long as `cache` is used, forgetting the
/// verdicts of every org an event names. Reconnects after the last event seen;
/// while it cannot follow, verdicts are kept for [`UNWATCHED_TTL`] at most, and
/// everything is forgotten when it loses track.
pub(crate) async fn follow(credd: Credd, cache: std::sync::Weak<VerdictCache>) {
    let mut after = String::new();
    let mut warned = false;
    loop {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        let request = pb::WatchAuditEventsRequest {
            org_id: "-".into(),
            actions: Vec::new(),
            after: after.clone(),
        };
        match credd.audit().watch_audit_events(request).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                strong.watching.store(true, Ordering::Release);
                drop(strong);
                warned = false;
                loop {
                    let message = stream.message().await;
                    let Some(cache) = cache.upgrade() else {
                        return;
                    };
                    match message {
                        Ok(Some(event)) => {
                            if !event.org_id.is_empty() {
                                cache.forget_org(&event.org_id);
                            }
                            after = event.id;
                        }
                        Ok(None) | Err(_) => {
                            cache.watching.store(false, Ordering::Release);
                            // What changed until the reconnect is replayed after
                            // `after`; with no event seen there is no cursor.
                            if after.is_empty() {
                                cache.clear();
                            }
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                strong.watching.store(false, Ordering::Release);
                if status.code() == tonic::Code::InvalidArgument {
                    // The cursor is gone (another database?): start afresh.
                    after.clear();
                    strong.clear();
                }
                if !warned {
                    tracing::warn!(
                        code = ?status.code(),
                        message = status.message(),
                        "credd-client: cannot follow credd's audit trail; valid verdicts are kept {}s at most (the token needs audit:read)",
                        UNWATCHED_TTL.as_secs()
                    );
                    warned = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A cache and its follower task, started on the current tokio runtime.
pub(crate) fn watched(credd: &Credd, ttl: Duration) -> Arc<VerdictCache> {
    let cache = Arc::new(VerdictCache::new(ttl));
    tokio::spawn(follow(credd.clone(), Arc::downgrade(&cache)));
    cache
}
