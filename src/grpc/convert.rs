//! Conversions between proto messages and domain types.

use chrono::{DateTime, Utc};

use crate::{
    Error,
    domain::{
        app::{AppRegistration, Platform},
        audit::AuditEvent,
        org::Org,
        secret::{ClientSecret, ClientSecretState},
    },
    pb,
};

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
        id: org.id,
        client_id: org.client_id,
        name: org.name,
        main_website: org.main_website,
        custom_domain: org.custom_domain.unwrap_or_default(),
        login_domain,
        create_time: Some(timestamp(org.create_time)),
        update_time: Some(timestamp(org.update_time)),
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
    }
}

/// The proto `ClientSecret` (metadata only) for `secret`.
pub fn client_secret(secret: ClientSecret) -> pb::ClientSecret {
    pb::ClientSecret {
        id: secret.id,
        org_id: secret.org_id,
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

/// The domain platform of a proto platform; `None` for UNSPECIFIED.
pub fn platform(platform: pb::Platform) -> Option<Platform> {
    match platform {
        pb::Platform::Ios => Some(Platform::Ios),
        pb::Platform::Android => Some(Platform::Android),
        pb::Platform::Web => Some(Platform::Web),
        pb::Platform::Unspecified => None,
    }
}

/// The proto `AppRegistration` for `app`.
pub fn app_registration(app: AppRegistration) -> pb::AppRegistration {
    let (proto_platform, bundle_id, package_name, app_link, callback_url) = match app.platform {
        Platform::Ios => (
            pb::Platform::Ios,
            app.fields.app_id,
            String::new(),
            app.fields.redirect_uri,
            String::new(),
        ),
        Platform::Android => (
            pb::Platform::Android,
            String::new(),
            app.fields.app_id,
            app.fields.redirect_uri,
            String::new(),
        ),
        Platform::Web => (
            pb::Platform::Web,
            String::new(),
            String::new(),
            String::new(),
            app.fields.redirect_uri,
        ),
    };
    pb::AppRegistration {
        id: app.id,
        org_id: app.org_id,
        name: app.name,
        platform: proto_platform.into(),
        bundle_id,
        package_name,
        app_link,
        callback_url,
        apple_team_id: app.fields.apple_team_id,
        sha256_cert_fingerprints: app.fields.sha256_cert_fingerprints,
        require_pkce: app.require_pkce,
        create_time: Some(timestamp(app.create_time)),
        update_time: Some(timestamp(app.update_time)),
    }
}

/// The time of a protobuf timestamp, or INVALID_ARGUMENT naming `field`.
pub fn time(field: &str, timestamp: prost_types::Timestamp) -> Result<DateTime<Utc>, Error> {
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

/// The proto `AuditEvent` for `event`.
pub fn audit_event(event: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: event.id,
        time: Some(timestamp(event.time)),
        caller: event.caller,
        action: event.action,
        org_id: event.org_id.unwrap_or_default(),
        target_id: event.target_id,
        outcome: event.outcome,
        request_id: event.request_id,
        details: event.details,
    }
}
