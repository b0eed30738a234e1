//! Organizations: the rules for their fields.

use chrono::{DateTime, Utc};

use super::{
    Violation, host,
    ids::{ClientId, OrgId},
    paging::Keyed,
    policy::CredentialPolicy,
};

/// The longest org or app name.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest URL credd stores.
pub const MAX_URL_LEN: usize = 2048;

/// An org as credd stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// Server-assigned id.
    pub id: OrgId,
    /// Public, immutable OAuth client ID.
    pub client_id: ClientId,
    /// Display name.
    pub name: String,
    /// Absolute https URL.
    pub main_website: String,
    /// Canonical custom login domain, if any.
    pub custom_domain: Option<String>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// The rules its secrets follow.
    pub credential_policy: super::policy::CredentialPolicy,
}

impl Org {
    /// The host users log in on: the custom domain, else the server's default.
    pub fn login_domain<'a>(&'a self, default_login_domain: &'a str) -> &'a str {
        self.custom_domain
            .as_deref()
            .unwrap_or(default_login_domain)
    }
}

impl Keyed for Org {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}

/// Which orgs a lookup of a resource by its own id may reach: any org (the RPCs
/// that name only the resource's `id`), or one org. Store functions of an org's
/// resources take one, so that no query can forget the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgScope<'a> {
    /// Any live org: the caller may see every org.
    Any,
    /// Only this org.
    Only(&'a OrgId),
}

/// The validated fields of a new org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrg {
    /// Display name.
    pub name: String,
    /// Absolute https URL.
    pub main_website: String,
    /// Canonical custom login domain, if any.
    pub custom_domain: Option<String>,
}

impl NewOrg {
    /// Validates every field and reports every broken rule at once.
    pub fn parse(
        name: &str,
        main_website: &str,
        custom_domain: &str,
    ) -> Result<Self, Vec<Violation>> {
        let name = parse_name("name", name);
        let main_website = parse_https_url("main_website", main_website);
        let custom_domain = parse_custom_domain("custom_domain", custom_domain);
        match (name, main_website, custom_domain) {
            (Ok(name), Ok(main_website), Ok(custom_domain)) => Ok(Self {
                name,
                main_website,
                custom_domain,
            }),
            (name, main_website, custom_domain) => {
                Err([name.err(), main_website.err(), custom_domain.err()]
                    .into_iter()
                    .flatten()
                    .collect())
            }
        }
    }
}

/// The fields an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgChanges {
    /// New display name.
    pub name: Option<String>,
    /// New main website.
    pub main_website: Option<String>,
    /// New custom domain; `Some(None)` removes it.
    pub custom_domain: Option<Option<String>>,
    /// Changes to the credential policy.
    pub credential_policy: Option<PolicyChange>,
}

/// A credential policy as a request sends it: a duration is `None` when unset
/// and `Some(zero)` for "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyInput {
    /// `max_secret_lifetime`.
    pub max_secret_lifetime: Option<chrono::Duration>,
    /// `default_secret_lifetime`.
    pub default_secret_lifetime: Option<chrono::Duration>,
    /// `pending_ttl`.
    pub pending_ttl: Option<chrono::Duration>,
    /// `max_pending_secrets` (zero: no limit).
    pub max_pending_secrets: i32,
    /// `allow_import`.
    pub allow_import: bool,
    /// `max_grace_period`.
    pub max_grace_period: Option<chrono::Duration>,
}

/// The policy fields an update mask may name, as `credential_policy.<field>`.
pub const POLICY_FIELDS: &[&str] = &[
    "max_secret_lifetime",
    "default_secret_lifetime",
    "pending_ttl",
    "max_pending_secrets",
    "allow_import",
    "max_grace_period",
];

/// A change to an org's credential policy: the whole of it, or some fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    input: PolicyInput,
    /// `None`: the whole policy (unset durations take their defaults).
    fields: Option<Vec<&'static str>>,
}

