//! Callers: the authenticator every RPC passes through, and the token use cases
//! behind `credd token …`.
//!
//! Authentication is a SHA-256 of the presented token and a lookup in an in-memory
//! map of live token digests, refreshed from the store every couple of seconds
//! (so a revocation by `credd token revoke` takes effect within that), never a
//! database round trip or a slow hash per RPC.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

use chrono::Duration;
use subtle::ConstantTimeEq;

use crate::{
    Error,
    domain::{
        caller::{self, Actor, Caller, CallerToken, NewToken, OrgAccess, Scope, Scopes},
        ids::{CallerTokenId, OrgId},
        paging::{Page, PageRequest},
    },
    service::Clock,
    store::{Store, audit::NewEvent, caller_tokens::LiveToken},
};

/// The token of a `Bearer` authorization header value. The scheme is
/// case-insensitive (RFC 9110 §11.1): `bearer` works too.
fn bearer_token(authorization: Option<&[u8]>) -> Option<&[u8]> {
    authorization
        .and_then(|value| {
            let space = value.iter().position(|b| *b == b' ')?;
            let (scheme, rest) = value.split_at(space);
            scheme.eq_ignore_ascii_case(b"bearer").then_some(rest)
        })
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// How often at most an unknown well-formed token triggers a reload.
const ON_DEMAND_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often at most an unknown well-formed token is logged.
const UNKNOWN_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the authenticator reloads live tokens from the store.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Entry {
    id: CallerTokenId,
    caller: Caller,
    expire_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Used since `last_used_time` was last written; kept across reloads, so that
    /// marking a use is one relaxed atomic and no lock.
    used: Arc<std::sync::atomic::AtomicBool>,
}

/// Checks caller tokens against the bootstrap token and the live stored tokens.
pub struct Authenticator {
    bootstrap_digest: Option<[u8; 32]>,
    bootstrap_expire: Option<chrono::DateTime<chrono::Utc>>,
    bootstrap_expiry_logged: std::sync::atomic::AtomicBool,
    tokens: RwLock<Arc<HashMap<[u8; 32], Entry>>>,
    warned_unknown_scopes: Mutex<HashSet<CallerTokenId>>,
    /// Where to reload from when a well-formed token is unknown (a token just made
    /// by `credd token create` beside this server), and when that last happened.
    store: Option<Store>,
    last_on_demand: Mutex<Option<std::time::Instant>>,
    unknown_logged: Mutex<Option<std::time::Instant>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("bootstrap", &self.bootstrap_digest.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Accepts `bootstrap_token` (when set) as an admin caller until
    /// `bootstrap_expire` (if set), and stored tokens once
    /// [`Authenticator::reload`] has read them.
    pub fn new(
        bootstrap_token: Option<&str>,
        bootstrap_expire: Option<chrono::DateTime<chrono::Utc>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            bootstrap_digest: bootstrap_token.map(|t| caller::token_digest(t.as_bytes())),
            bootstrap_expire,
            bootstrap_expiry_logged: std::sync::atomic::AtomicBool::new(false),
            tokens: RwLock::default(),
            warned_unknown_scopes: Mutex::default(),
            store: None,
            last_on_demand: Mutex::default(),
            unknown_logged: Mutex::default(),
            clock,
        }
    }

    /// Reloads from `store` on demand, at most once a second, when a well-formed
    /// token is unknown: a token created a moment ago works at once instead of
    /// after the next periodic reload.
    pub fn reloading_from(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Whether an unknown `authorization` is worth a reload: it carries a
    /// well-formed caller token and there is a store to reload from (the reload
    /// itself runs at most once a second, see
    /// [`Authenticator::authenticate_after_reload`]).
    pub fn may_know_later(&self, authorization: Option<&[u8]>) -> bool {
        self.store.is_some()
            && bearer_token(authorization).is_some_and(caller::is_well_formed_token)
    }

    /// Reloads now (bounded), for [`Authenticator::may_know_later`], then answers
    /// like [`Authenticator::authenticate`]; a token still unknown is logged, by
    /// its last four characters only, at most every ten seconds.
    pub async fn authenticate_after_reload(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<Caller, Error> {
        // One reload a second at most: a caller that comes too soon waits for the
        // next one (a token made a moment after the last reload still works),
        // unless another caller's reload answered it meanwhile.
        let claim = || {
            self.last_on_demand
                .lock()
                .map_or(Err(ON_DEMAND_EVERY), |mut last| match *last {
                    Some(at) if at.elapsed() < ON_DEMAND_EVERY => {
                        Err(ON_DEMAND_EVERY.saturating_sub(at.elapsed()))
                    }
                    _ => {
                        *last = Some(std::time::Instant::now());
                        Ok(())
                    }
                })
        };
        let mut due = claim();
        if let Err(wait) = due {
            tokio::time::sleep(wait).await;
            if self.authenticate(authorization).is_ok() {
                return self.authenticate(authorization);
            }
            due = claim();
        }
        if due.is_ok()
            && let Some(store) = &self.store
        {
            match tokio::time::timeout(std::time::Duration::from_secs(2), self.reload(store)).await
            {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "on-demand caller token reload failed")
                }
                Err(_) => tracing::debug!("on-demand caller token reload timed out"),
            }
        }
        let answer = self.authenticate(authorization);
        if matches!(answer, Err(Error::Unauthenticated)) {
            self.log_unknown(authorization);
        }
        answer
    }

    fn log_unknown(&self, authorization: Option<&[u8]>) {
        let Some(token) = bearer_token(authorization).filter(|t| caller::is_well_formed_token(t))
        else {
            return;
        };
        let due = self.unknown_logged.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|at| at.elapsed() >= UNKNOWN_LOG_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        });
        if due {
            let hint =
                String::from_utf8_lossy(&token[token.len().saturating_sub(4)..]).into_owned();
            tracing::info!(
                hint,
                "a well-formed caller token is unknown here: revoked, made on another database \
                 (check CREDD_DATABASE_URL of `credd token`), or mistyped"
            );
        }
    }

    /// The caller that `authorization` (the header's value) names.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Error> {
        let token = bearer_token(authorization).ok_or(Error::Unauthenticated)?;
        let presented = caller::token_digest(token);
        if let Some(bootstrap) = &self.bootstrap_digest
            && bool::from(bootstrap.ct_eq(&presented))
        {
            return match self.bootstrap_expire {
                Some(expiry) if expiry <= self.clock.now() => {
                    if !self
                        .bootstrap_expiry_logged
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::warn!(%expiry, "CREDD_BOOTSTRAP_TOKEN was presented after CREDD_BOOTSTRAP_TOKEN_EXPIRE: refused");
                    }
                    Err(Error::Unauthenticated)
                }
                _ => Ok(Caller::bootstrap()),
            };
        }
        if !caller::is_well_formed_token(token) {
            return Err(Error::Unauthenticated);
        }
        let tokens = self.tokens.read().map_err(|_| Error::Unauthenticated)?;
        let entry = tokens.get(&presented).ok_or(Error::Unauthenticated)?;
        if entry
            .expire_time
            .is_some_and(|expiry| expiry <= self.clock.now())
        {
            return Err(Error::Unauthenticated);
        }
        // A load before the store: a busy token's flag stays in every core's cache.
        if !entry.used.load(std::sync::atomic::Ordering::Relaxed) {
            entry.used.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(entry.caller.clone())
    }

    /// Reloads the live tokens from the store it reloads from (after this process
    /// created or revoked one, so that the change holds here at once).
    pub async fn reload_now(&self) {
        if let Some(store) = &self.store
            && let Err(err) = self.reload(store).await
        {
            tracing::warn!(error = %err, "could not reload caller tokens; the next refresh will");
        }
    }

    /// Reloads the live tokens from the store.
    pub async fn reload(&self, store: &Store) -> Result<(), Error> {
        let live = store.live_tokens().await?;
        let previous = self.tokens.read().map(|t| t.clone()).unwrap_or_default();
        let map = live
            .into_iter()
            .filter_map(
                |LiveToken {
                     id,
                     digest,
                     name,
                     scopes,
                     orgs,
                     unknown_scopes,
                     expire_time,
                 }| {
                    if !unknown_scopes.is_empty() {
                        self.warn_unknown_scopes(&id, &name, &unknown_scopes);
                    }
                    let digest = decode_hex(&digest)?;
                    let used = previous
                        .get(&digest)
                        .map_or_else(Arc::default, |entry| entry.used.clone());
                    Some((
                        digest,
                        Entry {
                            id: id.clone(),
                            caller: Caller {
                                name: name.into(),
                                scopes,
                                orgs,
                                token: Some(Arc::new(caller::TokenOrigin {
                                    id: id.clone(),
                                    expire_time,
                                })),
                            },
                            expire_time,
                            used,
                        },
                    ))
                },
            )
            .collect();
        if let Ok(mut tokens) = self.tokens.write() {
            *tokens = Arc::new(map);
        }
        Ok(())
    }

    /// Logs, once per token, the stored scopes this build ignores.
    fn warn_unknown_scopes(&self, id: &CallerTokenId, name: &str, unknown: &[String]) {
        let first_time = self
            .warned_unknown_scopes
            .lock()
            .is_ok_and(|mut warned| warned.insert(id.clone()));
        if first_time {
            tracing::warn!(
                token = name,
                unknown_scopes = %unknown.join(" "),
                "caller token has scopes this version does not know (written by a newer credd?): \
                 they grant nothing here; its other scopes apply"
            );
        }
    }

    /// Writes `last_used_time` for the tokens used since the last flush.
    pub async fn flush_last_used(&self, store: &Store) -> Result<(), Error> {
        let used: Vec<CallerTokenId> = match self.tokens.read() {
            Ok(tokens) => tokens
                .values()
                .filter(|entry| entry.used.swap(false, std::sync::atomic::Ordering::Relaxed))
                .map(|entry| entry.id.clone())
                .collect(),
            Err(_) => return Ok(()),
        };
        if used.is_empty() {
            return Ok(());
        }
        store.touch_tokens(&used, self.clock.now()).await
    }
}

