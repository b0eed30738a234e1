//! App registrations: the rules for native (iOS, Android) and web apps, and the
//! gateway's redirect URI match.

use chrono::{DateTime, Utc};

use super::{
    Violation, host,
    ids::{AppRegistrationId, OrgId},
    org::parse_name,
    paging::Keyed,
};

/// The platform an app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// iOS, logging in through a Universal Link.
    Ios,
    /// Android, logging in through an App Link.
    Android,
    /// A web app, logging in through an OAuth callback URL.
    Web,
}

impl Platform {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ios => "IOS",
            Self::Android => "ANDROID",
            Self::Web => "WEB",
        }
    }

    /// The platform stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "IOS" => Self::Ios,
            "ANDROID" => Self::Android,
            "WEB" => Self::Web,
            _ => return None,
        })
    }

    /// Native apps log in with PKCE and an https App Link / Universal Link.
    pub fn is_native(self) -> bool {
        matches!(self, Self::Ios | Self::Android)
    }
}

/// A registered app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRegistration {
    /// Server-assigned id.
    pub id: AppRegistrationId,
    /// The org it logs in through.
    pub org_id: OrgId,
    /// Display name.
    pub name: String,
    /// The platform and its fields (the platform is set at creation, never changed).
    pub kind: AppKind,
    /// Registered at.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
}

impl AppRegistration {
    /// The platform.
    pub fn platform(&self) -> Platform {
        self.kind.platform()
    }

    /// The one redirect URI this app registers: its App Link or its callback URL.
    pub fn redirect_uri(&self) -> &str {
        self.kind.redirect_uri()
    }

    /// Whether the login must use PKCE (always for native apps).
    pub fn require_pkce(&self) -> bool {
        self.kind.require_pkce()
    }
}

impl Keyed for AppRegistration {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}

/// An app's platform with exactly the fields that platform has, so that a web app
/// with a bundle ID or a native app without PKCE cannot be represented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppKind {
    /// An iOS app, logging in through a Universal Link.
    Ios {
        /// Reverse-DNS bundle ID.
        bundle_id: String,
        /// The Universal Link (https, not on the main website's host).
        app_link: String,
        /// Apple team ID, needed to render apple-app-site-association.
        apple_team_id: Option<String>,
    },
    /// An Android app, logging in through an App Link.
    Android {
        /// Package name.
        package_name: String,
        /// The App Link (https, not on the main website's host).
        app_link: String,
        /// Signing certificate SHA-256 fingerprints, upper-case, colon-separated.
        sha256_cert_fingerprints: Vec<String>,
    },
    /// A web app, logging in through its one OAuth callback URL.
    Web {
        /// The callback URL.
        callback_url: String,
        /// Whether PKCE is required.
        require_pkce: bool,
    },
}

impl AppKind {
    /// The platform.
    pub fn platform(&self) -> Platform {
        match self {
            Self::Ios { .. } => Platform::Ios,
            Self::Android { .. } => Platform::Android,
            Self::Web { .. } => Platform::Web,
        }
    }

    /// The App Link or the callback URL.
    pub fn redirect_uri(&self) -> &str {
        match self {
            Self::Ios { app_link, .. } | Self::Android { app_link, .. } => app_link,
            Self::Web { callback_url, .. } => callback_url,
        }
    }

    /// Whether the login must use PKCE (always for native apps).
    pub fn require_pkce(&self) -> bool {
        match self {
            Self::Ios { .. } | Self::Android { .. } => true,
            Self::Web { require_pkce, .. } => *require_pkce,
        }
    }

    /// What must be unique among an org's apps of one platform: the bundle ID or
    /// package name of a native app, the callback URL of a web app.
    pub fn natural_key(&self) -> &str {
        match self {
            Self::Ios { bundle_id, .. } => bundle_id,
            Self::Android { package_name, .. } => package_name,
            Self::Web { callback_url, .. } => callback_url,
        }
    }

    /// The raw fields that register this kind again (for a masked update).
    pub fn to_input(&self, name: &str) -> AppInput {
        let mut input = AppInput {
            name: name.to_owned(),
            ..AppInput::default()
        };
        match self {
            Self::Ios {
                bundle_id,
                app_link,
                apple_team_id,
            } => {
                input.bundle_id.clone_from(bundle_id);
                input.app_link.clone_from(app_link);
                input.apple_team_id = apple_team_id.clone().unwrap_or_default();
            }
            Self::Android {
                package_name,
                app_link,
                sha256_cert_fingerprints,
            } => {
                input.package_name.clone_from(package_name);
                input.app_link.clone_from(app_link);
                input
                    .sha256_cert_fingerprints
                    .clone_from(sha256_cert_fingerprints);
            }
            Self::Web {
                callback_url,
                require_pkce,
            } => {
                input.callback_url.clone_from(callback_url);
                input.require_pkce = Some(*require_pkce);
            }
        }
        input
    }
}

