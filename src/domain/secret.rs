//! Client secrets: states, the generated-secret format, and the rules for imports,
//! descriptions and grace periods.
//!
//! A generated secret reads `credd_cs_` + locator (22) + random (43) + checksum (6),
//! all base64url without padding:
//!
//! ```text
//! ^credd_cs_[A-Za-z0-9_-]{22}[A-Za-z0-9_-]{43}[A-Za-z0-9_-]{6}$
//! ```
//!
//! - the prefix makes a leaked secret recognisable to secret scanners;
//! - the locator is the secret's own id (16 bytes), so verify hashes at most one
//!   candidate;
//! - the random part is 32 bytes (256 bits) from the OS CSPRNG;
//! - the checksum is CRC32 over everything before it, so a mistyped or truncated
//!   secret is refused without any argon2 work.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::{
    Violation,
    ids::{self, OrgId, SecretId},
    paging::Keyed,
};

/// The prefix of every secret credd generates.
pub const PREFIX: &str = "credd_cs_";
const LOCATOR_LEN: usize = 22;
const RANDOM_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// The length of a generated secret.
pub const GENERATED_LEN: usize = PREFIX.len() + LOCATOR_LEN + RANDOM_LEN + CHECKSUM_LEN;

/// The shortest secret an admin may import.
pub const MIN_IMPORT_LEN: usize = 32;
/// The longest secret credd will look at (import or verify); longer is refused
/// before any work.
pub const MAX_SECRET_LEN: usize = 512;
/// Distinct characters an imported secret must have at least (refuses `aaaa…`,
/// `abababab…` and similar).
pub const MIN_IMPORT_DISTINCT: usize = 10;
/// How many trailing characters the hint shows.
pub const HINT_LEN: usize = 4;
/// The longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// The longest grace period any activation may give the previous secret; the
/// org's policy (`max_grace_period`, 30 days by default) bounds it further.
pub const MAX_GRACE: Duration = super::policy::MAX_DURATION;

/// The lifecycle state of a client secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientSecretState {
    /// Generated or imported, not yet active; does not verify.
    Pending,
    /// The org's one current secret.
    Active,
    /// The previous secret during a grace period; verifies until its expiry.
    Retiring,
    /// Replaced by a newer activation (or its grace ended).
    Superseded,
    /// Revoked by an admin.
    Revoked,
    /// Past its lifetime, or PENDING past its wait for activation.
    Expired,
}

impl ClientSecretState {
    /// The name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Active => "ACTIVE",
            Self::Retiring => "RETIRING",
            Self::Superseded => "SUPERSEDED",
            Self::Revoked => "REVOKED",
            Self::Expired => "EXPIRED",
        }
    }

    /// The state stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "PENDING" => Self::Pending,
            "ACTIVE" => Self::Active,
            "RETIRING" => Self::Retiring,
            "SUPERSEDED" => Self::Superseded,
            "REVOKED" => Self::Revoked,
            "EXPIRED" => Self::Expired,
            _ => return None,
        })
    }
}

/// A secret's metadata: never the secret, never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSecret {
    /// Server-assigned id (the locator of a generated secret).
    pub id: SecretId,
    /// The org it belongs to.
    pub org_id: OrgId,
    /// The stored state; see [`ClientSecret::state_at`] for the state as of a time.
    pub state: ClientSecretState,
    /// Free text for humans.
    pub description: String,
    /// The last characters of the secret.
    pub hint: String,
    /// Imported by an admin rather than generated.
    pub imported: bool,
    /// Generated or imported at.
    pub create_time: DateTime<Utc>,
    /// Activated at.
    pub activate_time: Option<DateTime<Utc>>,
    /// When it stops (or stopped) verifying: the first of its lifetime end, a
    /// rotation's grace end, its supersession.
    pub expire_time: Option<DateTime<Utc>>,
    /// The end of its lifetime, fixed when it was issued (`None`: none).
    pub lifetime_end: Option<DateTime<Utc>>,
    /// When a PENDING secret stops waiting for activation, fixed when it was
    /// issued (`None`: it may wait for ever).
    pub pending_expire_time: Option<DateTime<Utc>>,
    /// Revoked at.
    pub revoke_time: Option<DateTime<Utc>>,
    /// Last successful verification (coalesced to about a minute).
    pub last_used_time: Option<DateTime<Utc>>,
}

