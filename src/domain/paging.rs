//! Keyset pagination: page sizes, opaque page tokens, and the page a list answers.
//!
//! A page token names the last item of the previous page and the list it came from
//! (the list's name and its filter, as a digest), with a checksum. A token from
//! another list, another org or another filter, or one modified by hand, is
//! refused as INVALID_ARGUMENT naming `page_token` (AIP-158) rather than read as a
//! position in the wrong list.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};

use super::{Violation, ids};

/// Page size when the caller sends none.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// The largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u64 = 1000;
const TOKEN_VERSION: &str = "k2";

/// Something a list pages through by its id.
pub trait Keyed {
    /// The id that orders the list.
    fn key(&self) -> &str;
}

/// Which page to read: at most `size` items after the item with id `after`, of the
/// list named when it was parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items.
    pub size: u64,
    /// The id of the last item of the previous page.
    pub after: Option<String>,
    list: String,
}

/// One page of a list and the token for the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl PageRequest {
    /// Validates `page_size` (0 means the default) and `page_token` for the list
    /// identified by `list`: its name and every filter that shapes it (the org, the
    /// action…), so that a token only continues the list it came from.
    pub fn parse(page_size: i32, page_token: &str, list: &[&str]) -> Result<Self, Violation> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Violation::new("page_size", "must not be negative")),
            n if n as u64 > MAX_PAGE_SIZE => {
                return Err(Violation::new("page_size", "must be at most 1000"));
            }
            n => n as u64,
        };
        let list = list_digest(list);
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token, &list).ok_or_else(|| {
                Violation::new(
                    "page_token",
                    "is not a token from a previous page of this list (same filters)",
                )
            })?)
        };
        Ok(Self { size, after, list })
    }

    /// How many rows to fetch: one more than the page, to learn whether more follow.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    /// The page of `rows`, fetched in the list's order after [`PageRequest::after`]
    /// with [`PageRequest::fetch_limit`]; the token continues after its last item.
    pub fn page<T: Keyed>(&self, mut rows: Vec<T>) -> Page<T> {
        let more = rows.len() as u64 > self.size;
        rows.truncate(self.size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => encode_token(&self.list, last.key()),
            _ => String::new(),
        };
        Page {
            items: rows,
            next_page_token,
        }
    }
}

impl<T> Page<T> {
    /// The same page with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_page_token: self.next_page_token,
        }
    }
}

fn list_digest(list: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in list {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

fn checksum(body: &str) -> String {
    hex::encode(crc32fast::hash(body.as_bytes()).to_be_bytes())
}

fn encode_token(list: &str, last_id: &str) -> String {
    let body = format!("{TOKEN_VERSION}:{list}:{last_id}");
    let sum = checksum(&body);
    URL_SAFE_NO_PAD.encode(format!("{body}:{sum}"))
}

fn decode_token(token: &str, list: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (body, sum) = text.rsplit_once(':')?;
    if checksum(body) != sum {
        return None;
    }
    let rest = body.strip_prefix(TOKEN_VERSION)?.strip_prefix(':')?;
    let (token_list, id) = rest.split_once(':')?;
    (token_list == list && ids::is_id(id)).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(String);
    impl Keyed for Item {
        fn key(&self) -> &str {
            &self.0
        }
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|_| Item(ids::OrgId::generate().into_string()))
            .collect()
    }

    #[test]
    fn sizes_default_and_are_bounded() {
        assert_eq!(PageRequest::parse(0, "", &["orgs"]).unwrap().size, 50);
        assert_eq!(PageRequest::parse(1000, "", &["orgs"]).unwrap().size, 1000);
        assert_eq!(
            PageRequest::parse(1001, "", &["orgs"]).unwrap_err().field,
            "page_size"
        );
        assert_eq!(
            PageRequest::parse(-1, "", &["orgs"]).unwrap_err().field,
            "page_size"
        );
    }

    #[test]
    fn a_full_page_continues_after_its_last_item_and_the_last_page_ends() {
        let first = PageRequest::parse(2, "", &["orgs"]).unwrap();
        let page = first.page(items(3));
        assert_eq!(page.items.len(), 2);
        let next = PageRequest::parse(2, &page.next_page_token, &["orgs"]).unwrap();
        assert_eq!(next.after.as_deref(), Some(page.items[1].0.as_str()));
        assert_eq!(next.page(items(2)).next_page_token, "");
    }

    #[test]
    fn garbage_modified_and_foreign_tokens_are_refused() {
        let token = PageRequest::parse(1, "", &["secrets", "org-a"])
            .unwrap()
            .page(items(2))
            .next_page_token;
        assert!(PageRequest::parse(1, &token, &["secrets", "org-a"]).is_ok());
        let mut modified = token.clone().into_bytes();
        modified[10] = if modified[10] == b'A' { b'B' } else { b'A' };
        let modified = String::from_utf8(modified).unwrap();
        let id = ids::OrgId::generate().into_string();
        for (bad, list) in [
            ("x", &["secrets", "org-a"][..]),
            ("!!!", &["secrets", "org-a"]),
            (&URL_SAFE_NO_PAD.encode(&id), &["secrets", "org-a"]),
            (&modified, &["secrets", "org-a"]),
            (&token, &["secrets", "org-b"]),
            (&token, &["apps", "org-a"]),
            (&token, &["secrets", "org-a", "x"]),
        ] {
            assert_eq!(
                PageRequest::parse(1, bad, list).unwrap_err().field,
                "page_token",
                "{bad} {list:?}"
            );
        }
    }
}
