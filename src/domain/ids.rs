//! Identifiers: one type per kind of id, parsed once at the edge (`grpc/convert.rs`)
//! so that nothing inside re-checks a string or passes one kind for another.

use std::fmt;

use super::Violation;

/// What every id type has: its text, read back from the store or given to the
/// proto boundary, and Display / AsRef for logs and queries.
macro_rules! text_id {
    ($name:ident) => {
        impl $name {
            /// An id read back from the store, which only ever holds ids credd made.
            pub fn from_stored(value: String) -> Self {
                Self(value)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string (for the proto boundary).
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A server-assigned resource id: a UUIDv7 in its hyphenated lower-case form, so
/// that ids sort by creation time and give keyset pagination a stable order.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A fresh id.
            pub fn generate() -> Self {
                Self::from_uuid(uuid::Uuid::now_v7())
            }

            /// Parses what a caller sent in `field`: required, and the shape credd
            /// generates.
            pub fn parse(field: &str, value: &str) -> Result<Self, Violation> {
                if value.is_empty() {
                    Err(Violation::new(field, "is required"))
                } else if is_id(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(Violation::new(field, concat!("must be ", $what, " id (a UUID)")))
                }
            }

            /// The id of `uuid`.
            pub fn from_uuid(uuid: uuid::Uuid) -> Self {
                Self(uuid.hyphenated().to_string())
            }

        }

        text_id!($name);
    };
}

uuid_id!(
    /// An org's id.
    OrgId,
    "an org"
);
uuid_id!(
    /// A client secret's id (also the locator inside a generated secret).
    SecretId,
    "a secret"
);
uuid_id!(
    /// An app registration's id.
    AppRegistrationId,
    "an app registration"
);
uuid_id!(
    /// A caller token's id.
    CallerTokenId,
    "a caller token"
);
uuid_id!(
    /// An audit event's id.
    AuditEventId,
    "an audit event"
);

/// An org's public OAuth client ID: 128 bits from the OS CSPRNG as 32 lower-case
/// hex characters. Unguessable, and never reissued (the store keeps deleted orgs'
/// ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

impl ClientId {
    /// A fresh client ID.
    pub fn generate() -> Self {
        Self(hex::encode(random_bytes::<16>()))
    }

    /// The client ID in `value`, or `None` when it cannot be one credd issued. There
    /// is no field violation: a gateway forwards what end users send, and a
    /// malformed client ID is answered like an unknown one (no oracle).
    pub fn parse(value: &str) -> Option<Self> {
        is_client_id(value).then(|| Self(value.to_owned()))
    }
}

text_id!(ClientId);

/// A new request id, for requests that bring none: a UUIDv7, so that ids sort by
/// time. Its 80 "random" bits are a per-thread random seed plus a per-thread
/// counter: unique without asking the OS for randomness on every request (a
/// request id needs uniqueness, not secrecy).
pub fn new_request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static NEXT: Cell<(u16, u64)> = Cell::new({
            let seed: [u8; 10] = random_bytes();
            let (high, low) = seed.split_at(2);
            (
                u16::from_be_bytes([high[0], high[1]]),
                u64::from_be_bytes(low.try_into().unwrap_or_default()),
            )
        });
    }
    let (high, low) = NEXT.with(|next| {
        let (high, low) = next.get();
        next.set((high, low.wrapping_add(1)));
        (high, low)
    });
    let mut random = [0u8; 10];
    random[..2].copy_from_slice(&high.to_be_bytes());
    random[2..].copy_from_slice(&low.to_be_bytes());
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Whether `value` has the shape of an id credd generates (a hyphenated, lower-case UUID).
pub fn is_id(value: &str) -> bool {
    value.len() == 36
        && uuid::Uuid::try_parse(value).is_ok_and(|uuid| uuid.hyphenated().to_string() == value)
}

/// Whether `value` has the shape of a client ID credd generates.
fn is_client_id(value: &str) -> bool {
    value.len() == 32
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `N` bytes from the operating system's CSPRNG.
///
/// # Panics
/// When the OS has no randomness to give, which no credential service can work
/// without.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_128_bit_hex_and_differ() {
        let a = ClientId::generate();
        let b = ClientId::generate();
        assert_eq!(ClientId::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a, b);
        for bad in [
            "",
            "0123",
            &"A".repeat(32),
            &"g".repeat(32),
            &"0".repeat(33),
        ] {
            assert_eq!(ClientId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_recognised_and_sort_by_creation() {
        let first = OrgId::generate();
        let second = OrgId::generate();
        assert_eq!(OrgId::parse("org_id", first.as_str()), Ok(first.clone()));
        assert!(first < second);
        assert_eq!(
            OrgId::parse("org_id", "not-an-id").unwrap_err().field,
            "org_id"
        );
        assert!(OrgId::parse("org_id", &first.as_str().to_uppercase()).is_err());
    }

    #[test]
    fn request_ids_are_distinct_version_7_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(3) {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
        }
        let other_thread = std::thread::spawn(new_request_id).join().unwrap();
        assert!(!ids.contains(&other_thread));
    }

    #[test]
    fn a_missing_id_is_required_and_a_wrong_one_says_which_kind() {
        assert_eq!(
            SecretId::parse("secret_id", "").unwrap_err().reason,
            "is required"
        );
        assert_eq!(
            AppRegistrationId::parse("id", "x").unwrap_err().reason,
            "must be an app registration id (a UUID)"
        );
    }
}