/// The state as of `now` of a secret that can verify, stored as `state` with
/// `expire_time`: an ACTIVE one past it is EXPIRED (its lifetime ended), a
/// RETIRING one past it SUPERSEDED (its grace, or its lifetime, ended).
pub fn state_at(
    state: ClientSecretState,
    expire_time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ClientSecretState {
    let past = expire_time.is_some_and(|end| end <= now);
    match state {
        ClientSecretState::Active if past => ClientSecretState::Expired,
        ClientSecretState::Retiring if past => ClientSecretState::Superseded,
        state => state,
    }
}

impl ClientSecret {
    /// The state as of `now`, to the second, whether the sweeper has stored it
    /// yet or not: a PENDING secret past its wait or its lifetime is EXPIRED, an
    /// ACTIVE one past its lifetime EXPIRED, a RETIRING one past its lifetime
    /// EXPIRED and past its grace SUPERSEDED.
    pub fn state_at(&self, now: DateTime<Utc>) -> ClientSecretState {
        let past = |end: Option<DateTime<Utc>>| end.is_some_and(|end| end <= now);
        match self.state {
            ClientSecretState::Pending
                if past(self.pending_expire_time) || past(self.lifetime_end) =>
            {
                ClientSecretState::Expired
            }
            ClientSecretState::Active | ClientSecretState::Retiring if past(self.lifetime_end) => {
                ClientSecretState::Expired
            }
            state => state_at(state, self.expire_time, now),
        }
    }

    /// Whether the secret verifies at `now`: ACTIVE, or RETIRING before its expiry.
    pub fn verifies_at(&self, now: DateTime<Utc>) -> bool {
        matches!(
            self.state_at(now),
            ClientSecretState::Active | ClientSecretState::Retiring
        )
    }
}

impl Keyed for ClientSecret {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}

/// The state of an org's secrets as its integration view shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretOverview {
    /// The ACTIVE secret.
    pub active: Option<ClientSecret>,
    /// How many wait for activation.
    pub pending_count: usize,
    /// Previous secrets still inside their grace period.
    pub retiring: Vec<ClientSecret>,
}

impl SecretOverview {
    /// The overview of `secrets` (an org's current ones) as of `now`.
    pub fn of(secrets: Vec<ClientSecret>, now: DateTime<Utc>) -> Self {
        let mut overview = Self::default();
        for mut secret in secrets {
            secret.state = secret.state_at(now);
            match secret.state {
                ClientSecretState::Active => overview.active = Some(secret),
                ClientSecretState::Pending => overview.pending_count += 1,
                ClientSecretState::Retiring => overview.retiring.push(secret),
                ClientSecretState::Superseded
                | ClientSecretState::Revoked
                | ClientSecretState::Expired => {}
            }
        }
        overview
    }
}

/// One change of a secret's stored state, decided here and applied by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The secret.
    pub secret_id: SecretId,
    /// The stored state the store must still find (else another write won a race).
    pub from: ClientSecretState,
    /// The new stored state.
    pub to: ClientSecretState,
    /// The new `expire_time`, when it changes.
    pub expire_time: Option<DateTime<Utc>>,
    /// The new `activate_time`, when it changes.
    pub activate_time: Option<DateTime<Utc>>,
}

/// What activating a secret does to its org's secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// The secret is already the ACTIVE one: nothing changes.
    AlreadyActive,
    /// These transitions, in this order: every step down comes before the one step
    /// up, so that the store's one-ACTIVE rule holds after every statement.
    Apply(Vec<Transition>),
}

/// Why a secret cannot be activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationRefused {
    /// It was revoked.
    Revoked,
    /// A later activation replaced it (it was ACTIVE once, or its grace ended).
    Superseded,
    /// Its lifetime or its wait for activation ended.
    Expired,
}

impl ActivationRefused {
    /// What to tell the caller.
    pub fn message(self) -> &'static str {
        match self {
            Self::Revoked => "the secret is revoked; generate or import a new one",
            Self::Superseded => {
                "the secret was superseded by a later activation; generate or import a new one"
            }
            Self::Expired => {
                "the secret expired (its lifetime, or its wait for activation, ended); generate or import a new one"
            }
        }
    }
}

