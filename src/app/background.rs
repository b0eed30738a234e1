//! The tasks that run beside the gRPC server: one function per task, each ending
//! on the shared [`Stop`] signal and doing its last work then (a final flush), so
//! that nothing is lost at shutdown.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    metrics::{METRICS, PoolLabels},
    service::{VerifyService, callers::Authenticator, verify_cache::VerifyCache},
    store::{
        Store,
        changes::{ChangeFeed, parse_notification},
    },
};

/// How often health checks the store, and how long one check may take.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read of the change feed (the counter, or opening the LISTEN
/// connection) may take before the feed counts as unreadable.
const FEED_TIMEOUT: Duration = Duration::from_secs(2);
/// The most change-log entries one poll reads; a poll that finds more forgets
/// everything rather than fall behind.
const CHANGE_BATCH: u64 = 1000;
/// How long change-log entries are kept, and how often old ones are deleted.
const CHANGE_LOG_KEEP: Duration = Duration::from_secs(3600);
const CHANGE_LOG_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long the tasks get for their last work at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The stop signal every background task watches.
#[derive(Clone)]
pub(super) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Completes once shutdown has begun.
    async fn requested(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps for `every`; `false` when shutdown began meanwhile.
    async fn sleep(&mut self, every: Duration) -> bool {
        tokio::select! {
            () = self.requested() => false,
            () = tokio::time::sleep(every) => true,
        }
    }
}

/// The running background tasks.
pub(super) struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// No tasks yet.
    pub(super) fn new() -> Self {
        Self {
            stop: watch::Sender::new(false),
            tasks: Vec::new(),
        }
    }

    /// Starts `task`, handing it the stop signal.
    pub(super) fn spawn<F>(&mut self, task: impl FnOnce(Stop) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = Stop(self.stop.subscribe());
        self.tasks.push(tokio::spawn(task(stop)));
    }

    /// Signals every task to stop and waits for their last work, up to a bound;
    /// what has not finished by then is aborted.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks;
        let all = async {
            for task in &mut tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
            tracing::warn!("background tasks did not finish their last work in time");
            for task in &tasks {
                task.abort();
            }
        }
    }
}

/// Reloads caller tokens every couple of seconds (revocations take effect within
/// that) and records their last use about once a minute, and once more at stop.
pub(super) async fn refresh_callers(
    authenticator: Arc<Authenticator>,
    store: Store,
    mut stop: Stop,
) {
    let mut ticks = 0u32;
    while stop.sleep(crate::service::callers::REFRESH_EVERY).await {
        if let Err(err) = authenticator.reload(&store).await {
            tracing::warn!(error = %err, "could not reload caller tokens; keeping the last known set");
        }
        ticks += 1;
        if ticks.is_multiple_of(30) {
            flush_token_use(&authenticator, &store).await;
        }
    }
    flush_token_use(&authenticator, &store).await;
}

async fn flush_token_use(authenticator: &Authenticator, store: &Store) {
    if let Err(err) = authenticator.flush_last_used(store).await {
        tracing::warn!(error = %err, "could not record caller tokens' last use");
    }
}

/// Writes the failed-verification counts to the audit trail once a minute, and
/// once more at stop.
pub(super) async fn flush_failed_verifications(verifier: VerifyService, mut stop: Stop) {
    while stop.sleep(Duration::from_secs(60)).await {
        verifier.flush_failed_verifications().await;
    }
    verifier.flush_failed_verifications().await;
}

/// Sums up refused verifications in the log every few seconds, and once more at
/// stop.
pub(super) async fn flush_refusal_log(verifier: VerifyService, mut stop: Stop) {
    while stop.sleep(crate::service::verify::REFUSAL_LOG_EVERY).await {
        verifier.flush_refusal_log();
    }
    verifier.flush_refusal_log();
}

