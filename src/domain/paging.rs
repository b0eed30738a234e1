//! Keyset pagination: page sizes and opaque page tokens.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{Violation, ids};

/// Page size when the caller sends none.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// The largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u64 = 1000;
const TOKEN_PREFIX: &str = "k1:";

/// Which page to read: at most `size` items after the item with id `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items.
    pub size: u64,
    /// The id of the last item of the previous page.
    pub after: Option<String>,
}

impl PageRequest {
    /// Validates `page_size` (0 means the default) and `page_token`.
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, Violation> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Violation::new("page_size", "must not be negative")),
            n if n as u64 > MAX_PAGE_SIZE => {
                return Err(Violation::new("page_size", "must be at most 1000"));
            }
            n => n as u64,
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token).ok_or_else(|| {
                Violation::new(
                    "page_token",
                    "is not a token from a previous page of this list",
                )
            })?)
        };
        Ok(Self { size, after })
    }
}

/// The token that continues a list after the item with id `last_id`.
pub fn next_page_token(last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{last_id}"))
}

fn decode_token(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.strip_prefix(TOKEN_PREFIX)?;
    ids::is_id(id).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_are_bounded() {
        assert_eq!(PageRequest::parse(0, "").unwrap().size, 50);
        assert_eq!(PageRequest::parse(1000, "").unwrap().size, 1000);
        assert_eq!(PageRequest::parse(1001, "").unwrap_err().field, "page_size");
        assert_eq!(PageRequest::parse(-1, "").unwrap_err().field, "page_size");
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let id = ids::new_id();
        let page = PageRequest::parse(10, &next_page_token(&id)).unwrap();
        assert_eq!(page.after.as_deref(), Some(id.as_str()));
        for bad in [
            "x",
            "!!!",
            &URL_SAFE_NO_PAD.encode("k1:nope"),
            &URL_SAFE_NO_PAD.encode(&id),
        ] {
            assert_eq!(
                PageRequest::parse(10, bad).unwrap_err().field,
                "page_token",
                "{bad}"
            );
        }
    }
}