/// The rule of activation: `target` becomes the org's one ACTIVE secret at `now`;
/// the previous ACTIVE one retires for `grace` (or is superseded at once when
/// `grace` is zero), never past its own lifetime end; earlier rotations' grace
/// ends now; and every PENDING secret created before `target` is superseded
/// (the documents: "once activated, any old secrets will be invalidated"), while
/// newer ones stay. `current` holds the org's other secrets whose stored state is
/// PENDING, ACTIVE or RETIRING.
pub fn plan_activation(
    target: &ClientSecret,
    current: &[ClientSecret],
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Activation, ActivationRefused> {
    match target.state_at(now) {
        ClientSecretState::Active => return Ok(Activation::AlreadyActive),
        ClientSecretState::Pending => {}
        ClientSecretState::Revoked => return Err(ActivationRefused::Revoked),
        ClientSecretState::Expired => return Err(ActivationRefused::Expired),
        ClientSecretState::Retiring | ClientSecretState::Superseded => {
            return Err(ActivationRefused::Superseded);
        }
    }
    // Never later than its own lifetime end.
    let bounded = |secret: &ClientSecret, end: DateTime<Utc>| {
        secret.lifetime_end.map_or(end, |life| life.min(end))
    };
    let mut transitions = Vec::new();
    for secret in current.iter().filter(|s| s.id != target.id) {
        match secret.state {
            ClientSecretState::Retiring => transitions.push(Transition {
                secret_id: secret.id.clone(),
                from: ClientSecretState::Retiring,
                to: ClientSecretState::Superseded,
                // A grace still running ends now; one already over keeps its end.
                expire_time: secret
                    .expire_time
                    .is_none_or(|end| end > now)
                    .then_some(now),
                activate_time: None,
            }),
            ClientSecretState::Active => {
                let (to, end) = if grace > Duration::zero() {
                    (ClientSecretState::Retiring, bounded(secret, now + grace))
                } else {
                    (ClientSecretState::Superseded, bounded(secret, now))
                };
                transitions.push(Transition {
                    secret_id: secret.id.clone(),
                    from: ClientSecretState::Active,
                    to,
                    expire_time: Some(end),
                    activate_time: None,
                });
            }
            ClientSecretState::Pending if secret.id < target.id => transitions.push(Transition {
                secret_id: secret.id.clone(),
                from: ClientSecretState::Pending,
                to: ClientSecretState::Superseded,
                expire_time: Some(bounded(secret, now)),
                activate_time: None,
            }),
            _ => {}
        }
    }
    transitions.push(Transition {
        secret_id: target.id.clone(),
        from: ClientSecretState::Pending,
        to: ClientSecretState::Active,
        expire_time: None,
        activate_time: Some(now),
    });
    Ok(Activation::Apply(transitions))
}

/// What a presented secret is, judged from its text alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// A well-formed generated secret; `secret_id` is its locator.
    Generated {
        /// The id of the one row it can match.
        secret_id: SecretId,
    },
    /// Not generated by credd but shaped like an importable secret; `hint` selects
    /// the candidates.
    ImportShaped {
        /// The trailing characters, compared with stored hints.
        hint: String,
    },
    /// Neither: refused without any hashing.
    Malformed(MalformedReason),
}

/// Why a presented secret was refused from its text alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MalformedReason {
    /// Empty.
    Empty,
    /// Longer than [`MAX_SECRET_LEN`].
    Oversized,
    /// Carries the prefix but not the length of a generated secret.
    BadLength,
    /// Carries the prefix but its checksum does not match.
    BadChecksum,
    /// Neither a generated secret nor an importable one.
    BadCharacters,
}

impl MalformedReason {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Oversized => "oversized",
            Self::BadLength => "bad_length",
            Self::BadChecksum => "bad_checksum",
            Self::BadCharacters => "bad_characters",
        }
    }
}

/// Generates a new secret and the id of its row, which the secret carries as its
/// locator.
pub fn generate() -> (SecretId, SecretString) {
    let id = SecretId::generate();
    let secret = generate_for(&id);
    (id, secret)
}

/// Generates a secret whose locator is `secret_id`: fresh random bits, so it is
/// never the stored secret of that row (benchmarks and tests use it as a
/// well-formed wrong secret).
pub fn generate_for(secret_id: &SecretId) -> SecretString {
    let uuid = uuid::Uuid::try_parse(secret_id.as_str()).unwrap_or_default();
    let mut text = String::with_capacity(GENERATED_LEN);
    text.push_str(PREFIX);
    text.push_str(&URL_SAFE_NO_PAD.encode(uuid.as_bytes()));
    text.push_str(&URL_SAFE_NO_PAD.encode(ids::random_bytes::<32>()));
    let checksum = crc32fast::hash(text.as_bytes());
    text.push_str(&URL_SAFE_NO_PAD.encode(checksum.to_be_bytes()));
    text.into()
}

