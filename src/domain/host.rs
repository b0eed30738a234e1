//! DNS host names: the custom login domain, and the hosts of URLs.

use super::Violation;

/// The longest DNS name (RFC 1035).
const MAX_HOST_LEN: usize = 253;
/// The longest DNS label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// A host name in its canonical form: lower case, without a trailing dot.
pub fn canonical_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Checks that `value` is a fully qualified DNS host name (at least two labels of
/// letters, digits and hyphens, no IP address) and returns it canonical.
pub fn parse_dns_host(field: &str, value: &str) -> Result<String, Violation> {
    let host = canonical_host(value);
    let fail = |rule: &str| Err(Violation::new(field, rule));
    if host.is_empty() {
        return fail("must be a DNS host name such as login.example.com");
    }
    if host.len() > MAX_HOST_LEN {
        return fail("must be at most 253 characters");
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 {
        return fail(
            "must be a fully qualified host name with at least two labels, such as login.example.com",
        );
    }
    for label in &labels {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return fail("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return fail(
                "may hold only letters, digits, hyphens and dots (use punycode for international names)",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail("a label must not start or end with a hyphen");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return fail("must be a host name, not an IP address");
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names_and_canonicalises_them() {
        assert_eq!(
            parse_dns_host("d", "Login.Example.COM.").unwrap(),
            "login.example.com"
        );
        assert_eq!(
            parse_dns_host("d", "xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(parse_dns_host("d", "a-b.c1.io").unwrap(), "a-b.c1.io");
    }

    #[test]
    fn refuses_what_is_not_a_host_name() {
        for bad in [
            "",
            "localhost",
            "10.0.0.1",
            "-a.example.com",
            "a-.example.com",
            "a..example.com",
            "exa mple.com",
            "example.com/path",
            "https://example.com",
            "under_score.example.com",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "a.".repeat(130)),
        ] {
            let err = parse_dns_host("custom_domain", bad).unwrap_err();
            assert_eq!(err.field, "custom_domain", "{bad}");
        }
    }
}