/// The raw fields a caller sends for an app, before validation.
#[derive(Debug, Clone, Default)]
pub struct AppInput {
    /// Display name.
    pub name: String,
    /// iOS bundle ID.
    pub bundle_id: String,
    /// Android package name.
    pub package_name: String,
    /// App Link / Universal Link.
    pub app_link: String,
    /// Web callback URL.
    pub callback_url: String,
    /// Apple team ID.
    pub apple_team_id: String,
    /// Android certificate fingerprints.
    pub sha256_cert_fingerprints: Vec<String>,
    /// Web: require PKCE (`None` means the default, true).
    pub require_pkce: Option<bool>,
}

/// A validated app, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidApp {
    /// Display name.
    pub name: String,
    /// The platform and its fields.
    pub kind: AppKind,
}

const CUSTOM_SCHEME: &str = "must be an https App Link / Universal Link: custom URL schemes are refused because \
     any app can claim a custom scheme and nothing proves who owns it";

/// Validates every field of an app for `platform` against the org's main website,
/// reporting every broken rule. Fields of other platforms must be empty.
pub fn validate(
    platform: Platform,
    input: &AppInput,
    main_website: &str,
) -> Result<ValidApp, Vec<Violation>> {
    let mut violations = Vec::new();
    let name = parse_name("name", &input.name)
        .map_err(|v| violations.push(v))
        .unwrap_or_default();
    let mut not_for = |field: &str, value_set: bool| {
        if value_set {
            violations.push(Violation::new(
                field,
                format!(
                    "is not used by {} apps; leave it empty",
                    platform_name(platform)
                ),
            ));
        }
    };
    match platform {
        Platform::Ios => {
            not_for("package_name", !input.package_name.is_empty());
            not_for("callback_url", !input.callback_url.is_empty());
            not_for(
                "sha256_cert_fingerprints",
                !input.sha256_cert_fingerprints.is_empty(),
            );
            not_for("require_pkce", input.require_pkce == Some(false));
        }
        Platform::Android => {
            not_for("bundle_id", !input.bundle_id.is_empty());
            not_for("callback_url", !input.callback_url.is_empty());
            not_for("apple_team_id", !input.apple_team_id.is_empty());
            not_for("require_pkce", input.require_pkce == Some(false));
        }
        Platform::Web => {
            not_for("bundle_id", !input.bundle_id.is_empty());
            not_for("package_name", !input.package_name.is_empty());
            not_for("app_link", !input.app_link.is_empty());
            not_for("apple_team_id", !input.apple_team_id.is_empty());
            not_for(
                "sha256_cert_fingerprints",
                !input.sha256_cert_fingerprints.is_empty(),
            );
        }
    }
    let mut record = |result: Result<String, Violation>| {
        result.map_err(|v| violations.push(v)).unwrap_or_default()
    };
    let kind = match platform {
        Platform::Ios => AppKind::Ios {
            bundle_id: record(parse_bundle_id("bundle_id", &input.bundle_id)),
            app_link: record(parse_app_link("app_link", &input.app_link, main_website)),
            apple_team_id: (!input.apple_team_id.is_empty())
                .then(|| record(parse_apple_team_id("apple_team_id", &input.apple_team_id))),
        },
        Platform::Android => AppKind::Android {
            package_name: record(parse_package_name("package_name", &input.package_name)),
            app_link: record(parse_app_link("app_link", &input.app_link, main_website)),
            sha256_cert_fingerprints: input
                .sha256_cert_fingerprints
                .iter()
                .enumerate()
                .map(|(i, fingerprint)| {
                    record(parse_fingerprint(
                        &format!("sha256_cert_fingerprints[{i}]"),
                        fingerprint,
                    ))
                })
                .collect(),
        },
        Platform::Web => {
            let callback_url = record(parse_callback_url("callback_url", &input.callback_url));
            let require_pkce = input.require_pkce.unwrap_or(true);
            let loopback = url::Url::parse(&callback_url).is_ok_and(|url| is_loopback(&url));
            if loopback && !require_pkce {
                violations.push(Violation::new(
                    "require_pkce",
                    "must be true for a loopback callback: an app on the user's machine is a public \
                     client and cannot keep a secret, so it must use PKCE (RFC 9700)",
                ));
            }
            AppKind::Web {
                callback_url,
                require_pkce,
            }
        }
    };
    if violations.is_empty() {
        Ok(ValidApp { name, kind })
    } else {
        Err(violations)
    }
}