/// Keeps health truthful: every service and "" are SERVING only while the store
/// answers a ping within the timeout (and until shutdown begins, which the server
/// reports itself).
pub(super) async fn probe_store(
    store: Store,
    health: HealthReporter,
    draining: Arc<AtomicBool>,
    cache: Arc<VerifyCache>,
    mut stop: Stop,
) {
    let mut serving = true;
    METRICS.store_up.set(1);
    record_pool(&store);
    while stop.sleep(PROBE_EVERY).await {
        let answered = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await,
            Ok(Ok(()))
        );
        record_pool(&store);
        METRICS.store_up.set(i64::from(answered));
        if draining.load(Ordering::SeqCst) || answered == serving {
            continue;
        }
        serving = answered;
        if serving {
            tracing::info!("store answers again: health SERVING");
            super::set_status(&health, ServingStatus::Serving).await;
        } else {
            tracing::warn!("store does not answer: health NOT_SERVING until it does");
            // Changes made meanwhile cannot reach us: cached verdicts go too.
            cache.clear();
            super::set_status(&health, ServingStatus::NotServing).await;
        }
        METRICS.serving.set(i64::from(serving));
    }
}

/// Sets the pool gauges from the store's connection pool.
fn record_pool(store: &Store) {
    let (open, idle) = store.pool_stats();
    METRICS
        .db_pool
        .get_or_create(&PoolLabels {
            state: "idle".into(),
        })
        .set(idle as i64);
    METRICS
        .db_pool
        .get_or_create(&PoolLabels {
            state: "in_use".into(),
        })
        .set(i64::from(open) - idle as i64);
}

/// Serves the Prometheus text exposition at /metrics until stop.
pub(super) async fn serve_metrics(listener: TcpListener, mut stop: Stop) {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                METRICS.render(),
            )
        }),
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.requested().await })
        .await;
    if let Err(err) = served {
        tracing::warn!(error = %err, "the metrics endpoint stopped");
    }
}

/// Serves grpc.health.v1 alone, in plaintext, for probes that cannot speak TLS,
/// with the same statuses as the main port, until stop.
pub(super) async fn serve_health(listener: TcpListener, health: HealthReporter, mut stop: Stop) {
    let service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health),
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move { stop.requested().await })
        .await;
    if let Err(err) = served {
        tracing::warn!(error = %err, "the health port stopped");
    }
}

/// Keeps the verdict cache true to changes other processes make: PostgreSQL
/// notifications name the org to forget at once; and on every backend the change
/// counter, polled every `poll_every`, says when the change log has new entries,
/// whose orgs are forgotten — only those — so even a notification connection that
/// died silently delays an invalidation by at most one poll. Everything is
/// forgotten only when the feed cannot be read.
pub(super) async fn follow_changes(
    store: Store,
    cache: Arc<VerifyCache>,
    poll_every: Duration,
    stop: Stop,
) {
    tokio::join!(
        poll_changes(store.clone(), cache.clone(), poll_every, stop.clone()),
        listen_for_changes(store, cache, stop)
    );
}

/// `read`, given up after [`FEED_TIMEOUT`].
fn bounded<F: Future>(read: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(FEED_TIMEOUT, read)
}

