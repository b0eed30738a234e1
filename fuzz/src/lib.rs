//! The properties credd's fuzz targets check, one function per target. The fuzz
//! targets (`fuzz_targets/`) call them on libFuzzer's inputs; the workspace's
//! `tests/fuzz_corpus.rs` calls them on every input kept in `corpus/`, so that CI
//! replays what the fuzzers found on stable Rust.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{CommandFactory as _, FromArgMatches as _};
use credd::domain::host;
use credd::domain::paging::PageRequest;
use credd::domain::secret::{self, Presented};
use credd::domain::{app, link, org};
use secrecy::{ExposeSecret as _, SecretString};

/// The secret classifier and import rules on any text: never a panic; what
/// classifies as generated carries the locator it was made with; a secret made
/// for that locator classifies back to it.
pub fn secrets(text: &str) {
    match secret::classify(text) {
        Presented::Generated { secret_id } => {
            assert_eq!(text.len(), secret::GENERATED_LEN);
            assert!(text.starts_with(secret::PREFIX));
            let again = secret::generate_for(&secret_id);
            assert!(matches!(
                secret::classify(again.expose_secret()),
                Presented::Generated { secret_id: id } if id == secret_id
            ));
        }
        Presented::ImportShaped { hint } => {
            assert!(text.len() >= secret::MIN_IMPORT_LEN);
            assert!(text.ends_with(&hint));
        }
        Presented::Malformed(_) => {}
    }
    let bits = secret::estimated_bits(text);
    assert!(bits >= 0.0 && bits.is_finite());
    let _ = secret::validate_import("plaintext", &SecretString::from(text));
}

fn clean(stored: &str) {
    assert!(
        !stored.bytes().any(|b| b.is_ascii_control() || b == b' '),
        "stored {stored:?}"
    );
}

/// Callback URLs, App Links and the redirect check on any input: never a panic;
/// what is stored holds no control character or space and matches itself; a
/// presented redirect that matches a stored callback has its scheme and host.
pub fn urls(input: (&str, &str)) {
    let (a, b) = input;
    let _ = link::check_url_text("callback_url", a);
    if let Ok(callback) = app::parse_callback_url("callback_url", a) {
        clean(&callback);
        assert!(app::redirect_matches(&callback, &callback));
        if app::redirect_matches(&callback, b) {
            let (registered, presented) = (
                url::Url::parse(&callback).unwrap(),
                url::Url::parse(b).expect("a matching redirect is a URL"),
            );
            assert_eq!(registered.scheme(), presented.scheme());
            assert_eq!(registered.host(), presented.host());
            assert_eq!(registered.path(), presented.path());
        }
    }
    if let Ok(website) = org::parse_https_url("main_website", b) {
        clean(&website);
        if let Ok(link) = app::parse_app_link("app_links", a, &website) {
            clean(&link);
        }
    }
    if let Ok(Some(domain)) = org::parse_custom_domain("custom_domain", a) {
        clean(&domain);
    }
}

/// Host normalisation on any text: canonical forms are fixed points, and a parsed
/// DNS host is canonical, ASCII, and parses to itself.
pub fn hosts(text: &str) {
    let canonical = host::canonical_host(text);
    assert_eq!(host::canonical_host(&canonical), canonical);
    if let Ok(parsed) = host::parse_dns_host("host", text) {
        assert_eq!(parsed, canonical);
        assert!(parsed.is_ascii() && !parsed.ends_with('.'));
        assert!(!parsed.bytes().any(|b| b.is_ascii_uppercase()));
        assert_eq!(host::parse_dns_host("host", &parsed).unwrap(), parsed);
    }
}

/// Page tokens and sizes as a caller sends them: never a panic, never a page
/// larger than the maximum, and a token is only accepted for the list it names.
pub fn page_tokens(input: (i32, &str, &str)) {
    let (size, token, list) = input;
    if let Ok(page) = PageRequest::parse(size, token, &[list]) {
        assert!(page.fetch_limit() >= 1 && page.fetch_limit() <= 1001);
        if !token.is_empty() {
            let other = format!("{list}/another list");
            assert!(
                PageRequest::parse(size, token, &[other.as_str()]).is_err(),
                "a token of one list continues no other"
            );
        }
    }
}

#[derive(clap::Parser)]
struct FromFile {
    #[command(flatten)]
    settings: credd::config::Settings,
}

/// The settings file (TOML) on any text: never a panic; a file credd accepts
/// yields settings that parse.
pub fn config(text: &str) {
    let command = FromFile::command().mut_args(|arg| arg.env(None::<&str>));
    if let Ok(command) = credd::config::apply_config_text(command, text, "fuzz.toml")
        && let Ok(matches) = command.try_get_matches_from(["credd"])
    {
        let _ = FromFile::from_arg_matches(&matches);
    }
}
