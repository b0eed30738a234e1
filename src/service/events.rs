//! Following the audit trail (WatchAuditEvents): one tail per process reads new
//! events in commit order and fans them out; each watcher replays from its cursor
//! out of the store, then follows the tail, so that it sees every event once, in
//! order, across reconnects and replicas.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{broadcast, mpsc, watch};

use crate::{
    Error,
    domain::{
        audit::{AuditEvent, WatchFilter},
        ids::AuditEventId,
    },
    store::Store,
};

/// How many events the tail keeps for watchers that have not taken them yet;
/// a watcher further behind than this is cut off (it reconnects with `after`).
pub const FEED_CAPACITY: usize = 4096;
/// How many events a watcher holds for its client before it waits.
const WATCHER_BUFFER: usize = 64;
/// How many events a replay reads at a time.
const REPLAY_PAGE: u64 = 500;
/// How many watches one process follows at once.
pub const MAX_WATCHES: usize = 256;
/// How many watches one caller (by token name) follows at once.
pub const MAX_WATCHES_PER_CALLER: usize = 8;

/// How often the tail reads new events (every replica sees another's write
/// within this and a read).
pub const TAIL_EVERY: Duration = Duration::from_millis(200);

/// An event with its place in commit order.
#[derive(Debug, Clone)]
pub struct Sequenced {
    /// Its `seq`.
    pub seq: i64,
    /// The event.
    pub event: AuditEvent,
}

/// The process's tail of the trail, shared by every watcher.
#[derive(Debug, Clone)]
pub struct AuditFeed {
    inner: Arc<FeedInner>,
}

#[derive(Debug)]
struct FeedInner {
    store: Store,
    events: broadcast::Sender<Arc<Sequenced>>,
    /// The last `seq` the tail has sent (0 before its first read).
    position: AtomicI64,
    /// Set at shutdown: watchers end so that the server can stop.
    closing: watch::Sender<bool>,
    /// Watches running, in all and per caller.
    slots: std::sync::Mutex<WatchCounts>,
}

#[derive(Debug, Default)]
struct WatchCounts {
    total: usize,
    by_caller: std::collections::HashMap<Arc<str>, usize>,
}

/// One running watch's place in the bounds; given back when dropped (the watch
/// ended, or its client went away).
#[must_use = "the watch's slot is given back when this is dropped"]
#[derive(Debug)]
pub struct WatchSlot {
    feed: Arc<FeedInner>,
    caller: Arc<str>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.feed.slots.lock() {
            counts.total = counts.total.saturating_sub(1);
            if let Some(n) = counts.by_caller.get_mut(&self.caller) {
                *n -= 1;
                if *n == 0 {
                    counts.by_caller.remove(&self.caller);
                }
            }
        }
    }
}

/// Why a watch ended, for the client (each carries the last event sent, so
/// that it can resume with `after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The watcher fell more than [`FEED_CAPACITY`] events behind.
    TooSlow { last: Option<AuditEventId> },
    /// The server is shutting down.
    ShuttingDown { last: Option<AuditEventId> },
    /// The store could not be read.
    Unavailable { last: Option<AuditEventId> },
}

impl AuditFeed {
    /// A feed over `store`, positioned at the trail's end once [`AuditFeed::start`]
    /// has run.
    pub fn new(store: Store) -> Self {
        let (events, _) = broadcast::channel(FEED_CAPACITY);
        let (closing, _) = watch::channel(false);
        Self {
            inner: Arc::new(FeedInner {
                store,
                events,
                position: AtomicI64::new(0),
                closing,
                slots: std::sync::Mutex::default(),
            }),
        }
    }

    /// Positions the tail at the end of the trail.
    pub async fn start(&self) -> Result<(), Error> {
        let last = self.inner.store.last_event_seq().await?;
        self.inner.position.store(last, Ordering::Release);
        Ok(())
    }

    /// Reads what was committed since the last read and sends it to the
    /// watchers; answers how many events it sent.
    pub async fn poll(&self) -> Result<usize, Error> {
        let mut sent = 0;
        loop {
            let after = self.inner.position.load(Ordering::Acquire);
            let page = self.inner.store.events_after(after, REPLAY_PAGE).await?;
            let full = page.len() as u64 == REPLAY_PAGE;
            for (seq, event) in page {
                self.inner.position.store(seq, Ordering::Release);
                // No watcher: nobody to tell.
                let _ = self.inner.events.send(Arc::new(Sequenced { seq, event }));
                sent += 1;
            }
            if !full {
                return Ok(sent);
            }
        }
    }