async fn poll_changes(store: Store, cache: Arc<VerifyCache>, every: Duration, mut stop: Stop) {
    let start = async {
        let version = store.change_version().await?;
        let last = store.last_change().await?;
        Ok::<_, crate::Error>((version, last))
    };
    let (mut version, mut cursor) = match bounded(start).await {
        Ok(Ok((version, last))) => (Some(version), last),
        _ => (None, 0),
    };
    // A verdict cached before the read above might belong to a change it counted.
    cache.clear();
    // Log entries read ahead of the counter (committed between the two reads).
    let mut ahead: i64 = 0;
    let mut unreadable = false;
    let prune_every = (CHANGE_LOG_PRUNE_EVERY.as_millis() / every.as_millis().max(1)).max(1);
    let mut polls: u128 = 0;
    while stop.sleep(every).await {
        polls += 1;
        let read: Result<(), String> = async {
            let now = match bounded(store.change_version()).await {
                Ok(Ok(now)) => now,
                Ok(Err(err)) => return Err(err.to_string()),
                Err(_) => return Err(format!("no answer within {FEED_TIMEOUT:?}")),
            };
            if Some(now) == version && ahead == 0 {
                return Ok(());
            }
            let changes = match bounded(store.changes_after(cursor, CHANGE_BATCH)).await {
                Ok(Ok(changes)) => changes,
                Ok(Err(err)) => return Err(err.to_string()),
                Err(_) => return Err(format!("no answer within {FEED_TIMEOUT:?}")),
            };
            // Forget exactly the orgs that changed; this process's own changes were
            // applied when it made them.
            for change in changes.iter().filter(|c| c.origin != store.origin()) {
                cache.forget_org(&change.org_id);
            }
            cursor = changes.last().map_or(cursor, |c| c.seq);
            // Every announcement bumps the counter once and writes one entry. More
            // bumps than entries: changes this process cannot name (an older replica
            // during a rolling deploy, which writes no entries, or more entries than
            // one batch) — forget everything. Entries ahead of the counter are
            // counted on the next poll.
            let bumps = version.map_or(i64::MAX, |version| now - version);
            ahead += changes.len() as i64 - bumps;
            if ahead < 0 || changes.len() as u64 == CHANGE_BATCH {
                cache.clear();
                ahead = 0;
            }
            version = Some(now);
            Ok(())
        }
        .await;
        match read {
            Ok(()) if unreadable => {
                tracing::info!("the change feed answers again");
                unreadable = false;
            }
            Ok(()) => {}
            // An error, or no answer in time (a hung connection must not stop
            // invalidation silently): what changed meanwhile is unknown.
            Err(error) => {
                cache.clear();
                version = None;
                ahead = 0;
                if !unreadable {
                    tracing::warn!(%error, "cannot read the change feed: forgetting every cached verification until it answers");
                    unreadable = true;
                }
            }
        }
        if polls.is_multiple_of(prune_every) {
            let before = chrono::Utc::now()
                - chrono::Duration::from_std(CHANGE_LOG_KEEP).unwrap_or(chrono::Duration::hours(1));
            match bounded(store.prune_changes(before)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::debug!(error = %err, "could not prune the change log"),
                Err(_) => tracing::debug!("pruning the change log timed out"),
            }
        }
    }
}

async fn listen_for_changes(store: Store, cache: Arc<VerifyCache>, mut stop: Stop) {
    loop {
        let feed = tokio::select! {
            () = stop.requested() => return,
            feed = tokio::time::timeout(FEED_TIMEOUT, store.change_feed()) => {
                feed.unwrap_or_else(|_| Err(crate::Error::Unavailable(
                    format!("no LISTEN connection within {FEED_TIMEOUT:?}").into(),
                )))
            }
        };
        match feed {
            Ok(ChangeFeed::Notifications(mut listener)) => {
                // Whatever changed while nobody listened is unknown.
                cache.clear();
                loop {
                    let received = tokio::select! {
                        () = stop.requested() => return,
                        received = listener.try_recv() => received,
                    };
                    match received {
                        Ok(Some(notification)) => {
                            match parse_notification(notification.payload()) {
                                Some((origin, _)) if origin == store.origin() => {}
                                Some((_, org_id)) => cache.forget_org(&org_id),
                                None => {
                                    tracing::warn!(
                                        "unreadable change notification: forgetting every cached verification"
                                    );
                                    cache.clear();
                                }
                            }
                        }
                        Ok(None) => {
                            tracing::warn!(
                                "change notifications interrupted: forgetting every cached verification"
                            );
                            cache.clear();
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "change notifications lost: forgetting every cached verification");
                            cache.clear();
                            break;
                        }
                    }
                }
            }
            Ok(ChangeFeed::CounterOnly) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for changes: forgetting every cached verification");
                cache.clear();
            }
        }
        if !stop.sleep(Duration::from_secs(1)).await {
            return;
        }
    }
}
