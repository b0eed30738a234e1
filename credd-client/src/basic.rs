//! Client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: the client
//! ID and secret are each form-urlencoded, then joined by `:` and base64-encoded,
//! RFC 7617).

use base64::Engine as _;

/// The longest Authorization header read; longer ones are refused unread.
pub const MAX_HEADER: usize = 4096;

/// A client ID and secret, as presented. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The client ID.
    pub client_id: String,
    /// The client secret.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// Why an Authorization header gave no credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// No Authorization header.
    Missing,
    /// Longer than [`MAX_HEADER`].
    TooLong,
    /// Not the Basic scheme.
    NotBasic,
    /// Not base64.
    Base64,
    /// Not UTF-8 once decoded (or once form-urldecoded).
    Utf8,
    /// No `:` between ID and secret.
    NoColon,
    /// An empty ID or secret.
    Empty,
}

/// The credentials in `headers`' Authorization header.
pub fn credentials(headers: &http::HeaderMap) -> Result<Credentials, Malformed> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(Malformed::Missing)?
        .as_bytes();
    parse(value)
}

/// The credentials in the value of an Authorization header.
pub fn parse(value: &[u8]) -> Result<Credentials, Malformed> {
    if value.len() > MAX_HEADER {
        return Err(Malformed::TooLong);
    }
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let (scheme, rest) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|at| value.split_at(at))
        .ok_or(Malformed::NotBasic)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(Malformed::NotBasic);
    }
    let encoded = rest.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| Malformed::Base64)?;
    let decoded = String::from_utf8(decoded).map_err(|_| Malformed::Utf8)?;
    let (id, secret) = decoded.split_once(':').ok_or(Malformed::NoColon)?;
    let (client_id, secret) = (form_decode(id)?, form_decode(secret)?);
    if client_id.is_empty() || secret.is_empty() {
        return Err(Malformed::Empty);
    }
    Ok(Credentials { client_id, secret })
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space,
/// `%XX` a byte.
fn form_decode(value: &str) -> Result<String, Malformed> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| Malformed::Utf8)
}

/// The header value a client sends for `client_id` and `secret`.
pub fn header_value(client_id: &str, secret: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let encode = |v: &str| utf8_percent_encode(v, NON_ALPHANUMERIC).to_string();
    let joined = format!("{}:{}", encode(client_id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(joined)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_with_form_encoding() {
        let value = header_value("abc", "s3cr:t+/=%");
        let parsed = parse(value.as_bytes()).unwrap();
        assert_eq!(parsed.client_id, "abc");
        assert_eq!(parsed.secret, "s3cr:t+/=%");
        // A plain RFC 7617 header (no form encoding) of a secret without
        // special characters reads the same, in any case of the scheme.
        let plain = format!(
            "bAsIc {}",
            base64::engine::general_purpose::STANDARD.encode("abc:credd_cs_x")
        );
        assert_eq!(parse(plain.as_bytes()).unwrap().secret, "credd_cs_x");
    }

    #[test]
    fn malformed_headers_are_refused_not_panicked_on() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let cases: Vec<(Vec<u8>, Malformed)> = vec![
            (b"Bearer abc".to_vec(), Malformed::NotBasic),
            (b"Basic".to_vec(), Malformed::NotBasic),
            (b"Basic !!!not-base64".to_vec(), Malformed::Base64),
            (
                format!("Basic {}", b64(b"no-colon")).into_bytes(),
                Malformed::NoColon,
            ),
            (
                format!("Basic {}", b64(&[0xff, 0xfe, b':', b'x'])).into_bytes(),
                Malformed::Utf8,
            ),
            (
                format!("Basic {}", b64(b"id:%ff")).into_bytes(),
                Malformed::Utf8,
            ),
            (
                format!("Basic {}", b64(b":secret")).into_bytes(),
                Malformed::Empty,
            ),
            (
                format!("Basic {}", "A".repeat(64 * 1024)).into_bytes(),
                Malformed::TooLong,
            ),
            (vec![0xff; 10], Malformed::NotBasic),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse(&value),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(&value[..value.len().min(40)])
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let credentials = parse(header_value("abc", "hunter2-hunter2").as_bytes()).unwrap();
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
