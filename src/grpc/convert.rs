//! Conversions between proto messages and domain types.

use chrono::{DateTime, Utc};

use crate::{domain::org::Org, pb};

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