fn platform_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Ios => "iOS",
        Platform::Android => "Android",
        Platform::Web => "web",
    }
}

/// An iOS bundle ID: reverse-DNS, at least two dot-separated labels of letters,
/// digits and hyphens.
pub fn parse_bundle_id(field: &str, value: &str) -> Result<String, Violation> {
    let labels: Vec<&str> = value.split('.').collect();
    let valid = value.len() <= 155
        && labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(Violation::new(
            field,
            "must be a reverse-DNS bundle ID such as com.example.app: at least two dot-separated labels of letters, digits and hyphens",
        ))
    }
}

/// An Android package name: at least two segments, each starting with a letter,
/// then letters, digits or underscores.
pub fn parse_package_name(field: &str, value: &str) -> Result<String, Violation> {
    let segments: Vec<&str> = value.split('.').collect();
    let valid = value.len() <= 255
        && segments.len() >= 2
        && segments.iter().all(|s| {
            s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    if valid {
        Ok(value.to_owned())
    } else {
        Err(Violation::new(
            field,
            "must be an Android package name such as com.example.app: at least two dot-separated segments, \
             each starting with a letter, then letters, digits or underscores",
        ))
    }
}

/// An Apple team ID: 10 upper-case letters or digits.
pub fn parse_apple_team_id(field: &str, value: &str) -> Result<String, Violation> {
    if value.len() == 10
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        Ok(value.to_owned())
    } else {
        Err(Violation::new(
            field,
            "must be 10 upper-case letters or digits, as Apple shows the team ID",
        ))
    }
}

/// A SHA-256 certificate fingerprint as Android prints it: 32 colon-separated hex
/// pairs. Returned upper-case.
pub fn parse_fingerprint(field: &str, value: &str) -> Result<String, Violation> {
    let pairs: Vec<&str> = value.split(':').collect();
    if pairs.len() == 32
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(value.to_ascii_uppercase())
    } else {
        Err(Violation::new(
            field,
            "must be a SHA-256 fingerprint: 32 colon-separated hex pairs (AB:CD:…)",
        ))
    }
}

/// An App Link / Universal Link: an absolute https URL with a DNS host, no user
/// info, no fragment, not on the host of the org's main website.
pub fn parse_app_link(field: &str, value: &str, main_website: &str) -> Result<String, Violation> {
    if value.is_empty() {
        return Err(Violation::new(
            field,
            "is required: the https App Link / Universal Link the app opens",
        ));
    }
    reject_oversized_or_wildcard(field, value)?;
    let url = match url::Url::parse(value) {
        Ok(url) => url,
        // `myapp:cb` and similar parse; what does not is no URL at all.
        Err(_) if has_custom_scheme(value) => return Err(Violation::new(field, CUSTOM_SCHEME)),
        Err(_) => {
            return Err(Violation::new(
                field,
                "must be an absolute https URL such as https://app.example.com/callback",
            ));
        }
    };
    match url.scheme() {
        "https" => {}
        "http" => {
            return Err(Violation::new(
                field,
                "must use https: App Links / Universal Links are verified over https only",
            ));
        }
        _ => return Err(Violation::new(field, CUSTOM_SCHEME)),
    }
    check_no_userinfo_or_fragment(field, &url, value)?;
    let link_host = match url.host() {
        Some(url::Host::Domain(domain)) => host::parse_dns_host(field, domain)?,
        _ => {
            return Err(Violation::new(
                field,
                "must have a DNS host name that can serve the association file",
            ));
        }
    };
    let website_host = url::Url::parse(main_website)
        .ok()
        .and_then(|u| u.host_str().map(host::canonical_host));
    if website_host.as_deref() == Some(link_host.as_str()) {
        return Err(Violation::new(
            field,
            "must not be on the host of the org's main website; use a dedicated host such as app.example.com",
        ));
    }
    Ok(value.to_owned())
}