/// Classifies a presented secret without any hashing.
pub fn classify(secret: &str) -> Presented {
    if secret.is_empty() {
        return Presented::Malformed(MalformedReason::Empty);
    }
    if secret.len() > MAX_SECRET_LEN {
        return Presented::Malformed(MalformedReason::Oversized);
    }
    if let Some(rest) = secret.strip_prefix(PREFIX) {
        if secret.len() != GENERATED_LEN || !rest.bytes().all(is_base64url) {
            return Presented::Malformed(MalformedReason::BadLength);
        }
        let (body, checksum) = secret.split_at(GENERATED_LEN - CHECKSUM_LEN);
        let expected = URL_SAFE_NO_PAD.encode(crc32fast::hash(body.as_bytes()).to_be_bytes());
        if checksum != expected {
            return Presented::Malformed(MalformedReason::BadChecksum);
        }
        let locator = &rest[..LOCATOR_LEN];
        return match URL_SAFE_NO_PAD
            .decode(locator)
            .ok()
            .and_then(|b| uuid::Uuid::from_slice(&b).ok())
        {
            Some(uuid) => Presented::Generated {
                secret_id: SecretId::from_uuid(uuid),
            },
            None => Presented::Malformed(MalformedReason::BadChecksum),
        };
    }
    if secret.len() >= MIN_IMPORT_LEN && is_base64_text(secret) {
        Presented::ImportShaped { hint: hint(secret) }
    } else {
        Presented::Malformed(MalformedReason::BadCharacters)
    }
}

/// Checks an admin-chosen secret for import, naming the rule it breaks.
pub fn validate_import(field: &str, secret: &SecretString) -> Result<(), Violation> {
    let secret = secret.expose_secret();
    let fail = |rule: &str| Err(Violation::new(field, rule));
    if secret.is_empty() {
        return fail("is required");
    }
    if secret.starts_with(PREFIX) {
        return fail(
            "looks like a secret credd generated; import only secrets you generated yourself",
        );
    }
    if !is_base64_text(secret) {
        return fail(
            "must hold only base64 or base64url characters (A-Z a-z 0-9 + / - _, '=' padding at the end)",
        );
    }
    if secret.len() < MIN_IMPORT_LEN {
        return fail("must be at least 32 characters (24 random bytes in base64)");
    }
    if secret.len() > MAX_SECRET_LEN {
        return fail("must be at most 512 characters");
    }
    if ids::ClientId::parse(secret).is_some() {
        // A caller who swaps the two Basic-auth fields would send such a secret as
        // the client_id, which is logged.
        return fail(
            "must not look like a client ID (32 lower-case hex characters): use a longer or base64 secret",
        );
    }
    let mut distinct: Vec<u8> = secret.bytes().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_IMPORT_DISTINCT {
        return fail("is too repetitive to be random: use at least 10 different characters");
    }
    let bits = estimated_bits(secret);
    if bits < MIN_IMPORT_BITS {
        return Err(Violation::new(
            field,
            format!(
                "is too predictable: about {bits:.0} bits of entropy by credd's estimate, at least \
                 {MIN_IMPORT_BITS:.0} required (repeated blocks, keyboard walks, sequences and common \
                 words count for little); generate it with a CSPRNG, e.g. `openssl rand -base64 32`"
            ),
        ));
    }
    Ok(())
}

/// The least estimated entropy an imported secret must carry.
pub const MIN_IMPORT_BITS: f64 = 128.0;

/// Keyboard rows, for walks such as `qwerty` or `asdf`.
const KEYBOARD_ROWS: [&str; 4] = ["1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm"];
/// Words that make a secret guessable however long it is.
const COMMON_WORDS: [&str; 10] = [
    "password", "passwort", "secret", "letmein", "welcome", "admin", "qwerty", "changeme",
    "dragon", "monkey",
];

