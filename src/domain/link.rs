//! What every URL credd stores must be, byte for byte, before any parsing: a
//! gateway copies these URLs into `Location` headers and compares redirect URIs
//! as exact strings, so a URL parser that quietly drops a CR LF or resolves a
//! `..` must never see a value that differs from what is stored.

use super::Violation;

/// Refuses control characters (CR, LF, TAB, NUL…), spaces, non-ASCII characters
/// and the characters RFC 3986 never allows unencoded (`\ " < > ^ ` { | }`), and
/// dot-segments (`.`, `..`, also percent-encoded) in the path.
pub fn check_url_text(field: &str, value: &str) -> Result<(), Violation> {
    if let Some(bad) = value.chars().find(|c| {
        c.is_ascii_control()
            || *c == ' '
            || !c.is_ascii()
            || matches!(c, '\\' | '"' | '<' | '>' | '^' | '`' | '{' | '|' | '}')
    }) {
        let shown = if bad.is_ascii_control() || bad == ' ' {
            format!("{:#04x}", u32::from(bad))
        } else {
            format!("`{bad}`")
        };
        return Err(Violation::new(
            field,
            format!(
                "must not contain {shown}: control characters, spaces and non-ASCII are refused \
                 (percent-encode them; write international hosts in punycode)"
            ),
        ));
    }
    if has_dot_segment(value) {
        return Err(Violation::new(
            field,
            "must not contain `.` or `..` path segments: write the path as it will be matched",
        ));
    }
    Ok(())
}

/// Whether the path of `url` (after the authority, before `?` or `#`) has a `.`
/// or `..` segment, percent-encoded or not.
fn has_dot_segment(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
    let path = &after_scheme[path_start..];
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_spaces_and_unsafe_characters_are_refused() {
        for bad in [
            "https://acme.example/a\r\nSet-Cookie: x=1",
            "https://acme.example/a\tb",
            "https://acme.example/a\0",
            "https://acme.example/a b",
            " https://acme.example/",
            "https://acme.example/\u{7f}",
            "https://acmé.example/",
            "https://acme.example/a\\b",
            "https://acme.example/<script>",
        ] {
            assert_eq!(check_url_text("u", bad).unwrap_err().field, "u", "{bad:?}");
        }
        assert!(check_url_text("u", "https://acme.example/a%20b?x=1&y=%0A#f").is_ok());
    }

    #[test]
    fn dot_segments_are_refused_in_the_path_only() {
        for bad in [
            "https://app.example.com/a/../b",
            "https://app.example.com/./cb",
            "https://app.example.com/a/%2E%2E/b",
            "https://app.example.com/a/.%2e",
            "https://app.example.com/..",
        ] {
            assert!(check_url_text("u", bad).is_err(), "{bad}");
        }
        for good in [
            "https://app.example.com/a..b/.well-known/x",
            "https://app.example.com/cb?next=../x",
            "https://app.example.com",
        ] {
            assert!(check_url_text("u", good).is_ok(), "{good}");
        }
    }
}
