//! Who is calling: caller tokens, their scopes, and the actor recorded in the
//! audit trail.
//!
//! A caller token reads `credd_ct_` + 43 random base64url characters (256 bits from
//! the OS CSPRNG) + a 6-character CRC32 checksum:
//!
//! ```text
//! ^credd_ct_[A-Za-z0-9_-]{43}[A-Za-z0-9_-]{6}$
//! ```
//!
//! Only its SHA-256 digest is stored: the token is high-entropy, so a fast digest is
//! as safe as a slow hash and costs nothing per RPC.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{Violation, ids};

/// The prefix of every caller token credd generates (distinct from client secrets').
pub const TOKEN_PREFIX: &str = "credd_ct_";
const RANDOM_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// The length of a generated caller token.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

/// What a caller may do. Each RPC needs exactly one scope; `admin` holds all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// GetOrg, ListOrgs, GetIntegration.
    OrgsRead,
    /// CreateOrg, UpdateOrg, DeleteOrg.
    OrgsWrite,
    /// Generate, Import, Activate, Revoke client secrets (and ListClientSecrets).
    SecretsWrite,
    /// VerifyClientSecret.
    SecretsVerify,
    /// Get/List app registrations, CheckRedirectUri, RenderAssociationFiles.
    AppsRead,
    /// Create/Update/Delete app registrations.
    AppsWrite,
    /// ListAuditEvents.
    AuditRead,
    /// Everything.
    Admin,
    /// ListClientSecrets (metadata only; `secrets:write` implies it).
    SecretsRead,
    /// What an edge gateway needs and nothing more: VerifyClientSecret,
    /// CheckRedirectUri, GetOrg by `client_id` or `custom_domain`, ResolveLogin.
    Gateway,
}

impl Scope {
    /// Every scope, in a stable order.
    pub const ALL: [Scope; 10] = [
        Scope::OrgsRead,
        Scope::OrgsWrite,
        Scope::SecretsRead,
        Scope::SecretsWrite,
        Scope::SecretsVerify,
        Scope::AppsRead,
        Scope::AppsWrite,
        Scope::AuditRead,
        Scope::Gateway,
        Scope::Admin,
    ];

    /// The scope's name, as operators write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrgsRead => "orgs:read",
            Scope::OrgsWrite => "orgs:write",
            Scope::SecretsWrite => "secrets:write",
            Scope::SecretsVerify => "secrets:verify",
            Scope::AppsRead => "apps:read",
            Scope::AppsWrite => "apps:write",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
            Scope::SecretsRead => "secrets:read",
            Scope::Gateway => "gateway",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Result<Scope, Violation> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                Violation::new(
                    "scope",
                    format!("unknown scope `{name}`; scopes are {}", names.join(", ")),
                )
            })
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Scopes(u16);

impl Scopes {
    /// The set holding `scopes`.
    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Scopes(scopes.into_iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Whether these scopes allow an RPC that needs `needed`: the scope itself,
    /// `admin`, or a scope that implies it (`secrets:write` implies
    /// `secrets:read`).
    pub fn allow(self, needed: Scope) -> bool {
        let mut granting = needed.bit() | Scope::Admin.bit();
        if needed == Scope::SecretsRead {
            granting |= Scope::SecretsWrite.bit();
        }
        self.0 & granting != 0
    }

    /// Whether these scopes allow an RPC that any of `needed` allows.
    pub fn allow_any(self, needed: &[Scope]) -> bool {
        needed.iter().any(|scope| self.allow(*scope))
    }

    /// The scopes in the set.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    /// Space-separated names, as stored.
    pub fn to_names(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    /// Reads the names a token was stored with, keeping the scopes this build knows
    /// and returning the others: a token written by a newer version during a
    /// rolling deploy keeps what this version can enforce, and never stops the
    /// other tokens (or their revocations) from loading.
    pub fn parse_stored(names: &str) -> (Self, Vec<String>) {
        let mut unknown = Vec::new();
        let scopes = names
            .split([' ', ','])
            .filter(|n| !n.is_empty())
            .filter_map(|name| {
                Scope::parse(name)
                    .map_err(|_| unknown.push(name.to_owned()))
                    .ok()
            })
            .collect::<Vec<_>>();
        (Scopes::of(scopes), unknown)
    }

    /// Parses space- or comma-separated names; at least one.
    pub fn parse_names(names: &str) -> Result<Self, Violation> {
        let scopes = names
            .split([' ', ','])
            .filter(|n| !n.is_empty())
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err(Violation::new("scope", "at least one scope is required"));
        }
        Ok(Scopes::of(scopes))
    }
}

/// Which orgs a caller reaches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OrgAccess {
    /// Every org (a token without `org_ids`).
    #[default]
    All,
    /// Only these orgs (sorted, no duplicates).
    Only(std::sync::Arc<[ids::OrgId]>),
}