    /// A slot for one more watch of `caller` (its token's name): RESOURCE_EXHAUSTED
    /// past [`MAX_WATCHES_PER_CALLER`] for the caller or [`MAX_WATCHES`] for the
    /// process, so that no caller can hold the tail's memory and the store's
    /// replays without bound.
    pub fn admit(&self, caller: &Arc<str>) -> Result<WatchSlot, Error> {
        let mut counts = self
            .inner
            .slots
            .lock()
            .map_err(|_| Error::Internal("watch slots lock poisoned".into()))?;
        if counts.total >= MAX_WATCHES {
            return Err(Error::Overloaded(
                "this server follows as many audit watches as it allows (256); retry later or on another replica",
            ));
        }
        let mine = counts.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= MAX_WATCHES_PER_CALLER {
            return Err(Error::Overloaded(
                "this caller token already follows 8 audit watches here; end one first",
            ));
        }
        counts.total += 1;
        counts.by_caller.insert(caller.clone(), mine + 1);
        Ok(WatchSlot {
            feed: self.inner.clone(),
            caller: caller.clone(),
        })
    }

    /// Ends every watch (at shutdown).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// How many watchers follow now.
    pub fn watchers(&self) -> usize {
        self.inner.events.receiver_count()
    }

    /// The cursor of "from now on": the newest committed event (the tail may not
    /// have read it yet).
    pub async fn now_cursor(&self) -> Result<i64, Error> {
        self.inner.store.last_event_seq().await
    }

    /// The `seq` of event `after`, or INVALID_ARGUMENT naming `field`.
    pub async fn cursor_of(&self, field: &str, after: &AuditEventId) -> Result<i64, Error> {
        self.inner
            .store
            .event_seq(after)
            .await?
            .ok_or_else(|| Error::invalid(field, "names no audit event"))
    }

    /// Follows the trail for `filter`: every event after `cursor` (a `seq`, from
    /// [`AuditFeed::cursor_of`] or [`AuditFeed::now_cursor`]), in commit order,
    /// then live. The receiver yields events, then at most one [`WatchEnd`];
    /// dropping it ends the watch.
    pub fn watch(
        &self,
        filter: WatchFilter,
        cursor: i64,
        slot: WatchSlot,
    ) -> mpsc::Receiver<Result<AuditEvent, WatchEnd>> {
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        // Subscribed before the replay reads: whatever the tail sends from here
        // on reaches this watcher, and what it sent before is in the store.
        let live = self.inner.events.subscribe();
        let mut closing = self.inner.closing.subscribe();
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            // Held for as long as the watch runs.
            let _slot = slot;
            tokio::select! {
                // The client went away: nothing to send the end to.
                _ = tx.closed() => {}
                end = follow(&store, &filter, cursor, live, &mut closing, &tx) => {
                    // A client that reads nothing more does not hold up a shutdown.
                    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Err(end))).await;
                }
            }
        });
        rx
    }
}

/// Sends `item` to the watcher's client unless shutdown comes first; `false` when
/// the watch should end.
async fn send(
    tx: &mpsc::Sender<Result<AuditEvent, WatchEnd>>,
    closing: &mut watch::Receiver<bool>,
    item: AuditEvent,
) -> bool {
    tokio::select! {
        sent = tx.send(Ok(item)) => sent.is_ok(),
        _ = closing.wait_for(|closed| *closed) => false,
    }
}

/// Replays after `cursor` from the store, then sends what the tail reads; answers
/// why it stopped (it never stops otherwise).
async fn follow(
    store: &Store,
    filter: &WatchFilter,
    mut cursor: i64,
    mut live: broadcast::Receiver<Arc<Sequenced>>,
    closing: &mut watch::Receiver<bool>,
    tx: &mpsc::Sender<Result<AuditEvent, WatchEnd>>,
) -> WatchEnd {
    let mut last: Option<AuditEventId> = None;
    loop {
        if *closing.borrow() {
            return WatchEnd::ShuttingDown { last };
        }
        let page = match store.events_after(cursor, REPLAY_PAGE).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(error = %err, "audit watch: cannot replay from the store");
                return WatchEnd::Unavailable { last };
            }
        };
        let full = page.len() as u64 == REPLAY_PAGE;
        for (seq, event) in page {
            cursor = seq;
            if filter.matches(&event) {
                let id = event.id.clone();
                if !send(tx, closing, event).await {
                    return WatchEnd::ShuttingDown { last };
                }
                last = Some(id);
            }
        }
        if !full {
            break;
        }
    }
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            _ = closing.wait_for(|closed| *closed) => return WatchEnd::ShuttingDown { last },
        };
        match received {
            // Already replayed.
            Ok(sequenced) if sequenced.seq <= cursor => {}
            Ok(sequenced) => {
                cursor = sequenced.seq;
                if filter.matches(&sequenced.event) {
                    let id = sequenced.event.id.clone();
                    if !send(tx, closing, sequenced.event.clone()).await {
                        return WatchEnd::ShuttingDown { last };
                    }
                    last = Some(id);
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => return WatchEnd::TooSlow { last },
            Err(broadcast::error::RecvError::Closed) => return WatchEnd::ShuttingDown { last },
        }
    }
}
