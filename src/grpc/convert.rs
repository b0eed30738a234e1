//! Conversions between proto messages and domain types.

use chrono::{DateTime, Utc};

use crate::{
    Error,
    domain::{
        Violation,
        app::{AppKind, AppRegistration, Platform},
        audit::AuditEvent,
        caller::{Caller, ReachedOrg},
        ids::{ClientId, OrgId},
        org::{Org, PolicyInput},
        paging::{Page, PageRequest},
        policy::{CredentialPolicy, Expiration},
        secret::{ClientSecret, ClientSecretState},
    },
    pb,
};

/// Parses an id the caller sent in `field` (`OrgId::parse`, `SecretId::parse`…):
/// INVALID_ARGUMENT naming the field when it is missing or not an id.
pub fn id<T>(
    parse: fn(&str, &str) -> Result<T, Violation>,
    field: &str,
    value: &str,
) -> Result<T, Error> {
    parse(field, value).map_err(Error::from)
}

/// The org id in `field` of a request, parsed and checked against the orgs the
/// caller reaches (PERMISSION_DENIED outside them, whether the org exists or not).
pub fn org_in_reach(caller: &Caller, field: &str, value: &str) -> Result<ReachedOrg, Error> {
    crate::service::reach(&caller.orgs, id(OrgId::parse, field, value)?)
}

/// The client ID a caller looks an org up by: one that cannot exist is NOT_FOUND,
/// like any unknown one.
pub fn client_id_lookup(value: &str) -> Result<ClientId, Error> {
    ClientId::parse(value).ok_or(Error::NotFound("org"))
}

/// The page a List request asks for; `list` names the list and every filter that
/// shapes it, so that a page token only continues the list it came from.
pub fn page_request(page_size: i32, page_token: &str, list: &[&str]) -> Result<PageRequest, Error> {
    PageRequest::parse(page_size, page_token, list).map_err(Error::from)
}

/// The items of `page` converted, and its next page token.
pub fn page<T, U>(page: Page<T>, convert: impl FnMut(T) -> U) -> (Vec<U>, String) {
    let page = page.map(convert);
    (page.items, page.next_page_token)
}

/// A protobuf timestamp for `time`.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// The proto `Org` for `org`, with its login domain.
pub fn org(org: Org, login_domain: String) -> pb::Org {
    pb::Org {
        id: org.id.into_string(),
        client_id: org.client_id.into_string(),
        name: org.name,
        main_website: org.main_website,
        custom_domain: org.custom_domain.unwrap_or_default(),
        login_domain,
        create_time: Some(timestamp(org.create_time)),
        update_time: Some(timestamp(org.update_time)),
        credential_policy: Some(credential_policy(&org.credential_policy)),
    }
}

fn duration(d: chrono::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.num_seconds(),
        nanos: d.subsec_nanos(),
    }
}

/// The proto `CredentialPolicy` of `policy`: no limit is a zero duration.
pub fn credential_policy(policy: &CredentialPolicy) -> pb::CredentialPolicy {
    let limit =
        |d: Option<chrono::Duration>| Some(duration(d.unwrap_or_else(chrono::Duration::zero)));
    pb::CredentialPolicy {
        max_secret_lifetime: limit(policy.max_secret_lifetime),
        default_secret_lifetime: limit(policy.default_secret_lifetime),
        pending_ttl: limit(policy.pending_ttl),
        max_pending_secrets: policy
            .max_pending_secrets
            .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
        allow_import: policy.allow_import,
        max_grace_period: limit(policy.max_grace_period),
    }
}

/// A duration the caller sent in `field`: not negative, bounded.
pub fn duration_field(field: &str, d: prost_types::Duration) -> Result<chrono::Duration, Error> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos > 999_999_999 {
        return Err(Error::invalid(field, "must not be negative"));
    }
    if d.seconds > crate::domain::policy::MAX_DURATION.num_seconds() {
        return Err(Error::invalid(field, "must be at most 3650 days"));
    }
    Ok(chrono::Duration::seconds(d.seconds) + chrono::Duration::nanoseconds(i64::from(d.nanos)))
}

