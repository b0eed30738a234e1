//! Conversions between proto messages and domain types.

use chrono::{DateTime, Utc};

use crate::{
    domain::{
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
