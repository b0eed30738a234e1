//! Identifiers that credd generates.

use std::fmt::Write as _;

/// A new resource id: a UUIDv7, so that ids sort by creation time and give
/// keyset pagination a stable order.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Whether `value` has the shape of an id credd generates (a hyphenated, lower-case UUID).
pub fn is_id(value: &str) -> bool {
    value.len() == 36
        && uuid::Uuid::try_parse(value).is_ok_and(|uuid| uuid.hyphenated().to_string() == value)
}

/// A new public client ID: 128 bits from the OS CSPRNG as 32 lower-case hex
/// characters. Unguessable, and never reissued (the store keeps deleted orgs' ids).
pub fn new_client_id() -> String {
    let bytes: [u8; 16] = random_bytes();
    let mut id = String::with_capacity(32);
    for byte in bytes {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// Whether `value` has the shape of a client ID credd generates.
pub fn is_client_id(value: &str) -> bool {
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
        let a = new_client_id();
        let b = new_client_id();
        assert!(is_client_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn ids_are_recognised_and_sort_by_creation() {
        let first = new_id();
        let second = new_id();
        assert!(is_id(&first));
        assert!(first < second);
        assert!(!is_id("not-an-id"));
        assert!(!is_id(&first.to_uppercase()));
    }
}