/// A credential policy as the request sent it (`None`: not sent).
pub fn policy_input(policy: Option<pb::CredentialPolicy>) -> Result<PolicyInput, Error> {
    let policy = policy.unwrap_or_default();
    let field = |name: &str, d: Option<prost_types::Duration>| {
        d.map(|d| duration_field(&format!("org.credential_policy.{name}"), d))
            .transpose()
    };
    Ok(PolicyInput {
        max_secret_lifetime: field("max_secret_lifetime", policy.max_secret_lifetime)?,
        default_secret_lifetime: field("default_secret_lifetime", policy.default_secret_lifetime)?,
        pending_ttl: field("pending_ttl", policy.pending_ttl)?,
        max_pending_secrets: policy.max_pending_secrets,
        allow_import: policy.allow_import,
        max_grace_period: field("max_grace_period", policy.max_grace_period)?,
    })
}

/// The `expiration` a Generate, Import or Rotate request names.
pub fn expiration(
    expire_time: Option<prost_types::Timestamp>,
    ttl: Option<prost_types::Duration>,
) -> Result<Option<Expiration>, Error> {
    match (expire_time, ttl) {
        (Some(at), _) => Ok(Some(Expiration::At(time("expire_time", at)?))),
        (None, Some(ttl)) => Ok(Some(Expiration::After(positive_duration("ttl", ttl)?))),
        (None, None) => Ok(None),
    }
}

/// The proto state of `state`.
pub fn client_secret_state(state: ClientSecretState) -> pb::ClientSecretState {
    match state {
        ClientSecretState::Pending => pb::ClientSecretState::Pending,
        ClientSecretState::Active => pb::ClientSecretState::Active,
        ClientSecretState::Retiring => pb::ClientSecretState::Retiring,
        ClientSecretState::Superseded => pb::ClientSecretState::Superseded,
        ClientSecretState::Revoked => pb::ClientSecretState::Revoked,
        ClientSecretState::Expired => pb::ClientSecretState::Expired,
    }
}

/// The state a list filter names (`field`, a raw enum value): UNSPECIFIED and
/// numbers this version does not know are refused rather than ignored, so that
/// a filter never silently widens to everything.
pub fn state_filter(field: &str, state: i32) -> Result<ClientSecretState, Error> {
    Ok(match pb::ClientSecretState::try_from(state) {
        Ok(pb::ClientSecretState::Pending) => ClientSecretState::Pending,
        Ok(pb::ClientSecretState::Active) => ClientSecretState::Active,
        Ok(pb::ClientSecretState::Retiring) => ClientSecretState::Retiring,
        Ok(pb::ClientSecretState::Superseded) => ClientSecretState::Superseded,
        Ok(pb::ClientSecretState::Revoked) => ClientSecretState::Revoked,
        Ok(pb::ClientSecretState::Expired) => ClientSecretState::Expired,
        Ok(pb::ClientSecretState::Unspecified) => {
            return Err(Error::invalid(field, "must name a state, not UNSPECIFIED"));
        }
        Err(_) => {
            return Err(Error::invalid(
                field,
                format!("{state} is not a client secret state"),
            ));
        }
    })
}

/// The proto `ClientSecret` (metadata only) for `secret`.
pub fn client_secret(secret: ClientSecret) -> pb::ClientSecret {
    pb::ClientSecret {
        id: secret.id.into_string(),
        org_id: secret.org_id.into_string(),
        state: client_secret_state(secret.state).into(),
        description: secret.description,
        hint: secret.hint,
        imported: secret.imported,
        create_time: Some(timestamp(secret.create_time)),
        activate_time: secret.activate_time.map(timestamp),
        expire_time: secret.expire_time.map(timestamp),
        revoke_time: secret.revoke_time.map(timestamp),
        last_used_time: secret.last_used_time.map(timestamp),
    }
}

/// The platform of a new app: UNSPECIFIED is INVALID_ARGUMENT naming `platform`.
pub fn platform(platform: pb::Platform) -> Result<Platform, Error> {
    match platform {
        pb::Platform::Ios => Ok(Platform::Ios),
        pb::Platform::Android => Ok(Platform::Android),
        pb::Platform::Web => Ok(Platform::Web),
        pb::Platform::Unspecified => Err(Error::invalid(
            "platform",
            "must be PLATFORM_IOS, PLATFORM_ANDROID or PLATFORM_WEB",
        )),
    }
}