/// A conservative estimate of the entropy of `secret`, in bits: each character that
/// is not predictable from the ones before it is worth log2 of the alphabet its
/// character classes span. Predictable are: characters of a 3-character block seen
/// earlier, the continuation of a sequence or keyboard walk (`abc`,
/// `987`, `qwer`) and of a common word. Random base64 of 32 characters estimates
/// at about 190 bits; `Password1Password1Password1Pa` at about 50.
pub fn estimated_bits(secret: &str) -> f64 {
    let bytes = secret.as_bytes();
    let lower = secret.to_ascii_lowercase();
    let mut predictable = vec![false; bytes.len()];
    // Blocks seen before: a 3-character block that occurred earlier (linear time
    // however long the secret).
    let mut seen = std::collections::HashSet::new();
    for start in 0..bytes.len().saturating_sub(2) {
        if !seen.insert(&bytes[start..start + 3]) {
            predictable[start..start + 3]
                .iter_mut()
                .for_each(|p| *p = true);
        }
    }
    // Sequences and keyboard walks: a character that continues a run of neighbours.
    let lower_bytes = lower.as_bytes();
    let key = |c: u8| {
        KEYBOARD_ROWS
            .iter()
            .enumerate()
            .find_map(|(row, keys)| keys.bytes().position(|k| k == c).map(|col| (row, col)))
    };
    let neighbours = |a: u8, b: u8| {
        a.abs_diff(b) == 1
            || match (key(a), key(b)) {
                // Along a row, or down a column (each row sits a little to the right
                // of the one above it: `1qaz`, `2wsx`).
                (Some((ra, ca)), Some((rb, cb))) => {
                    (ra == rb && ca.abs_diff(cb) == 1)
                        || (ra + 1 == rb && (cb == ca || cb + 1 == ca))
                        || (rb + 1 == ra && (ca == cb || ca + 1 == cb))
                }
                _ => false,
            }
    };
    for i in 2..lower_bytes.len() {
        if neighbours(lower_bytes[i - 2], lower_bytes[i - 1])
            && neighbours(lower_bytes[i - 1], lower_bytes[i])
        {
            predictable[i - 1] = true;
            predictable[i] = true;
        }
    }
    // Constant-stride runs of any stride (`ACEGIK`, `13579`, `zwtq`), as zxcvbn's
    // sequence matcher counts them: a character that keeps the step between the
    // two before it is predictable.
    for i in 2..bytes.len() {
        let step = |a: u8, b: u8| i16::from(b) - i16::from(a);
        if step(bytes[i - 2], bytes[i - 1]) == step(bytes[i - 1], bytes[i]) {
            predictable[i - 1] = true;
            predictable[i] = true;
        }
    }
    // Common words: everything but their first character.
    for word in COMMON_WORDS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(word) {
            let at = from + at;
            predictable[at + 1..at + word.len()]
                .iter_mut()
                .for_each(|p| *p = true);
            from = at + 1;
        }
    }
    let hex_only = bytes.iter().all(u8::is_ascii_hexdigit)
        && !(bytes.iter().any(u8::is_ascii_lowercase) && bytes.iter().any(u8::is_ascii_uppercase));
    let alphabet: u32 = if hex_only {
        16
    } else {
        [
            (bytes.iter().any(u8::is_ascii_lowercase), 26),
            (bytes.iter().any(u8::is_ascii_uppercase), 26),
            (bytes.iter().any(u8::is_ascii_digit), 10),
            (
                bytes
                    .iter()
                    .any(|b| !b.is_ascii_alphanumeric() && *b != b'='),
                4,
            ),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .map(|(_, size)| size)
        .sum()
    };
    let free = predictable.iter().filter(|p| !**p).count();
    free as f64 * f64::from(alphabet.max(2)).log2()
}

/// The prefix of a stored SHA-256 digest: `$sha256$` + the digest in base64
/// (standard alphabet, no padding), self-describing like a PHC string.
pub const DIGEST_PREFIX: &str = "$sha256$";

/// How a secret is stored, read from its PHC-style string.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredHash {
    /// A credd-generated secret (256 random bits): its SHA-256 digest. A slow
    /// hash adds nothing against brute force of such a value.
    Digest([u8; 32]),
    /// An imported (caller-chosen) secret, or a generated one stored before
    /// digests: an argon2id PHC string.
    Argon2(String),
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is no secret, but it has no business in logs either.
        f.write_str(match self {
            Self::Digest(_) => "Digest(..)",
            Self::Argon2(_) => "Argon2(..)",
        })
    }
}

impl StoredHash {
    /// The stored form of `phc`; `None` for a format this build does not know.
    pub fn parse(phc: &str) -> Option<Self> {
        use base64::engine::general_purpose::STANDARD_NO_PAD;
        if let Some(encoded) = phc.strip_prefix(DIGEST_PREFIX) {
            let bytes = STANDARD_NO_PAD.decode(encoded).ok()?;
            return bytes.try_into().ok().map(Self::Digest);
        }
        phc.starts_with("$argon2id$")
            .then(|| Self::Argon2(phc.to_owned()))
    }

    /// The digest of a generated `secret`, as stored.
    pub fn digest_of(secret: &str) -> Self {
        Self::Digest(sha256(secret))
    }