fn decode_hex(digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(digest, &mut out).ok()?;
    Some(out)
}

/// Creates, lists and revokes caller tokens.
#[derive(Debug, Clone)]
pub struct TokenService {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl TokenService {
    /// The service over `store`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Creates a token named `name` with `scopes`, reaching `orgs`, expiring after
    /// `expires_in` (the command line). The token is in the answer only.
    pub async fn create(
        &self,
        actor: &Actor,
        name: &str,
        scopes: Scopes,
        expires_in: Option<Duration>,
    ) -> Result<(CallerToken, NewToken), Error> {
        let expire_time = expires_in.map(|d| self.clock.now() + d);
        self.insert(actor, name, scopes, OrgAccess::All, expire_time, None)
            .await
    }

    /// CreateCallerToken: only an `admin` may (the RPC's scope), and an admin
    /// limited to orgs only a token limited to orgs it reaches. Each named org
    /// must be live; `expire_time` must be in the future.
    pub async fn create_for(
        &self,
        actor: &Actor,
        caller: &Caller,
        name: &str,
        scopes: Scopes,
        org_ids: Vec<OrgId>,
        expire_time: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(CallerToken, NewToken), Error> {
        let orgs = OrgAccess::of(org_ids);
        if !caller.orgs.covers(&orgs) {
            return Err(Error::PermissionDenied(match orgs {
                OrgAccess::All => "a caller limited to orgs can only create tokens limited to its orgs: name them in org_ids".into(),
                OrgAccess::Only(_) => "org_ids names an org this caller does not reach".into(),
            }));
        }
        if let Some(orgs) = orgs.orgs() {
            for org_id in orgs {
                if self.store.find_org(org_id).await?.is_none() {
                    return Err(Error::invalid(
                        "org_ids",
                        format!("names no live org: {org_id}"),
                    ));
                }
            }
        }
        if let Some(expiry) = expire_time
            && expiry <= self.clock.now()
        {
            return Err(Error::invalid("expire_time", "must be in the future"));
        }
        // Never more than its maker has, in time too.
        let (parent, expire_time) = caller.child_token_bounds(expire_time);
        self.insert(actor, name, scopes, orgs, expire_time, parent)
            .await
    }

    async fn insert(
        &self,
        actor: &Actor,
        name: &str,
        scopes: Scopes,
        orgs: OrgAccess,
        expire_time: Option<chrono::DateTime<chrono::Utc>>,
        parent: Option<CallerTokenId>,
    ) -> Result<(CallerToken, NewToken), Error> {
        let name = caller::parse_token_name(name)?;
        if scopes.iter().next().is_none() {
            return Err(Error::invalid("scopes", "at least one scope is required"));
        }
        let now = self.clock.now();
        let new = caller::generate_token();
        let id = CallerTokenId::generate();
        let event = NewEvent::new(actor, "token.create", None, &id).details(serde_json::json!({
            "name": name,
            "scopes": scopes.to_names(),
            "org_ids": orgs.to_stored(),
            "parent_id": parent.as_ref().map(CallerTokenId::as_str),
            "expire_time": expire_time.map(|t| t.to_rfc3339()),
        }));
        let token = self
            .store
            .insert_token(
                id,
                &name,
                scopes,
                &orgs,
                new.digest.clone(),
                new.hint.clone(),
                expire_time,
                parent,
                now,
                event,
            )
            .await?;
        tracing::info!(name = %token.name, scopes = %scopes.to_names(), org_ids = %orgs.to_stored(), "caller token created");
        Ok((token, new))
    }

    /// The token `id`, if `caller` reaches every org it does (else, existing or
    /// not, PERMISSION_DENIED for a caller limited to orgs).
    pub async fn get(&self, caller: &Caller, id: &CallerTokenId) -> Result<CallerToken, Error> {
        match self.store.find_token(id).await? {
            Some(token) if caller.orgs.covers(&token.orgs) => Ok(token),
            _ if caller.orgs != OrgAccess::All => Err(Error::PermissionDenied(
                "the caller token is outside the orgs this caller reaches".into(),
            )),
            _ => Err(Error::NotFound("caller token")),
        }
    }

    /// A page of the tokens `caller` reaches, oldest first.
    pub async fn page(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Page<CallerToken>, Error> {
        self.store.page_tokens(&page, caller.orgs.orgs()).await
    }

    /// Revokes the token `id` (RevokeCallerToken).
    pub async fn revoke_by_id(
        &self,
        actor: &Actor,
        caller: &Caller,
        id: &CallerTokenId,
    ) -> Result<CallerToken, Error> {
        let token = self.get(caller, id).await?;
        let event = NewEvent::new(actor, "token.revoke", None, id)
            .details(serde_json::json!({ "name": token.name }));
        let revoked = self
            .store
            .revoke_token_by_id(id, self.clock.now(), event)
            .await?;
        tracing::info!(name = %revoked.name, "caller token revoked");
        Ok(revoked)
    }

    /// Every token's metadata.
    pub async fn list(&self) -> Result<Vec<CallerToken>, Error> {
        self.store.list_tokens().await
    }

    /// Revokes the live token `name` (the command line names tokens; the audit
    /// trail names them by id, as RevokeCallerToken does).
    pub async fn revoke(&self, actor: &Actor, name: &str) -> Result<(), Error> {
        let mut named: Vec<CallerToken> = self
            .store
            .list_tokens()
            .await?
            .into_iter()
            .filter(|t| t.name == name && t.revoke_time.is_none())
            .collect();
        if named.len() > 1 {
            // Names are unique per org set only.
            return Err(Error::FailedPrecondition(format!(
                "{} live caller tokens are named `{name}` (for different org sets): revoke one by id with CallerTokens/RevokeCallerToken",
                named.len()
            )));
        }
        let live = named.pop().ok_or(Error::NotFound("live caller token"))?;
        let event = NewEvent::new(actor, "token.revoke", None, &live.id)
            .details(serde_json::json!({ "name": name }));
        self.store
            .revoke_token_by_id(&live.id, self.clock.now(), event)
            .await?;
        tracing::info!(name, "caller token revoked");
        Ok(())
    }

    /// On a store that never had a caller token, creates an `admin` token for the
    /// operator (printed once by `credd serve`).
    pub async fn first_admin_token(&self) -> Result<Option<NewToken>, Error> {
        if self.store.count_tokens().await? > 0 {
            return Ok(None);
        }
        let actor = Actor::internal("first-start");
        match self
            .create(&actor, "admin", Scopes::of([Scope::Admin]), None)
            .await
        {
            Ok((_, token)) => Ok(Some(token)),
            // Another replica made it first.
            Err(Error::AlreadyExists { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SystemClock;

    #[test]
    fn only_the_bootstrap_token_as_bearer_is_accepted() {
        let auth = Authenticator::new(Some("s3cret-token"), None, Arc::new(SystemClock));
        assert!(auth.authenticate(Some(b"Bearer s3cret-token")).is_ok());
        assert!(auth.authenticate(Some(b"bearer s3cret-token")).is_ok());
        assert!(auth.authenticate(Some(b"BEARER s3cret-token")).is_ok());
        for bad in [
            &b"Bearer s3cret-tokeN"[..],
            b"s3cret-token",
            b"Basic s3cret-token",
            b"Bearer ",
            b"",
        ] {
            assert!(matches!(
                auth.authenticate(Some(bad)),
                Err(Error::Unauthenticated)
            ));
        }
        assert!(matches!(
            auth.authenticate(None),
            Err(Error::Unauthenticated)
        ));
    }

    #[test]
    fn debug_output_never_holds_the_token() {
        let auth = Authenticator::new(Some("s3cret-token"), None, Arc::new(SystemClock));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let digest = caller::token_digest(b"x");
        assert_eq!(decode_hex(&hex::encode(digest)), Some(digest));
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex(&"+f".repeat(32)), None, "a sign is no hex digit");
    }
}