/// The raw app fields of a create request or of an update's `app_registration`
/// (both messages carry them under the same names), with `require_pkce` as given.
macro_rules! app_input {
    ($message:expr, $require_pkce:expr) => {{
        let message = $message;
        $crate::domain::app::AppInput {
            require_pkce: $require_pkce(&message),
            name: message.name,
            bundle_id: message.bundle_id,
            package_name: message.package_name,
            app_link: message.app_link,
            callback_url: message.callback_url,
            apple_team_id: message.apple_team_id,
            sha256_cert_fingerprints: message.sha256_cert_fingerprints,
        }
    }};
}
pub(crate) use app_input;

/// The proto `AppRegistration` for `app`.
pub fn app_registration(app: AppRegistration) -> pb::AppRegistration {
    let require_pkce = app.require_pkce();
    let mut proto = pb::AppRegistration {
        id: app.id.into_string(),
        org_id: app.org_id.into_string(),
        name: app.name,
        require_pkce,
        create_time: Some(timestamp(app.create_time)),
        update_time: Some(timestamp(app.update_time)),
        ..Default::default()
    };
    match app.kind {
        AppKind::Ios {
            bundle_id,
            app_link,
            apple_team_id,
        } => {
            proto.set_platform(pb::Platform::Ios);
            proto.bundle_id = bundle_id;
            proto.app_link = app_link;
            proto.apple_team_id = apple_team_id.unwrap_or_default();
        }
        AppKind::Android {
            package_name,
            app_link,
            sha256_cert_fingerprints,
        } => {
            proto.set_platform(pb::Platform::Android);
            proto.package_name = package_name;
            proto.app_link = app_link;
            proto.sha256_cert_fingerprints = sha256_cert_fingerprints;
        }
        AppKind::Web { callback_url, .. } => {
            proto.set_platform(pb::Platform::Web);
            proto.callback_url = callback_url;
        }
    }
    proto
}

/// The time of a protobuf timestamp, or INVALID_ARGUMENT naming `field`.
pub fn time(field: &str, timestamp: prost_types::Timestamp) -> Result<DateTime<Utc>, Error> {
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

/// A positive duration the caller sent in `field` (a ttl).
pub fn positive_duration(
    field: &str,
    duration: prost_types::Duration,
) -> Result<chrono::Duration, Error> {
    if duration.seconds < 0 || duration.nanos < 0 || (duration.seconds == 0 && duration.nanos == 0)
    {
        return Err(Error::invalid(field, "must be positive"));
    }
    // Bounded before building a chrono Duration: huge values would overflow it.
    if duration.seconds > 100 * 365 * 24 * 3600 {
        return Err(Error::invalid(field, "must be at most 100 years"));
    }
    Ok(chrono::Duration::seconds(duration.seconds)
        + chrono::Duration::nanoseconds(i64::from(duration.nanos)))
}

/// The proto `CallerToken` for `token` (never the token itself).
pub fn caller_token(token: crate::domain::caller::CallerToken) -> pb::CallerToken {
    pb::CallerToken {
        id: token.id.into_string(),
        name: token.name,
        scopes: token.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        org_ids: token
            .orgs
            .orgs()
            .map(|orgs| orgs.iter().map(|o| o.as_str().to_owned()).collect())
            .unwrap_or_default(),
        hint: token.hint,
        create_time: Some(timestamp(token.create_time)),
        expire_time: token.expire_time.map(timestamp),
        revoke_time: token.revoke_time.map(timestamp),
        last_used_time: token.last_used_time.map(timestamp),
        parent_id: token
            .parent_id
            .map(crate::domain::ids::CallerTokenId::into_string)
            .unwrap_or_default(),
    }
}

/// The proto `AuditEvent` for `event`.
pub fn audit_event(event: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: event.id.into_string(),
        time: Some(timestamp(event.time)),
        caller: event.caller,
        action: event.action,
        org_id: event.org_id.map(|id| id.into_string()).unwrap_or_default(),
        target_id: event.target_id,
        outcome: event.outcome,
        request_id: event.request_id,
        details: event.details,
    }
}
