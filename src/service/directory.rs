//! The directory: every live org, with its app registrations and the stored
//! hashes of its secrets that can verify, held in memory so that the login path
//! (GetOrg by client ID or custom domain, CheckRedirectUri, ResolveLogin) and the
//! verification of generated secrets cost no database round trip.
//!
//! It is loaded whole at start and kept current by the change feed: every write
//! that changes what it holds announces its org, and each process reads that org
//! again (at once on the process that wrote it, within a poll or a notification
//! elsewhere). Unknown client IDs and hosts are simply absent: nothing a caller
//! sends grows it.
//!
//! While the feed cannot be read (a failover, a cut), what the directory holds
//! keeps answering for `CREDD_STALE_IF_ERROR` after the last good read, but only
//! what it *finds*: an absence might be a change it missed, so that answers
//! UNAVAILABLE rather than a "no" that may be wrong. Past that window everything
//! answers UNAVAILABLE until the feed is read again.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use crate::{
    Error,
    domain::{
        app::AppRegistration,
        caller::OrgAccess,
        ids::{AppRegistrationId, ClientId, OrgId, SecretId},
        org::Org,
        secret::{self, ClientSecret, ClientSecretState, StoredHash},
    },
    store::{
        Store,
        directory::{DirectoryRow, OrgRows},
    },
};

/// How long the read of one org may take before it counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often at most a verification that misses reads its org again.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// How long the read of every org may take (100,000 orgs take about a second).
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// A secret that can verify (ACTIVE, or RETIRING until its grace ends), with its
/// stored hash: what the verify path needs of it, and nothing else.
pub struct VerifiableSecret {
    /// The secret's id (the locator of a generated secret).
    pub id: SecretId,
    /// The stored state: ACTIVE or RETIRING.
    pub state: ClientSecretState,
    /// When it stops verifying (a RETIRING secret's grace end).
    pub expire_time: Option<DateTime<Utc>>,
    /// Imported rather than generated.
    pub imported: bool,
    /// The last characters, which select an imported secret's candidates.
    pub hint: String,
    /// How it is stored (`to_phc` gives the stored string back, for the
    /// compare-and-swap when it is replaced).
    pub hash: StoredHash,
    /// When this process last wrote its `last_used_time`, seconds since the epoch.
    last_used_written: AtomicI64,
}

impl VerifiableSecret {
    /// The state as of `now` (a RETIRING secret past its grace is SUPERSEDED).
    pub fn state_at(&self, now: DateTime<Utc>) -> ClientSecretState {
        secret::state_at(self.state, self.expire_time, now)
    }

    /// Whether it verifies at `now`.
    pub fn verifies_at(&self, now: DateTime<Utc>) -> bool {
        matches!(
            self.state_at(now),
            ClientSecretState::Active | ClientSecretState::Retiring
        )
    }