fn limit(
    duration: Option<chrono::Duration>,
    default: Option<chrono::Duration>,
) -> Option<chrono::Duration> {
    match duration {
        None => default,
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    }
}

impl PolicyChange {
    /// The policy after this change to `current`, checked (violations name
    /// `credential_policy.<field>`).
    pub fn apply(&self, current: CredentialPolicy) -> Result<CredentialPolicy, Vec<Violation>> {
        let defaults = CredentialPolicy::default();
        let input = &self.input;
        let wanted = CredentialPolicy {
            max_secret_lifetime: limit(input.max_secret_lifetime, defaults.max_secret_lifetime),
            default_secret_lifetime: limit(
                input.default_secret_lifetime,
                defaults.default_secret_lifetime,
            ),
            pending_ttl: limit(input.pending_ttl, defaults.pending_ttl),
            max_pending_secrets: u32::try_from(input.max_pending_secrets)
                .ok()
                .filter(|n| *n > 0),
            allow_import: input.allow_import,
            max_grace_period: limit(input.max_grace_period, defaults.max_grace_period),
        };
        if input.max_pending_secrets < 0 {
            return Err(vec![Violation::new(
                "credential_policy.max_pending_secrets",
                "must be zero (no limit) or positive",
            )]);
        }
        let policy = match &self.fields {
            None => wanted,
            Some(fields) => {
                let mut policy = current;
                for field in fields {
                    match *field {
                        "max_secret_lifetime" => {
                            policy.max_secret_lifetime = wanted.max_secret_lifetime;
                        }
                        "default_secret_lifetime" => {
                            policy.default_secret_lifetime = wanted.default_secret_lifetime;
                        }
                        "pending_ttl" => policy.pending_ttl = wanted.pending_ttl,
                        "max_pending_secrets" => {
                            policy.max_pending_secrets = wanted.max_pending_secrets;
                        }
                        "allow_import" => policy.allow_import = wanted.allow_import,
                        _ => policy.max_grace_period = wanted.max_grace_period,
                    }
                }
                policy
            }
        };
        policy.validate()?;
        Ok(policy)
    }

    /// The mask paths it changes, for the audit trail.
    pub fn paths(&self) -> Vec<String> {
        match &self.fields {
            None => vec!["credential_policy".into()],
            Some(fields) => fields
                .iter()
                .map(|f| format!("credential_policy.{f}"))
                .collect(),
        }
    }
}

/// The fields of an org that an update mask may name.
pub const UPDATABLE_FIELDS: &[&str] = &[
    "name",
    "main_website",
    "custom_domain",
    "credential_policy",
    "credential_policy.<field>",
];
/// Fields that never change once the org exists.
pub const IMMUTABLE_FIELDS: &[&str] = &["id", "client_id"];