    /// The string stored for this hash.
    pub fn to_phc(&self) -> String {
        use base64::engine::general_purpose::STANDARD_NO_PAD;
        match self {
            Self::Digest(digest) => format!("{DIGEST_PREFIX}{}", STANDARD_NO_PAD.encode(digest)),
            Self::Argon2(phc) => phc.clone(),
        }
    }

    /// Whether `secret` matches this digest, in constant time; `false` for an
    /// argon2 hash (which the hasher checks, off the async threads).
    pub fn digest_matches(&self, secret: &str) -> bool {
        match self {
            Self::Digest(digest) => digest_matches(digest, secret),
            Self::Argon2(_) => false,
        }
    }
}

/// Whether SHA-256 of `secret` is `digest`, compared in constant time. With a
/// random `digest`, the same work as a real check: the dummy for unknown clients.
///
/// Compared as four 64-bit words (subtle's `u64` comparison, one optimisation
/// barrier each), not 32 bytes with a barrier each: the same constant time, a
/// fifth of the cost on the verify path.
pub fn digest_matches(digest: &[u8; 32], secret: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let presented = sha256(secret);
    let word = |bytes: &[u8; 32], i: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(word)
    };
    let same = (0..4).fold(subtle::Choice::from(1), |same, i| {
        same & word(&presented, i).ct_eq(&word(digest, i))
    });
    bool::from(same)
}