impl OrgAccess {
    /// Access to exactly `orgs` (none: every org).
    pub fn of(mut orgs: Vec<ids::OrgId>) -> Self {
        if orgs.is_empty() {
            return Self::All;
        }
        orgs.sort_unstable();
        orgs.dedup();
        Self::Only(orgs.into())
    }

    /// Whether the caller reaches `org_id`.
    pub fn reaches(&self, org_id: &ids::OrgId) -> bool {
        self.reaches_id(org_id.as_str())
    }

    /// Whether the caller reaches the org whose id reads `org_id` (what the
    /// in-memory paths keep, without making an `OrgId` of it).
    pub fn reaches_id(&self, org_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(orgs) => orgs
                .binary_search_by(|org| org.as_str().cmp(org_id))
                .is_ok(),
        }
    }

    /// `org_id` as an org this caller reaches: the only way a use case is told
    /// which org to act on. PERMISSION_DENIED-worthy (`None`) outside its orgs,
    /// whether the org exists or not (AIP-211).
    pub fn admit(&self, org_id: ids::OrgId) -> Option<ReachedOrg> {
        self.reaches(&org_id).then_some(ReachedOrg(org_id))
    }

    /// Whether the caller reaches everything `other` reaches.
    pub fn covers(&self, other: &OrgAccess) -> bool {
        match (self, other) {
            (Self::All, _) => true,
            (Self::Only(_), Self::All) => false,
            (Self::Only(_), Self::Only(theirs)) => theirs.iter().all(|org| self.reaches(org)),
        }
    }

    /// The orgs, when limited.
    pub fn orgs(&self) -> Option<&[ids::OrgId]> {
        match self {
            Self::All => None,
            Self::Only(orgs) => Some(orgs),
        }
    }

    /// Space-separated ids, as stored (empty: every org).
    pub fn to_stored(&self) -> String {
        self.orgs()
            .map(|orgs| {
                orgs.iter()
                    .map(ids::OrgId::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    /// The access stored as `text` (space-separated ids; empty: every org).
    pub fn from_stored(text: &str) -> Self {
        Self::of(
            text.split_whitespace()
                .map(|id| ids::OrgId::from_stored(id.to_owned()))
                .collect(),
        )
    }
}

/// An org whose reach was checked: the caller reaches it ([`OrgAccess::admit`]),
/// or credd names it for its own work ([`ReachedOrg::by_credd`]: sweeps, the
/// command line, rows it read itself). Every use case that acts on one org takes
/// this rather than an `OrgId`, so that a path that forgot the caller's reach
/// does not compile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReachedOrg(ids::OrgId);

impl ReachedOrg {
    /// An org credd acts on by itself, not for a caller (a background task, the
    /// command line, an org it just created or read from the store).
    pub fn by_credd(org_id: ids::OrgId) -> Self {
        Self(org_id)
    }

    /// The org id.
    pub fn id(&self) -> &ids::OrgId {
        &self.0
    }

    /// The org id, owned.
    pub fn into_id(self) -> ids::OrgId {
        self.0
    }
}

impl std::ops::Deref for ReachedOrg {
    type Target = ids::OrgId;

    fn deref(&self) -> &ids::OrgId {
        &self.0
    }
}

/// The stored token a caller presented: what a token it makes inherits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOrigin {
    /// The token's id, recorded as the `parent_id` of what it makes.
    pub id: ids::CallerTokenId,
    /// When it stops working: what it makes stops then at the latest.
    pub expire_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// An authenticated caller. Cheap to clone (every field is shared or small):
/// each RPC hands one from the token table to its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller token's name, recorded in the audit trail.
    pub name: std::sync::Arc<str>,
    /// What it may do.
    pub scopes: Scopes,
    /// Which orgs it reaches.
    pub orgs: OrgAccess,
    /// The stored token it presented; `None` for the bootstrap token, the root.
    pub token: Option<std::sync::Arc<TokenOrigin>>,
}

impl Caller {
    /// The `parent_id` and end of a token this caller makes, asked to end at
    /// `requested`: no later than the caller's own token (a token cannot mint
    /// one that outlives it); the bootstrap token's tokens live as asked.
    pub fn child_token_bounds(
        &self,
        requested: Option<chrono::DateTime<chrono::Utc>>,
    ) -> (
        Option<ids::CallerTokenId>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) {
        match &self.token {
            None => (None, requested),
            Some(origin) => {
                let end = match (requested, origin.expire_time) {
                    (Some(asked), Some(own)) => Some(asked.min(own)),
                    (asked, own) => asked.or(own),
                };
                (Some(origin.id.clone()), end)
            }
        }
    }
}

/// Names credd's own actors write under in the audit trail; no token may take one.
pub const RESERVED_NAMES: [&str; 5] = ["credd", "bootstrap", "cli", "first-start", "unknown"];

impl Caller {
    /// The caller that presents `CREDD_BOOTSTRAP_TOKEN`: an admin of every org.
    pub fn bootstrap() -> Self {
        static BOOTSTRAP: std::sync::LazyLock<Caller> = std::sync::LazyLock::new(|| Caller {
            name: "bootstrap".into(),
            scopes: Scopes::of([Scope::Admin]),
            orgs: OrgAccess::All,
            token: None,
        });
        BOOTSTRAP.clone()
    }
}

/// Who did a write, for the audit trail: the caller's name and the request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The caller token's name (`bootstrap`, `cli` for the command line).
    pub caller: String,
    /// The request id (the caller's `x-request-id`, or one credd made).
    pub request_id: String,
}

impl Actor {
    /// The operator at the command line (`credd token …`).
    pub fn cli() -> Self {
        Self::internal("cli")
    }

    /// credd itself, or another caller that is not an RPC (`credd`, `first-start`).
    pub fn internal(name: &str) -> Self {
        Self {
            caller: name.to_owned(),
            request_id: ids::new_request_id(),
        }
    }
}

/// A caller token's metadata (never the token or its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerToken {
    /// Server-assigned id.
    pub id: ids::CallerTokenId,
    /// Its name, shown in the audit trail.
    pub name: String,
    /// What it may do.
    pub scopes: Scopes,
    /// Which orgs it reaches.
    pub orgs: OrgAccess,
    /// Its last four characters.
    pub hint: String,
    /// Created at.
    pub create_time: chrono::DateTime<chrono::Utc>,
    /// Stops working at, if ever.
    pub expire_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Revoked at.
    pub revoke_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Last used (coalesced to about a minute).
    pub last_used_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The stored token that made it (`None`: the bootstrap token or the CLI).
    pub parent_id: Option<ids::CallerTokenId>,
}