    /// Whether `last_used_time` is due to be written at `now` (at most once per
    /// `every`); marks it written when it is.
    pub fn last_used_due(&self, now: DateTime<Utc>, every: chrono::Duration) -> bool {
        let now = now.timestamp();
        let last = self.last_used_written.load(Ordering::Relaxed);
        now - last >= every.num_seconds()
            && self
                .last_used_written
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A registered redirect URI (an App Link or a web callback): what the redirect
/// check needs of an app registration.
#[derive(Debug, Clone)]
pub struct RegisteredRedirect {
    /// The app registration.
    pub app_id: AppRegistrationId,
    /// Its App Link or callback URL, as registered.
    pub redirect_uri: String,
    /// Whether the login must use PKCE.
    pub require_pkce: bool,
}

/// One live org as the directory holds it.
pub struct OrgEntry {
    /// The org.
    pub org: Org,
    /// Its apps' redirect URIs, oldest app first.
    pub redirects: Vec<RegisteredRedirect>,
    /// Its secrets that can verify.
    pub secrets: Vec<VerifiableSecret>,
}

impl std::fmt::Debug for OrgEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgEntry")
            .field("org", &self.org.id)
            .field("redirects", &self.redirects.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl VerifiableSecret {
    /// `secret` as the directory holds it; `None` for a stored hash in a format
    /// this build does not know (logged: that secret cannot verify here).
    fn of(secret: ClientSecret, phc: &str) -> Option<Self> {
        let Some(hash) = StoredHash::parse(phc) else {
            tracing::warn!(secret_id = %secret.id, "stored hash in a format this build does not know: the secret cannot verify here");
            return None;
        };
        Some(Self {
            id: secret.id,
            state: secret.state,
            expire_time: secret.expire_time,
            imported: secret.imported,
            hint: secret.hint,
            hash,
            last_used_written: AtomicI64::new(0),
        })
    }
}

impl RegisteredRedirect {
    fn of(app: AppRegistration) -> Self {
        Self {
            require_pkce: app.require_pkce(),
            redirect_uri: app.redirect_uri().to_owned(),
            app_id: app.id,
        }
    }
}

impl OrgEntry {
    fn new(org: Org) -> Self {
        Self {
            org,
            redirects: Vec::new(),
            secrets: Vec::new(),
        }
    }

    fn from_rows(rows: OrgRows) -> Self {
        let mut entry = Self::new(rows.org);
        entry.redirects = rows.apps.into_iter().map(RegisteredRedirect::of).collect();
        entry.secrets = rows
            .secrets
            .into_iter()
            .filter_map(|(secret, phc)| VerifiableSecret::of(secret, &phc))
            .collect();
        entry
    }

    /// The verifiable secret `secret_id`.
    pub fn secret(&self, secret_id: &SecretId) -> Option<&VerifiableSecret> {
        self.secrets.iter().find(|s| &s.id == secret_id)
    }

    /// The verifiable imported secrets whose hint is `hint` (at most two: the
    /// ACTIVE one and one RETIRING).
    pub fn imported_with_hint<'a>(
        &'a self,
        hint: &'a str,
    ) -> impl Iterator<Item = &'a VerifiableSecret> + 'a {
        self.secrets
            .iter()
            .filter(move |s| s.imported && s.hint == hint)
    }
}

#[derive(Default)]
struct State {
    orgs: HashMap<u128, Arc<OrgEntry>>,
    by_client: HashMap<u128, Arc<OrgEntry>>,
    by_domain: HashMap<String, Arc<OrgEntry>>,
}

/// The key of an org id (a UUID); `None` for text credd never makes.
fn org_key(org_id: &OrgId) -> Option<u128> {
    uuid::Uuid::try_parse(org_id.as_str())
        .ok()
        .map(|uuid| uuid.as_u128())
}

/// The key of a client ID (32 hex characters); `None` for text credd never makes.
fn client_key(client_id: &ClientId) -> Option<u128> {
    let hex = client_id.as_str();
    (hex.len() == 32)
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
}

impl State {
    fn insert(&mut self, entry: OrgEntry) {
        let (Some(key), Some(client)) = (org_key(&entry.org.id), client_key(&entry.org.client_id))
        else {
            tracing::warn!(org_id = %entry.org.id, "an org whose id or client ID credd did not make: not served from memory");
            return;
        };
        let entry = Arc::new(entry);
        self.by_client.insert(client, entry.clone());
        if let Some(domain) = &entry.org.custom_domain {
            self.by_domain.insert(domain.clone(), entry.clone());
        }
        self.orgs.insert(key, entry);
    }

    /// Removes `org_id` and the index entries that still point at it (a custom
    /// domain another org claimed meanwhile stays with that org).
    fn remove(&mut self, org_id: &OrgId) {
        let Some(old) = org_key(org_id).and_then(|key| self.orgs.remove(&key)) else {
            return;
        };
        if let Some(client) = client_key(&old.org.client_id)
            && self
                .by_client
                .get(&client)
                .is_some_and(|e| &e.org.id == org_id)
        {
            self.by_client.remove(&client);
        }
        if let Some(domain) = &old.org.custom_domain
            && self
                .by_domain
                .get(domain)
                .is_some_and(|e| &e.org.id == org_id)
        {
            self.by_domain.remove(domain);
        }
    }
}

/// How current the directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Not loaded yet: nothing answers.
    Unloaded,
    /// The change feed was read at its last poll: every answer stands.
    Fresh,
    /// The feed could not be read lately, within the stale window: what is found
    /// answers, an absence is UNAVAILABLE.
    Stale,
    /// The stale window has passed: everything is UNAVAILABLE.
    Expired,
}

/// The in-memory directory of live orgs.
pub struct Directory {
    store: Store,
    state: RwLock<State>,
    /// One reload at a time, so that a later read is always applied last.
    reloading: tokio::sync::Mutex<()>,
    started: Instant,
    /// When each org (`None`: every unknown client ID together) was last read
    /// again because a verification missed it.
    rechecks: std::sync::Mutex<HashMap<Option<OrgId>, Instant>>,
    loaded: AtomicBool,
    feed_ok: AtomicBool,
    /// Milliseconds after `started` of the last good read of the feed.
    last_good_read: AtomicU64,
    stale_if_error: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("orgs", &self.len())
            .field("freshness", &self.freshness())
            .finish()
    }
}

