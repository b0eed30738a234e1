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
    service::{
        VerifyService, callers::Authenticator, directory::Directory, verify_cache::VerifyCache,
    },
    store::{
        Store,
        changes::{ChangeFeed, FeedPosition, parse_notification},
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

/// Writes the failed-verification counts and the refused calls to the audit
/// trail once a minute (`verify.failed` per org, `auth.refused` per caller), and
/// once more at stop.
pub(super) async fn flush_failed_verifications(
    verifier: VerifyService,
    refusals: Arc<crate::service::audit::RefusalTally>,
    store: Store,
    clock: Arc<dyn crate::service::Clock>,
    mut stop: Stop,
) {
    while stop.sleep(Duration::from_secs(60)).await {
        verifier.flush_failed_verifications().await;
        refusals.flush(&store, clock.now()).await;
    }
    verifier.flush_failed_verifications().await;
    refusals.flush(&store, clock.now()).await;
}

/// Reads the audit trail's new events for WatchAuditEvents, in commit order,
/// every [`TAIL_EVERY`](crate::service::events::TAIL_EVERY).
pub(super) async fn follow_audit(feed: crate::service::events::AuditFeed, mut stop: Stop) {
    let mut failing = false;
    while stop.sleep(crate::service::events::TAIL_EVERY).await {
        match tokio::time::timeout(FEED_TIMEOUT, feed.poll()).await {
            Ok(Ok(_)) => {
                if failing {
                    tracing::info!("audit trail readable again: watchers follow");
                }
                failing = false;
            }
            Ok(Err(err)) if !failing => {
                tracing::warn!(error = %err, "cannot read the audit trail; watchers wait");
                failing = true;
            }
            Err(_) if !failing => {
                tracing::warn!("reading the audit trail timed out; watchers wait");
                failing = true;
            }
            _ => {}
        }
    }
}

/// Sums up refused verifications and redirect checks in the log every few seconds, and once more at
/// stop.
pub(super) async fn flush_refusal_log(
    verifier: VerifyService,
    apps: crate::service::AppService,
    mut stop: Stop,
) {
    while stop.sleep(crate::service::verify::REFUSAL_LOG_EVERY).await {
        verifier.flush_refusal_log();
        apps.flush_refusal_log();
    }
    verifier.flush_refusal_log();
    apps.flush_refusal_log();
}

/// Keeps health truthful. Each credd service is SERVING only while the store
/// answers a ping within the timeout: the truth, for alerts and for clients that
/// need writes. The overall status `""` (what a readiness probe asks) stays
/// SERVING while credd can answer from memory — the directory is loaded and
/// within `CREDD_STALE_IF_ERROR` of its last good read — so that a shared
/// database's failover does not take every replica out of its Service at once.
/// From shutdown on the server reports NOT_SERVING itself.
pub(super) async fn probe_store(
    store: Store,
    health: HealthReporter,
    draining: Arc<AtomicBool>,
    directory: Arc<Directory>,
    mut stop: Stop,
) {
    let (mut store_serving, mut ready) = (true, true);
    METRICS.store_up.set(1);
    record_pool(&store);
    while stop.sleep(PROBE_EVERY).await {
        let answered = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await,
            Ok(Ok(()))
        );
        record_pool(&store);
        METRICS.store_up.set(i64::from(answered));
        if draining.load(Ordering::SeqCst) {
            continue;
        }
        if answered != store_serving {
            store_serving = answered;
            let status = if answered {
                tracing::info!("store answers again: every service SERVING");
                ServingStatus::Serving
            } else {
                tracing::warn!(
                    "store does not answer: every service NOT_SERVING until it does; readiness (\"\") follows the in-memory directory"
                );
                ServingStatus::NotServing
            };
            super::set_services_status(&health, status).await;
        }
        let serviceable = directory.serviceable();
        if serviceable != ready {
            ready = serviceable;
            let status = if ready {
                tracing::info!("the directory answers again: readiness (\"\") SERVING");
                ServingStatus::Serving
            } else {
                tracing::warn!(
                    "the directory is older than CREDD_STALE_IF_ERROR: readiness (\"\") NOT_SERVING"
                );
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            METRICS.serving.set(i64::from(ready));
        }
    }
}

/// How often the expiring-secrets gauge is read again.
const EXPIRING_EVERY: Duration = Duration::from_secs(30);

/// Stores the ends of secrets as they pass (expiries of pending and active
/// secrets, grace ends), every `every`, with their audit events; and keeps the
/// `credd_secrets_expiring` gauge per org. Ends are also judged at verify time to
/// the second, so a late sweep never lets an expired secret verify: the sweep
/// is what makes them visible to lists, the trail and other replicas' caches.
pub(super) async fn sweep_secrets(
    store: Store,
    clock: Arc<dyn crate::service::Clock>,
    every: Duration,
    warning: Duration,
    mut stop: Stop,
) {
    let actor = crate::domain::caller::Actor::internal("credd");
    let warning = chrono::Duration::from_std(warning).unwrap_or(chrono::Duration::days(14));
    let mut last_gauge: Option<std::time::Instant> = None;
    let mut gauged: std::collections::HashSet<crate::domain::ids::OrgId> = Default::default();
    while stop.sleep(every).await {
        let now = clock.now();
        match tokio::time::timeout(FEED_TIMEOUT * 5, store.sweep_secret_ends(now, 500, &actor))
            .await
        {
            Ok(Ok(ended)) => {
                for end in &ended {
                    tracing::info!(org_id = %end.org_id, secret_id = %end.secret_id, from = end.from.as_str(), to = end.to.as_str(), "client secret ended");
                }
                METRICS.secrets_ended.inc_by(ended.len() as u64);
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "could not sweep secret ends; the next sweep will")
            }
            Err(_) => tracing::debug!("sweeping secret ends timed out"),
        }
        match tokio::time::timeout(
            FEED_TIMEOUT * 5,
            store.announce_expiring(now, now + warning, 500, &actor),
        )
        .await
        {
            Ok(Ok(announced)) => {
                for (org_id, secret_id) in &announced {
                    tracing::info!(%org_id, %secret_id, "client secret expiring within CREDD_EXPIRY_WARNING");
                }
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "could not announce expiring secrets; the next sweep will")
            }
            Err(_) => tracing::debug!("announcing expiring secrets timed out"),
        }
        if last_gauge.is_some_and(|at| at.elapsed() < EXPIRING_EVERY) {
            continue;
        }
        last_gauge = Some(std::time::Instant::now());
        if let Ok(Ok(counts)) =
            tokio::time::timeout(FEED_TIMEOUT * 5, store.expiring_by_org(now, now + warning)).await
        {
            let mut seen = std::collections::HashSet::new();
            for (org_id, count) in counts {
                METRICS
                    .secrets_expiring
                    .get_or_create(&crate::metrics::OrgLabels {
                        org_id: org_id.as_str().to_owned(),
                    })
                    .set(count as i64);
                seen.insert(org_id);
            }
            // An org with nothing expiring (or deleted) leaves the family: no
            // series per org that ever had a secret.
            for org_id in gauged.difference(&seen) {
                METRICS.secrets_expiring.remove(&crate::metrics::OrgLabels {
                    org_id: org_id.as_str().to_owned(),
                });
            }
            gauged = seen;
        }
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

/// What [`follow_changes`] keeps current, and from where.
pub(super) struct Follow {
    /// The store whose change feed is read.
    pub store: Store,
    /// The verdict cache, whose changed orgs are forgotten.
    pub cache: Arc<VerifyCache>,
    /// The directory, whose changed orgs are read again.
    pub directory: Arc<Directory>,
    /// How often the change counter is polled.
    pub poll_every: Duration,
    /// Where the feed stood before the directory was loaded.
    pub start: FeedPosition,
}

/// Keeps the directory and the verdict cache true to changes: PostgreSQL
/// notifications name the org to read again at once; and on every backend the
/// change counter, polled every `poll_every`, says when the change log has new
/// entries, whose orgs — only those — are read again and forgotten, so even a
/// notification connection that died silently delays a change by at most one
/// poll. Everything is read again only when the log cannot name what changed.
/// While the feed cannot be read, nothing is dropped: the directory answers what
/// it holds for `CREDD_STALE_IF_ERROR`, and when the feed answers again the
/// changes made meanwhile are applied before it answers in full.
pub(super) async fn follow_changes(follow: Follow, stop: Stop) {
    let listen = (
        follow.store.clone(),
        follow.cache.clone(),
        follow.directory.clone(),
    );
    tokio::join!(
        poll_changes(follow, stop.clone()),
        listen_for_changes(listen.0, listen.1, listen.2, stop)
    );
}

/// `read`, given up after [`FEED_TIMEOUT`].
async fn bounded<T>(read: impl Future<Output = Result<T, crate::Error>>) -> Result<T, String> {
    match tokio::time::timeout(FEED_TIMEOUT, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {FEED_TIMEOUT:?}")),
    }
}

async fn poll_changes(follow: Follow, mut stop: Stop) {
    let Follow {
        store,
        cache,
        directory,
        poll_every: every,
        start,
    } = follow;
    let (mut version, mut cursor) = (start.version, start.last_seq);
    // Log entries read ahead of the counter (committed between the two reads).
    let mut ahead: i64 = 0;
    let mut unreadable = false;
    let prune_every = (CHANGE_LOG_PRUNE_EVERY.as_millis() / every.as_millis().max(1)).max(1);
    let mut polls: u128 = 0;
    while stop.sleep(every).await {
        polls += 1;
        let read: Result<(), String> = async {
            let now = bounded(store.change_version()).await?;
            if now == version && ahead == 0 {
                return Ok(());
            }
            let changes = bounded(store.changes_after(cursor, CHANGE_BATCH)).await?;
            // Every announcement bumps the counter once and writes one entry. More
            // bumps than entries: changes this process cannot name (an older replica
            // during a rolling deploy, which writes no entries; more entries than
            // one batch; entries pruned during a long outage) — read everything
            // again. Entries ahead of the counter are counted on the next poll.
            let named = ahead + changes.len() as i64 - (now - version);
            if named < 0 || changes.len() as u64 == CHANGE_BATCH {
                tracing::warn!(
                    entries = changes.len(),
                    "the change feed cannot name what changed: reading every org again and forgetting every cached verdict"
                );
                let position = bounded(store.feed_position()).await?;
                directory
                    .reload_all()
                    .await
                    .map_err(|err| err.to_string())?;
                cache.clear();
                (version, cursor, ahead) = (position.version, position.last_seq, 0);
                return Ok(());
            }
            // Read exactly the orgs that changed, this process's own among them (its
            // own read after writing may have failed, or its RPC been cancelled),
            // then forget their cached verdicts — in that order, so that no
            // verification in between caches the old state. The position moves
            // only once all of them are applied.
            let mut orgs: Vec<&crate::domain::ids::OrgId> =
                changes.iter().map(|c| &c.org_id).collect();
            orgs.sort_unstable();
            orgs.dedup();
            for org_id in orgs {
                bounded(directory.reload_org(org_id)).await?;
            }
            for change in &changes {
                if change.origin == store.origin() {
                    cache.forget_verdicts(&change.org_id);
                } else {
                    cache.forget_org(&change.org_id);
                }
            }
            cursor = changes.last().map_or(cursor, |c| c.seq);
            (version, ahead) = (now, named);
            Ok(())
        }
        .await;
        directory.feed_read(read.is_ok());
        match read {
            Ok(()) if unreadable => {
                tracing::info!("the change feed answers again; what changed meanwhile is applied");
                unreadable = false;
            }
            Ok(()) => {}
            Err(error) => {
                if !unreadable {
                    tracing::warn!(%error, "cannot read the change feed: answering from memory what it holds, for CREDD_STALE_IF_ERROR at most");
                    unreadable = true;
                }
            }
        }
        if polls.is_multiple_of(prune_every) {
            let before = chrono::Utc::now()
                - chrono::Duration::from_std(CHANGE_LOG_KEEP).unwrap_or(chrono::Duration::hours(1));
            match bounded(store.prune_changes(before)).await {
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "could not prune the change log"),
            }
        }
    }
}