/// Checks a caller token's name: 1 to 100 letters, digits, `-`, `_`, `.`, and
/// none of credd's own actors' names (any case), so that nothing a token does
/// reads as credd's own in the audit trail.
pub fn parse_token_name(value: &str) -> Result<String, Violation> {
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(value)) {
        return Err(Violation::new(
            "name",
            format!(
                "`{value}` is reserved for credd's own actors ({})",
                RESERVED_NAMES.join(", ")
            ),
        ));
    }
    if !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(value.to_owned())
    } else {
        Err(Violation::new(
            "name",
            "must be 1 to 100 letters, digits, '-', '_' or '.'",
        ))
    }
}

/// A freshly generated caller token: shown once, stored as its digest.
pub struct NewToken {
    /// The token (redacted in Debug output).
    pub token: SecretString,
    /// Its SHA-256 digest, hex.
    pub digest: String,
    /// Its last four characters, for humans.
    pub hint: String,
}

/// Generates a caller token.
pub fn generate_token() -> NewToken {
    let mut text = String::with_capacity(TOKEN_LEN);
    text.push_str(TOKEN_PREFIX);
    text.push_str(&URL_SAFE_NO_PAD.encode(ids::random_bytes::<32>()));
    let checksum = crc32fast::hash(text.as_bytes());
    text.push_str(&URL_SAFE_NO_PAD.encode(checksum.to_be_bytes()));
    let digest = token_digest_hex(text.as_bytes());
    let hint = text[text.len() - 4..].to_owned();
    NewToken {
        token: text.into(),
        digest,
        hint,
    }
}

/// Whether `token` has a generated token's shape and a valid checksum.
pub fn is_well_formed_token(token: &[u8]) -> bool {
    if token.len() != TOKEN_LEN || !token.starts_with(TOKEN_PREFIX.as_bytes()) {
        return false;
    }
    let (body, checksum) = token.split_at(TOKEN_LEN - CHECKSUM_LEN);
    URL_SAFE_NO_PAD
        .encode(crc32fast::hash(body).to_be_bytes())
        .as_bytes()
        == checksum
}