impl Directory {
    /// An empty directory over `store` that answers from memory for
    /// `stale_if_error` after the change feed stops answering.
    pub fn new(store: Store, stale_if_error: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            state: RwLock::default(),
            reloading: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            rechecks: std::sync::Mutex::default(),
            loaded: AtomicBool::new(false),
            feed_ok: AtomicBool::new(false),
            last_good_read: AtomicU64::new(0),
            stale_if_error,
        })
    }

    /// Reads every live org from the store and replaces what is held.
    pub async fn reload_all(&self) -> Result<(), Error> {
        let _one = self.reloading.lock().await;
        let started = Instant::now();
        let mut building: HashMap<OrgId, OrgEntry> = HashMap::new();
        bounded(
            LOAD_TIMEOUT,
            self.store.directory(|row| match row {
                DirectoryRow::Org(org) => {
                    building.insert(org.id.clone(), OrgEntry::new(org));
                }
                DirectoryRow::App(app) => {
                    if let Some(entry) = building.get_mut(&app.org_id) {
                        entry.redirects.push(RegisteredRedirect::of(app));
                    }
                }
                DirectoryRow::Secret(secret, phc) => {
                    if let Some(entry) = building.get_mut(&secret.org_id) {
                        entry.secrets.extend(VerifiableSecret::of(secret, &phc));
                    }
                }
            }),
        )
        .await?;
        let mut state = State::default();
        state.orgs.reserve(building.len());
        state.by_client.reserve(building.len());
        for (_, mut entry) in building {
            entry.redirects.sort_by(|a, b| a.app_id.cmp(&b.app_id));
            entry.redirects.shrink_to_fit();
            entry.secrets.shrink_to_fit();
            state.insert(entry);
        }
        let orgs = state.orgs.len();
        match self.state.write() {
            Ok(mut held) => *held = state,
            Err(_) => return Err(Error::Internal("directory lock poisoned".into())),
        }
        if !self.loaded.swap(true, Ordering::SeqCst) {
            self.feed_read(true);
        }
        tracing::info!(
            orgs,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "directory loaded"
        );
        Ok(())
    }

    /// Reads the org `org_id` again (gone when it was deleted).
    pub async fn reload_org(&self, org_id: &OrgId) -> Result<(), Error> {
        let _one = self.reloading.lock().await;
        let rows = bounded(READ_TIMEOUT, self.store.directory_entry(org_id)).await?;
        let mut state = self
            .state
            .write()
            .map_err(|_| Error::Internal("directory lock poisoned".into()))?;
        state.remove(org_id);
        if let Some(rows) = rows {
            state.insert(OrgEntry::from_rows(rows));
        }
        Ok(())
    }

    /// A secret presented for `client_id` is not held (`entry`: its org, when
    /// held): it may have been activated, or the org created, on another process
    /// a moment ago, before the change feed brought it here. Reads the org again
    /// from the store — at most once a second per org, and once a second for all
    /// unknown client IDs together, so that neither a flood of wrong secrets nor
    /// of made-up client IDs becomes a flood of queries, and known and unknown
    /// clients cost alike. Answers the org as held afterwards, or `None` when no
    /// read was due (or it failed: the feed brings the change anyway).
    pub async fn recheck(
        &self,
        client_id: &ClientId,
        entry: Option<&OrgEntry>,
        reach: &OrgAccess,
    ) -> Option<Option<Arc<OrgEntry>>> {
        let key = entry.map(|e| e.org.id.clone());
        let due = self.rechecks.lock().is_ok_and(|mut rechecks| {
            let now = Instant::now();
            if rechecks.len() > 10_000 {
                rechecks.retain(|_, at| now.duration_since(*at) < RECHECK_EVERY);
            }
            match rechecks.get(&key) {
                Some(at) if now.duration_since(*at) < RECHECK_EVERY => false,
                _ => {
                    rechecks.insert(key.clone(), now);
                    true
                }
            }
        });
        if !due {
            return None;
        }
        let org_id = match key {
            Some(org_id) => org_id,
            None => match bounded(READ_TIMEOUT, self.store.org_id_of_client(client_id)).await {
                Ok(Some(org_id)) => org_id,
                Ok(None) => return Some(None),
                Err(_) => return None,
            },
        };
        self.reload_org(&org_id).await.ok()?;
        self.by_client_id(client_id, reach).ok()
    }

    /// After this process wrote to `org_id`: reads it again before the RPC
    /// answers, then forgets its verdicts in `cache` when given (in that order: a
    /// verification between the two would otherwise cache a verdict of the old
    /// state), in a task of its own, so that a cancelled RPC still leaves both
    /// current. A failed read is logged; the change feed brings the change within
    /// a poll anyway.
    pub async fn reload_after_write(
        self: &Arc<Self>,
        org_id: &OrgId,
        cache: Option<&Arc<crate::service::verify_cache::VerifyCache>>,
    ) {
        let this = self.clone();
        let org_id = org_id.clone();
        let cache = cache.cloned();
        let task = tokio::spawn(async move {
            if let Err(err) = this.reload_org(&org_id).await {
                tracing::warn!(%org_id, error = %err, "could not read an org back after writing it; the change feed will bring it");
            }
            if let Some(cache) = cache {
                cache.forget_org(&org_id);
            }
        });
        let _ = task.await;
    }

    /// Records a read of the change feed: good (the directory is current up to
    /// it) or failed.
    pub fn feed_read(&self, ok: bool) {
        if ok {
            let now = self.started.elapsed().as_millis() as u64;
            self.last_good_read.store(now, Ordering::SeqCst);
        }
        let was_ok = self.feed_ok.swap(ok, Ordering::SeqCst);
        if was_ok != ok && self.loaded.load(Ordering::SeqCst) {
            if ok {
                tracing::info!("change feed readable again: the directory answers in full");
            } else {
                tracing::warn!(
                    stale_if_error = ?self.stale_if_error,
                    "change feed unreadable: the directory answers only what it holds, then UNAVAILABLE once CREDD_STALE_IF_ERROR has passed"
                );
            }
        }
    }

    /// How current the directory is now.
    pub fn freshness(&self) -> Freshness {
        if !self.loaded.load(Ordering::SeqCst) {
            return Freshness::Unloaded;
        }
        if self.feed_ok.load(Ordering::SeqCst) {
            return Freshness::Fresh;
        }
        let since = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_good_read.load(Ordering::SeqCst),
        ));
        if since < self.stale_if_error {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// Whether anything can be answered from memory (readiness).
    pub fn serviceable(&self) -> bool {
        matches!(self.freshness(), Freshness::Fresh | Freshness::Stale)
    }

    /// `Ok` when an absence in the directory is an answer (it is current);
    /// UNAVAILABLE otherwise.
    pub fn absence_is_an_answer(&self) -> Result<(), Error> {
        match self.freshness() {
            Freshness::Fresh => Ok(()),
            _ => Err(unavailable()),
        }
    }

    /// `Ok` when what the directory holds may answer (current, or stale within
    /// the window); UNAVAILABLE otherwise.
    pub fn holdings_answer(&self) -> Result<(), Error> {
        match self.freshness() {
            Freshness::Fresh | Freshness::Stale => Ok(()),
            _ => Err(unavailable()),
        }
    }

    /// The one way anything is read out of the directory: what `pick` finds,
    /// kept only when `reach` reaches its org.
    fn find(
        &self,
        reach: &OrgAccess,
        pick: impl FnOnce(&State) -> Option<Arc<OrgEntry>>,
    ) -> Result<Option<Arc<OrgEntry>>, Error> {
        self.holdings_answer()?;
        let found = self
            .state
            .read()
            .map_err(|_| Error::Internal("directory lock poisoned".into()))
            .map(|state| pick(&state))?
            .filter(|entry| reach.reaches(&entry.org.id));
        if found.is_none() {
            self.absence_is_an_answer()?;
        }
        Ok(found)
    }

    /// The live org with this client ID, if `reach` reaches it (an org out of
    /// reach is absent, as if it did not exist).
    pub fn by_client_id(
        &self,
        client_id: &ClientId,
        reach: &OrgAccess,
    ) -> Result<Option<Arc<OrgEntry>>, Error> {
        let key = client_key(client_id);
        self.find(reach, |state| {
            key.and_then(|key| state.by_client.get(&key).cloned())
        })
    }

    /// The live org with this canonical custom domain, if `reach` reaches it.
    pub fn by_custom_domain(
        &self,
        domain: &str,
        reach: &OrgAccess,
    ) -> Result<Option<Arc<OrgEntry>>, Error> {
        self.find(reach, |state| state.by_domain.get(domain).cloned())
    }

    /// The live org with this id, if `reach` reaches it.
    pub fn by_id(&self, org_id: &OrgId, reach: &OrgAccess) -> Result<Option<Arc<OrgEntry>>, Error> {
        let key = org_key(org_id);
        self.find(reach, |state| {
            key.and_then(|key| state.orgs.get(&key).cloned())
        })
    }

    /// How many live orgs are held.
    pub fn len(&self) -> usize {
        self.state.read().map(|s| s.orgs.len()).unwrap_or(0)
    }

    /// Whether no org is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unavailable() -> Error {
    Error::Unavailable(
        "the store cannot be reached and the in-memory directory cannot answer this".into(),
    )
}

/// `read`, failed as UNAVAILABLE after `limit`.
async fn bounded<T>(
    limit: Duration,
    read: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, read).await.unwrap_or_else(|_| {
        Err(Error::Unavailable(
            format!("no answer from the store within {limit:?}").into(),
        ))
    })
}