async fn listen_for_changes(
    store: Store,
    cache: Arc<VerifyCache>,
    directory: Arc<Directory>,
    mut stop: Stop,
) {
    loop {
        let feed = tokio::select! {
            () = stop.requested() => return,
            feed = bounded(store.change_feed()) => feed,
        };
        match feed {
            Ok(ChangeFeed::Notifications(mut listener)) => loop {
                let received = tokio::select! {
                    () = stop.requested() => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) => match parse_notification(notification.payload()) {
                        Some((origin, _)) if origin == store.origin() => {}
                        Some((_, org_id)) => {
                            // The directory first, then the cache: a verification
                            // between the two would cache a verdict of the old state.
                            // A failed read is retried by the next poll, which reads
                            // (and forgets) every changed org.
                            if let Err(error) = directory.reload_org(&org_id).await {
                                tracing::debug!(%org_id, %error, "could not read a notified org; the poll will");
                            }
                            cache.forget_org(&org_id);
                        }
                        None => {
                            tracing::warn!("unreadable change notification; the poll applies it")
                        }
                    },
                    // The connection was lost and is reopened; what was said
                    // meanwhile the poll reads from the change log.
                    Ok(None) => {
                        tracing::debug!("change notifications interrupted; reconnecting")
                    }
                    Err(error) => {
                        tracing::debug!(%error, "change notifications lost; reconnecting");
                        break;
                    }
                }
            },
            Ok(ChangeFeed::CounterOnly) => return,
            Err(error) => {
                tracing::debug!(%error, "cannot listen for changes; the poll carries them");
            }
        }
        if !stop.sleep(Duration::from_secs(1)).await {
            return;
        }
    }
}