/// The native apps of `apps` whose App Link would be on the host of
/// `main_website` (UpdateOrg refuses such a website).
pub fn links_on_website_host<'a>(
    apps: &'a [AppRegistration],
    main_website: &str,
) -> Vec<&'a AppRegistration> {
    let website_host = url::Url::parse(main_website)
        .ok()
        .and_then(|u| u.host_str().map(host::canonical_host));
    apps.iter()
        .filter(|app| app.platform() != Platform::Web)
        .filter(|app| {
            url::Url::parse(app.redirect_uri())
                .ok()
                .and_then(|u| u.host_str().map(host::canonical_host))
                .is_some_and(|link| Some(link) == website_host)
        })
        .collect()
}

/// A web app's OAuth callback URL: https, or http only on a loopback host
/// (RFC 8252 §7.3); no user info, no fragment, no wildcard.
pub fn parse_callback_url(field: &str, value: &str) -> Result<String, Violation> {
    if value.is_empty() {
        return Err(Violation::new(
            field,
            "is required: the web app's one OAuth callback URL",
        ));
    }
    reject_oversized_or_wildcard(field, value)?;
    let url = url::Url::parse(value).map_err(|_| {
        Violation::new(
            field,
            "must be an absolute URL such as https://app.example.com/callback",
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(Violation::new(
                field,
                "must use https; plain http is allowed only on a loopback host (127.0.0.1, [::1], localhost) for development",
            ));
        }
        _ => {
            return Err(Violation::new(
                field,
                "must use https (or http on a loopback host)",
            ));
        }
    }
    if url.host().is_none() {
        return Err(Violation::new(field, "must have a host"));
    }
    check_no_userinfo_or_fragment(field, &url, value)?;
    Ok(value.to_owned())
}

fn reject_oversized_or_wildcard(field: &str, value: &str) -> Result<(), Violation> {
    if value.len() > super::org::MAX_URL_LEN {
        return Err(Violation::new(field, "must be at most 2048 characters"));
    }
    super::link::check_url_text(field, value)?;
    if value.contains('*') {
        return Err(Violation::new(
            field,
            "must not contain a wildcard: redirect URIs match exactly",
        ));
    }
    Ok(())
}

fn check_no_userinfo_or_fragment(field: &str, url: &url::Url, raw: &str) -> Result<(), Violation> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Violation::new(field, "must not contain user info"));
    }
    if url.fragment().is_some() || raw.contains('#') {
        return Err(Violation::new(field, "must not contain a fragment (#…)"));
    }
    Ok(())
}

fn has_custom_scheme(value: &str) -> bool {
    value.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    })
}

/// Whether `url` is on a loopback host: a loopback IP literal or `localhost`.
fn is_loopback(url: &url::Url) -> bool {
    is_loopback_ip(url)
        || matches!(url.host(), Some(url::Host::Domain(domain)) if domain.eq_ignore_ascii_case("localhost"))
}