fn sha256(secret: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// The hint shown for `secret`: its last few characters.
pub fn hint(secret: &str) -> String {
    let start = secret.len().saturating_sub(HINT_LEN);
    secret.get(start..).unwrap_or_default().to_owned()
}

/// A description: at most 200 characters, no control characters.
pub fn parse_description(field: &str, value: &str) -> Result<String, Violation> {
    let value = value.trim();
    if value.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Violation::new(field, "must be at most 200 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(Violation::new(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A grace period: zero (the default) up to [`MAX_GRACE`]; the org's policy is
/// checked where the org is known.
pub fn parse_grace(field: &str, seconds: i64, nanos: i32) -> Result<Duration, Violation> {
    if seconds < 0 || nanos < 0 {
        return Err(Violation::new(field, "must not be negative"));
    }
    if nanos > 999_999_999 {
        return Err(Violation::new(field, "nanos must be below one second"));
    }
    // Compared before building a Duration: huge values would overflow it.
    if seconds > MAX_GRACE.num_seconds() || (seconds == MAX_GRACE.num_seconds() && nanos > 0) {
        return Err(Violation::new(field, "must be at most 3650 days"));
    }
    Ok(Duration::seconds(seconds) + Duration::nanoseconds(i64::from(nanos)))
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Base64 or base64url characters, with optional `=` padding only at the end.
fn is_base64_text(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len() - body.len() <= 2
        && !body.is_empty()
        && body
            .bytes()
            .all(|b| is_base64url(b) || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> (SecretId, String) {
        let (id, secret) = generate();
        (id, secret.expose_secret().to_owned())
    }

    #[test]
    fn generated_secrets_match_the_documented_format_and_locate_their_row() {
        let (id, secret) = generated();
        assert_eq!(secret.len(), GENERATED_LEN);
        assert!(secret.starts_with("credd_cs_"));
        assert!(secret[PREFIX.len()..].bytes().all(is_base64url));
        assert_eq!(classify(&secret), Presented::Generated { secret_id: id });
        assert_ne!(generated().1, generated().1);
    }

    #[test]
    fn a_digest_matches_its_secret_only_and_a_difference_in_any_byte_refuses() {
        let (_, secret) = generated();
        let digest = sha256(&secret);
        assert!(digest_matches(&digest, &secret));
        assert!(StoredHash::digest_of(&secret).digest_matches(&secret));
        assert!(!digest_matches(&digest, &generated().1));
        for at in 0..32 {
            let mut other = digest;
            other[at] ^= 0x01;
            assert!(!digest_matches(&other, &secret), "byte {at}");
        }
    }

    #[test]
    fn a_mistyped_or_truncated_secret_is_malformed() {
        let (_, secret) = generated();
        for i in PREFIX.len()..secret.len() {
            let mut bytes = secret.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let flipped = String::from_utf8(bytes).unwrap();
            assert!(
                matches!(classify(&flipped), Presented::Malformed(_)),
                "flip at {i}"
            );
        }
        assert_eq!(
            classify(&secret[..secret.len() - 1]),
            Presented::Malformed(MalformedReason::BadLength)
        );
        assert_eq!(classify(""), Presented::Malformed(MalformedReason::Empty));
        assert_eq!(
            classify(&"a".repeat(MAX_SECRET_LEN + 1)),
            Presented::Malformed(MalformedReason::Oversized)
        );
        assert_eq!(
            classify("short"),
            Presented::Malformed(MalformedReason::BadCharacters)
        );
        assert_eq!(
            classify("has spaces and is long enough to be an import, but no"),
            Presented::Malformed(MalformedReason::BadCharacters)
        );
    }

    #[test]
    fn import_shaped_secrets_carry_their_hint() {
        let secret = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo";
        assert_eq!(
            classify(secret),
            Presented::ImportShaped {
                hint: "Zmdo".into()
            }
        );
    }

    #[test]
    fn imports_must_be_long_random_looking_base64() {
        let ok = |s: &str| validate_import("plaintext", &SecretString::from(s)).is_ok();
        assert!(ok("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo"));
        assert!(ok("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmc="));
        assert!(ok("a-b_c+d/e0f1g2h3i4j5k6l7m8n9o0p1q2"));
        assert!(!ok(""));
        assert!(!ok("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"), "31 characters");
        assert!(!ok(&"ab".repeat(20)), "repetitive");
        assert!(
            !ok("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2Rl ZmdoaQ"),
            "a space"
        );
        assert!(
            !ok("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo=a"),
            "padding inside"
        );
        assert!(!ok(&generated().1), "a credd-generated secret");
        assert!(!ok(&"Zm9vYmFyYmF6cXV4".repeat(40)), "too long");
        for weak in [
            "Password1Password1Password1Pa",
            "Password1Password1Password1Password1",
            "qwertyuiopasdfghjklzxcvbnm1234567890",
            "abcdefghijklmnopqrstuvwxyz0123456789",
            "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
            "aB3dE6gH9aB3dE6gH9aB3dE6gH9aB3dE6gH9",
            "MySecretMySecretMySecretMySecret2024",
            "mypassword123456789mypassword1234567",
            "0123456789abcdef0123456789abcdef",
            "8f14e45fceea167a5a36dedd4bea2543",
            "ACEGIKMOQSUWY13579bdfhjlnprtvxz02468",
            "adgjmpsvyBEHKNQTWZ147cfilorux0369ADGJ",
            "zwtqnkheb963ZWTQNKHEBywvsurolifc852",
        ] {
            assert!(!ok(weak), "{weak}: {} bits", estimated_bits(weak));
        }
        for random in [
            "Vx9kP2mQ7rT4wY6zA1bC3dE5fG8hJ0kLmNoPqRsTuVw",
            "q6Y1+JmXn0fW3rZ9/bTtKc2sVhG8pLdE4aUoQy7NiR0=",
            "8f14e45fceea167a5a36dedd4bea2543b8c5f4e9d2a1",
        ] {
            assert!(ok(random), "{random}: {} bits", estimated_bits(random));
        }
    }

    #[test]
    fn retiring_secrets_stop_verifying_at_their_expiry() {
        let now = Utc::now();
        let secret = ClientSecret {
            state: ClientSecretState::Retiring,
            expire_time: Some(now + Duration::seconds(60)),
            ..secret_in(ClientSecretState::Retiring, now)
        };
        assert!(secret.verifies_at(now + Duration::seconds(59)));
        assert!(!secret.verifies_at(now + Duration::seconds(60)));
        assert_eq!(
            secret.state_at(now + Duration::seconds(60)),
            ClientSecretState::Superseded
        );
        let pending = ClientSecret {
            state: ClientSecretState::Pending,
            ..secret.clone()
        };
        assert!(!pending.verifies_at(now));
        let revoked = ClientSecret {
            state: ClientSecretState::Revoked,
            ..secret
        };
        assert!(!revoked.verifies_at(now));
    }

    fn secret_in(state: ClientSecretState, now: DateTime<Utc>) -> ClientSecret {
        ClientSecret {
            id: SecretId::generate(),
            org_id: OrgId::from_stored("org".into()),
            state,
            description: String::new(),
            hint: "abcd".into(),
            imported: false,
            create_time: now,
            activate_time: None,
            expire_time: None,
            revoke_time: None,
            last_used_time: None,
            lifetime_end: None,
            pending_expire_time: None,
        }
    }

    #[test]
    fn activation_retires_the_active_secret_for_the_grace_and_ends_earlier_graces() {
        let now = Utc::now();
        let target = secret_in(ClientSecretState::Pending, now);
        let active = secret_in(ClientSecretState::Active, now);
        let retiring = ClientSecret {
            expire_time: Some(now + Duration::seconds(30)),
            ..secret_in(ClientSecretState::Retiring, now)
        };
        let long_retired = ClientSecret {
            expire_time: Some(now - Duration::seconds(30)),
            ..secret_in(ClientSecretState::Retiring, now)
        };
        let other_pending = secret_in(ClientSecretState::Pending, now);
        let current = [
            active.clone(),
            retiring.clone(),
            long_retired.clone(),
            other_pending,
            target.clone(),
        ];
        let Ok(Activation::Apply(steps)) =
            plan_activation(&target, &current, now, Duration::seconds(600))
        else {
            panic!("a pending secret activates");
        };
        let step = |id: &SecretId| steps.iter().find(|t| &t.secret_id == id).cloned();
        let to_active = step(&target.id).unwrap();
        assert_eq!(steps.last(), Some(&to_active), "the step up comes last");
        assert_eq!(to_active.to, ClientSecretState::Active);
        assert_eq!(to_active.activate_time, Some(now));
        let previous = step(&active.id).unwrap();
        assert_eq!(
            (previous.to, previous.expire_time),
            (
                ClientSecretState::Retiring,
                Some(now + Duration::seconds(600))
            )
        );
        let ended = step(&retiring.id).unwrap();
        assert_eq!(
            (ended.to, ended.expire_time),
            (ClientSecretState::Superseded, Some(now))
        );
        let kept = step(&long_retired.id).unwrap();
        assert_eq!(
            (kept.to, kept.expire_time),
            (ClientSecretState::Superseded, None)
        );
        assert_eq!(steps.len(), 4, "other pending secrets stay as they are");

        let Ok(Activation::Apply(steps)) = plan_activation(
            &target,
            std::slice::from_ref(&active),
            now,
            Duration::zero(),
        ) else {
            panic!("a pending secret activates");
        };
        assert_eq!(
            (steps[0].to, steps[0].expire_time),
            (ClientSecretState::Superseded, Some(now)),
            "no grace: the previous secret stops at once"
        );
    }

    #[test]
    fn only_a_pending_secret_activates_and_the_active_one_is_left_alone() {
        let now = Utc::now();
        let active = secret_in(ClientSecretState::Active, now);
        assert_eq!(
            plan_activation(&active, &[], now, Duration::zero()),
            Ok(Activation::AlreadyActive)
        );
        assert_eq!(
            plan_activation(
                &secret_in(ClientSecretState::Revoked, now),
                &[],
                now,
                Duration::zero()
            ),
            Err(ActivationRefused::Revoked)
        );
        for state in [ClientSecretState::Superseded, ClientSecretState::Retiring] {
            assert_eq!(
                plan_activation(&secret_in(state, now), &[], now, Duration::zero()),
                Err(ActivationRefused::Superseded)
            );
        }
    }

    #[test]
    fn the_overview_counts_pending_and_shows_active_and_retiring_as_of_now() {
        let now = Utc::now();
        let ended = ClientSecret {
            expire_time: Some(now),
            ..secret_in(ClientSecretState::Retiring, now)
        };
        let retiring = ClientSecret {
            expire_time: Some(now + Duration::seconds(1)),
            ..secret_in(ClientSecretState::Retiring, now)
        };
        let overview = SecretOverview::of(
            vec![
                secret_in(ClientSecretState::Active, now),
                secret_in(ClientSecretState::Pending, now),
                secret_in(ClientSecretState::Pending, now),
                ended,
                retiring.clone(),
            ],
            now,
        );
        assert!(overview.active.is_some());
        assert_eq!(overview.pending_count, 2);
        assert_eq!(overview.retiring, vec![retiring]);
    }

    #[test]
    fn grace_periods_are_bounded() {
        assert_eq!(parse_grace("g", 0, 0).unwrap(), Duration::zero());
        assert_eq!(parse_grace("g", 60, 0).unwrap(), Duration::seconds(60));
        assert!(parse_grace("g", -1, 0).is_err());
        assert!(parse_grace("g", 3650 * 86400 + 1, 0).is_err());
        assert!(parse_grace("g", 3650 * 86400, 1).is_err());
        assert!(
            parse_grace("g", i64::MAX, 0).is_err(),
            "huge values are refused, not a panic"
        );
        assert!(parse_grace("g", 10_i64.pow(16), 0).is_err());
        assert!(parse_grace("g", 1, 1_000_000_000).is_err());
    }
}