impl OrgChanges {
    /// The names of the fields this update changes (for the audit trail).
    pub fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            self.name.is_some().then_some("name"),
            self.main_website.is_some().then_some("main_website"),
            self.custom_domain.is_some().then_some("custom_domain"),
        ]
        .into_iter()
        .flatten()
        .map(str::to_owned)
        .collect();
        if let Some(policy) = &self.credential_policy {
            names.extend(policy.paths());
        }
        names
    }

    /// Validates an update: `paths` is the update mask, the other arguments the
    /// values sent with it. Naming `id` or `client_id` is refused.
    pub fn parse(
        paths: &[String],
        name: &str,
        main_website: &str,
        custom_domain: &str,
        policy: PolicyInput,
    ) -> Result<Self, Vec<Violation>> {
        if paths.is_empty() {
            return Err(vec![Violation::new(
                "update_mask",
                format!("must name at least one of: {}", UPDATABLE_FIELDS.join(", ")),
            )]);
        }
        let mut changes = OrgChanges::default();
        let mut violations = Vec::new();
        let mut policy_fields: Option<Vec<&'static str>> = Some(Vec::new());
        let mut whole_policy = false;
        for path in paths {
            if path == "credential_policy" {
                whole_policy = true;
                continue;
            }
            if let Some(field) = path.strip_prefix("credential_policy.") {
                match POLICY_FIELDS.iter().find(|f| **f == field) {
                    Some(known) => policy_fields.get_or_insert_with(Vec::new).push(known),
                    None => violations.push(Violation::new(
                        "update_mask",
                        format!(
                            "unknown field `{path}`; credential_policy's fields are {}",
                            POLICY_FIELDS.join(", ")
                        ),
                    )),
                }
                continue;
            }
            match path.as_str() {
                "name" => match parse_name("org.name", name) {
                    Ok(value) => changes.name = Some(value),
                    Err(v) => violations.push(v),
                },
                "main_website" => match parse_https_url("org.main_website", main_website) {
                    Ok(value) => changes.main_website = Some(value),
                    Err(v) => violations.push(v),
                },
                "custom_domain" => match parse_custom_domain("org.custom_domain", custom_domain) {
                    Ok(value) => changes.custom_domain = Some(value),
                    Err(v) => violations.push(v),
                },
                other if IMMUTABLE_FIELDS.contains(&other) => violations.push(Violation::new(
                    "update_mask",
                    format!("`{other}` can never change"),
                )),
                other => violations.push(Violation::new(
                    "update_mask",
                    format!(
                        "unknown field `{other}`; updatable fields are {}",
                        UPDATABLE_FIELDS.join(", ")
                    ),
                )),
            }
        }
        if whole_policy {
            policy_fields = None;
        }
        if whole_policy || policy_fields.as_ref().is_some_and(|f| !f.is_empty()) {
            changes.credential_policy = Some(PolicyChange {
                input: policy,
                fields: policy_fields,
            });
        }
        if violations.is_empty() {
            Ok(changes)
        } else {
            Err(violations)
        }
    }
}