/// The SHA-256 digest of a token.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The SHA-256 digest of a token, lower-case hex, as stored.
pub fn token_digest_hex(token: &[u8]) -> String {
    hex::encode(token_digest(token))
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

impl super::paging::Keyed for CallerToken {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}

impl NewToken {
    /// The token's text, for printing it once.
    pub fn reveal(&self) -> &str {
        self.token.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_scopes_keep_the_known_and_return_the_unknown() {
        let (scopes, unknown) = Scopes::parse_stored("orgs:read billing:write,apps:read");
        assert_eq!(scopes, Scopes::of([Scope::OrgsRead, Scope::AppsRead]));
        assert_eq!(unknown, ["billing:write"]);
        assert_eq!(Scopes::parse_stored("future:only").0, Scopes::default());
    }

    #[test]
    fn generated_tokens_are_prefixed_checksummed_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert!(a.reveal().starts_with("credd_ct_"));
        assert_eq!(a.reveal().len(), TOKEN_LEN);
        assert!(is_well_formed_token(a.reveal().as_bytes()));
        assert_ne!(a.reveal(), b.reveal());
        assert_eq!(a.digest, token_digest_hex(a.reveal().as_bytes()));
        let mut flipped = a.reveal().as_bytes().to_vec();
        flipped[12] ^= 1;
        assert!(!is_well_formed_token(&flipped));
        assert!(!format!("{a:?}").contains(a.reveal()));
    }

    #[test]
    fn org_access_reaches_its_orgs_and_covers_subsets() {
        let a = ids::OrgId::generate();
        let b = ids::OrgId::generate();
        let c = ids::OrgId::generate();
        let ab = OrgAccess::of(vec![b.clone(), a.clone(), a.clone()]);
        assert!(ab.reaches(&a) && ab.reaches(&b) && !ab.reaches(&c));
        assert!(OrgAccess::All.reaches(&c));
        assert!(ab.covers(&OrgAccess::of(vec![a.clone()])));
        assert!(!ab.covers(&OrgAccess::of(vec![a.clone(), c.clone()])));
        assert!(!ab.covers(&OrgAccess::All));
        assert!(OrgAccess::All.covers(&ab));
        assert_eq!(OrgAccess::from_stored(&ab.to_stored()), ab);
        assert_eq!(OrgAccess::from_stored(""), OrgAccess::All);
        assert_eq!(OrgAccess::of(Vec::new()), OrgAccess::All);
    }

    #[test]
    fn reserved_names_are_refused_in_any_case() {
        for name in RESERVED_NAMES.iter().chain(&["CREDD", "Bootstrap"]) {
            assert_eq!(parse_token_name(name).unwrap_err().field, "name", "{name}");
        }
        assert!(parse_token_name("credd-gateway").is_ok());
    }

    #[test]
    fn a_token_never_makes_one_that_outlives_it() {
        let now = chrono::Utc::now();
        let hour = chrono::Duration::hours(1);
        let maker = |end| Caller {
            token: Some(std::sync::Arc::new(TokenOrigin {
                id: ids::CallerTokenId::generate(),
                expire_time: end,
            })),
            ..Caller::bootstrap()
        };
        assert_eq!(maker(Some(now)).child_token_bounds(None).1, Some(now));
        assert_eq!(
            maker(Some(now)).child_token_bounds(Some(now + hour)).1,
            Some(now)
        );
        assert_eq!(
            maker(Some(now + hour)).child_token_bounds(Some(now)).1,
            Some(now)
        );
        assert_eq!(maker(None).child_token_bounds(None).1, None);
        assert!(maker(None).child_token_bounds(None).0.is_some());
        assert_eq!(Caller::bootstrap().child_token_bounds(None), (None, None));
    }

    #[test]
    fn secrets_write_implies_secrets_read_and_gateway_is_its_own() {
        let write = Scopes::of([Scope::SecretsWrite]);
        assert!(write.allow(Scope::SecretsRead));
        assert!(!Scopes::of([Scope::SecretsRead]).allow(Scope::SecretsWrite));
        let gateway = Scopes::of([Scope::Gateway]);
        assert!(gateway.allow_any(&[Scope::SecretsVerify, Scope::Gateway]));
        assert!(!gateway.allow(Scope::OrgsRead));
    }

    #[test]
    fn admin_allows_everything_and_scopes_only_themselves() {
        let gateway = Scopes::parse_names("secrets:verify apps:read").unwrap();
        assert!(gateway.allow(Scope::SecretsVerify));
        assert!(gateway.allow(Scope::AppsRead));
        assert!(!gateway.allow(Scope::SecretsWrite));
        assert!(!gateway.allow(Scope::OrgsRead));
        let admin = Scopes::of([Scope::Admin]);
        assert!(Scope::ALL.iter().all(|s| admin.allow(*s)));
        assert_eq!(Scopes::parse_names(&gateway.to_names()).unwrap(), gateway);
        assert!(Scopes::parse_names("orgs:read,nope").is_err());
        assert!(Scopes::parse_names("").is_err());
    }
}