/// Whether `url`'s host is a loopback IP literal (127.0.0.0/8 or ::1).
fn is_loopback_ip(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Whether `presented` is the registered redirect URI `registered`: the exact
/// string, except that an http callback on a loopback IP literal accepts any port
/// (RFC 8252 §7.3). `localhost` is matched exactly, port included: RFC 8252 §8.3
/// warns that the name can resolve elsewhere, so it gets no wildcard.
pub fn redirect_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let Ok(url) = url::Url::parse(registered) else {
        return false;
    };
    if url.scheme() != "http" || !is_loopback_ip(&url) {
        return false;
    }
    match (without_port(registered), without_port(presented)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `uri` with the port removed from its authority, the rest byte for byte.
fn without_port(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => {
            let port = &authority[colon + 1..];
            if !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            &authority[..colon]
        }
        _ => authority,
    };
    Some(format!("{scheme}://{host}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "https://example.com";

    #[test]
    fn the_documents_example_pair() {
        assert!(parse_app_link("app_link", "https://app.example.com", SITE).is_ok());
        assert!(parse_app_link("app_link", "https://example.com/app", SITE).is_err());
        assert!(
            parse_app_link("app_link", "https://EXAMPLE.com./app", SITE).is_err(),
            "host case and trailing dot"
        );
    }

    #[test]
    fn custom_schemes_are_refused_saying_why() {
        for link in ["myapp://callback", "com.example.app:/cb", "myapp:cb"] {
            let err = parse_app_link("app_link", link, SITE).unwrap_err();
            assert!(
                err.reason.contains("custom URL schemes"),
                "{link}: {}",
                err.reason
            );
        }
        assert!(
            parse_app_link("app_link", "http://app.example.com", SITE)
                .unwrap_err()
                .reason
                .contains("https")
        );
    }

    #[test]
    fn app_links_need_a_host_and_no_user_info_or_fragment() {
        for bad in [
            "https://u@app.example.com/",
            "https://app.example.com/#x",
            "https://10.0.0.1/cb",
            "https://app.example.com/*",
            "app.example.com/cb",
        ] {
            assert!(parse_app_link("app_link", bad, SITE).is_err(), "{bad}");
        }
    }

    #[test]
    fn callbacks_are_https_or_loopback_http() {
        for good in [
            "https://app.example.com/cb",
            "http://127.0.0.1:8080/cb",
            "http://[::1]/cb",
            "http://localhost:3000/cb",
        ] {
            assert!(parse_callback_url("callback_url", good).is_ok(), "{good}");
        }
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#frag",
            "https://*.example.com/cb",
            "myapp://cb",
            "",
            "/cb",
        ] {
            assert!(parse_callback_url("callback_url", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bundle_ids_package_names_team_ids_and_fingerprints() {
        assert!(parse_bundle_id("b", "com.example.app").is_ok());
        assert!(parse_bundle_id("b", "com.my-company.App2").is_ok());
        for bad in [
            "app",
            "com..app",
            "com.example_app.x",
            ".com.app",
            "com.app.",
        ] {
            assert!(parse_bundle_id("b", bad).is_err(), "{bad}");
        }
        assert!(parse_package_name("p", "com.example.app_2").is_ok());
        for bad in ["app", "com.1example", "com.exa-mple", "com._x"] {
            assert!(parse_package_name("p", bad).is_err(), "{bad}");
        }
        assert!(parse_apple_team_id("t", "ABCDE12345").is_ok());
        assert!(parse_apple_team_id("t", "abcde12345").is_err());
        assert!(parse_apple_team_id("t", "ABCDE1234").is_err());
        let fingerprint = vec!["ab"; 32].join(":");
        assert_eq!(
            parse_fingerprint("f", &fingerprint).unwrap(),
            fingerprint.to_uppercase()
        );
        assert!(parse_fingerprint("f", &vec!["ab"; 31].join(":")).is_err());
        assert!(parse_fingerprint("f", &vec!["zz"; 32].join(":")).is_err());
    }

    #[test]
    fn redirect_uris_match_exactly_except_a_loopback_port() {
        let registered = "https://app.example.com/cb?x=1&y=2";
        assert!(redirect_matches(registered, registered));
        for other in [
            "https://app.example.com/cb",
            "https://app.example.com/cb?x=1&y=2&z=3",
            "https://app.example.com/cb?y=2&x=1",
            "https://APP.example.com/cb?x=1&y=2",
            "https://app.example.com/cb/?x=1&y=2",
            "https://app.example.com:443/cb?x=1&y=2",
        ] {
            assert!(!redirect_matches(registered, other), "{other}");
        }
        assert!(redirect_matches(
            "http://127.0.0.1:8080/cb",
            "http://127.0.0.1:51234/cb"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:51234/cb"
        ));
        assert!(redirect_matches("http://[::1]:80/cb", "http://[::1]:9/cb"));
        assert!(!redirect_matches(
            "http://127.0.0.1:8080/cb",
            "http://127.0.0.1:8080/cb2"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:8080/cb",
            "http://localhost:8080/cb"
        ));
        assert!(
            !redirect_matches("http://localhost:8080/cb", "http://localhost:9090/cb"),
            "localhost gets no port wildcard"
        );
        assert!(redirect_matches(
            "http://localhost:8080/cb",
            "http://localhost:8080/cb"
        ));
        assert!(!redirect_matches(
            "https://app.example.com:8443/cb",
            "https://app.example.com:9443/cb"
        ));
    }

    #[test]
    fn fields_of_other_platforms_are_refused() {
        let input = AppInput {
            name: "App".into(),
            bundle_id: "com.example.app".into(),
            app_link: "https://app.example.com/cb".into(),
            callback_url: "https://app.example.com/cb".into(),
            ..Default::default()
        };
        let err = validate(Platform::Ios, &input, SITE).unwrap_err();
        assert_eq!(
            err.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
            ["callback_url"]
        );
        let ok = validate(
            Platform::Ios,
            &AppInput {
                callback_url: String::new(),
                ..input
            },
            SITE,
        )
        .unwrap();
        assert!(ok.kind.require_pkce());
    }
}