/// A display name: 1 to 200 characters after trimming, no control characters.
pub fn parse_name(field: &str, value: &str) -> Result<String, Violation> {
    let name = value.trim();
    if name.is_empty() {
        return Err(Violation::new(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Violation::new(field, "must be at most 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(Violation::new(field, "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// An absolute https URL with a DNS host name and no user info.
pub fn parse_https_url(field: &str, value: &str) -> Result<String, Violation> {
    if value.is_empty() {
        return Err(Violation::new(
            field,
            "must be an absolute https URL such as https://example.com",
        ));
    }
    if value.len() > MAX_URL_LEN {
        return Err(Violation::new(field, "must be at most 2048 characters"));
    }
    super::link::check_url_text(field, value)?;
    let url = url::Url::parse(value).map_err(|_| {
        Violation::new(
            field,
            "must be an absolute https URL such as https://example.com",
        )
    })?;
    if url.scheme() != "https" {
        return Err(Violation::new(field, "must use the https scheme"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Violation::new(field, "must not contain user info"));
    }
    match url.host() {
        Some(url::Host::Domain(domain)) => {
            host::parse_dns_host(field, domain)?;
        }
        _ => {
            return Err(Violation::new(
                field,
                "must have a DNS host name, not an IP address",
            ));
        }
    }
    Ok(value.to_owned())
}

/// An optional custom domain: empty for none, otherwise a DNS host name.
pub fn parse_custom_domain(field: &str, value: &str) -> Result<Option<String>, Violation> {
    if value.is_empty() {
        Ok(None)
    } else {
        host::parse_dns_host(field, value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn a_valid_org_is_accepted_with_its_domain_canonical() {
        let org =
            NewOrg::parse(" Acme ", "https://acme.example/home", "Login.Acme.Example.").unwrap();
        assert_eq!(org.name, "Acme");
        assert_eq!(org.custom_domain.as_deref(), Some("login.acme.example"));
        assert_eq!(
            NewOrg::parse("Acme", "https://acme.example", "")
                .unwrap()
                .custom_domain,
            None
        );
    }

    #[test]
    fn every_broken_rule_is_reported_with_its_field() {
        let err = NewOrg::parse("", "http://acme.example", "not a domain").unwrap_err();
        assert_eq!(fields(&err), ["name", "main_website", "custom_domain"]);
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(parse_name("name", &"x".repeat(200)).is_ok());
        assert!(parse_name("name", &"x".repeat(201)).is_err());
        assert!(parse_name("name", "   ").is_err());
        assert!(parse_name("name", "a\u{7}b").is_err());
    }

    #[test]
    fn main_website_must_be_absolute_https_with_a_host_name() {
        for bad in [
            "example.com",
            "http://example.com",
            "https://user:pw@example.com",
            "https://127.0.0.1",
            "https://[::1]/",
            "ftp://example.com",
            "https://localhost",
        ] {
            assert!(parse_https_url("main_website", bad).is_err(), "{bad}");
        }
        assert!(parse_https_url("main_website", "https://www.example.com/path?q=1").is_ok());
    }

    #[test]
    fn updates_refuse_immutable_unknown_and_empty_masks() {
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = OrgChanges::parse(&paths(&["client_id"]), "", "", "", PolicyInput::default())
            .unwrap_err();
        assert_eq!(fields(&err), ["update_mask"]);
        assert!(OrgChanges::parse(&paths(&["id"]), "", "", "", PolicyInput::default()).is_err());
        assert!(
            OrgChanges::parse(&paths(&["colour"]), "", "", "", PolicyInput::default()).is_err()
        );
        assert!(OrgChanges::parse(&[], "", "", "", PolicyInput::default()).is_err());
        let changes = OrgChanges::parse(
            &paths(&["custom_domain"]),
            "",
            "",
            "",
            PolicyInput::default(),
        )
        .unwrap();
        assert_eq!(changes.custom_domain, Some(None));
        assert_eq!(changes.name, None);
    }

    #[test]
    fn a_policy_changes_whole_or_by_field() {
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let days = chrono::Duration::days;
        let input = PolicyInput {
            max_secret_lifetime: Some(days(90)),
            pending_ttl: None,
            ..PolicyInput::default()
        };
        let field = OrgChanges::parse(
            &paths(&["credential_policy.max_secret_lifetime"]),
            "",
            "",
            "",
            input.clone(),
        )
        .unwrap()
        .credential_policy
        .unwrap();
        let after = field.apply(CredentialPolicy::default()).unwrap();
        assert_eq!(after.max_secret_lifetime, Some(days(90)));
        assert_eq!(after.pending_ttl, Some(days(7)), "other fields kept");
        assert!(after.allow_import, "other fields kept");
        let whole = OrgChanges::parse(&paths(&["credential_policy"]), "", "", "", input)
            .unwrap()
            .credential_policy
            .unwrap()
            .apply(CredentialPolicy::default())
            .unwrap();
        assert_eq!(whole.pending_ttl, Some(days(7)), "unset: the default");
        assert!(!whole.allow_import, "the whole policy, as sent");
        let zero = PolicyInput {
            pending_ttl: Some(chrono::Duration::zero()),
            ..PolicyInput::default()
        };
        let unlimited =
            OrgChanges::parse(&paths(&["credential_policy.pending_ttl"]), "", "", "", zero)
                .unwrap()
                .credential_policy
                .unwrap()
                .apply(CredentialPolicy::default())
                .unwrap();
        assert_eq!(unlimited.pending_ttl, None, "zero: no limit");
        let err = OrgChanges::parse(
            &paths(&["credential_policy.colour"]),
            "",
            "",
            "",
            PolicyInput::default(),
        )
        .unwrap_err();
        assert_eq!(err[0].field, "update_mask");
    }
}
