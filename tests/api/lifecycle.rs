//! The credential lifecycle end to end (issue 12): the org's credential policy on
//! Generate, Import, Rotate and Activate, expiry to the second on every replica,
//! the sweeper writing each end once, list filters across orgs, the trail by
//! target, refused calls in the trail, and UpdateOrg's re-checks.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use credd::pb::caller_tokens_client::CallerTokensClient;
use credd::{
    pb::{
        ClientSecret, ClientSecretState, CredentialPolicy, ImportClientSecretRequest,
        ListAuditEventsRequest, ListClientSecretsRequest, Org, RotateClientSecretRequest,
        UpdateOrgRequest, activate_client_secret_request::Secret, generate_client_secret_request,
        import_client_secret_request,
    },
    service::ManualClock,
};
use tonic::Code;

use crate::helpers::{
    Backend, Clients, assert_code, assert_invalid, spawn_app, spawn_app_with,
    spawn_app_with_clock_and, spawn_replica_with, wait_until,
};

const DAY: i64 = 86_400;

fn days(n: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: n * DAY,
        nanos: 0,
    }
}

fn timestamp(time: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

fn time_of(timestamp: &prost_types::Timestamp) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(timestamp.seconds, timestamp.nanos as u32).unwrap()
}

/// A 90-day policy: lifetimes at most 90 days, 30 by default.
fn ninety_days() -> CredentialPolicy {
    CredentialPolicy {
        max_secret_lifetime: Some(days(90)),
        default_secret_lifetime: Some(days(30)),
        ..Default::default()
    }
}

async fn rotate(
    app: &Clients,
    org_id: &str,
    grace_seconds: i64,
) -> Result<credd::pb::GenerateClientSecretResponse, tonic::Status> {
    app.secrets
        .clone()
        .rotate_client_secret(RotateClientSecretRequest {
            org_id: org_id.into(),
            grace_period: Some(prost_types::Duration {
                seconds: grace_seconds,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

fn import_request(org_id: &str, plaintext: &str) -> ImportClientSecretRequest {
    ImportClientSecretRequest {
        org_id: org_id.into(),
        plaintext: plaintext.into(),
        ..Default::default()
    }
}

fn a_strong_secret() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(credd::domain::ids::random_bytes::<32>())
}

async fn list_with(app: &Clients, request: ListClientSecretsRequest) -> Vec<ClientSecret> {
    app.secrets
        .clone()
        .list_client_secrets(request)
        .await
        .expect("list client secrets")
        .into_inner()
        .secrets
}

fn state_of(list: &[ClientSecret], id: &str) -> ClientSecretState {
    list.iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("secret {id} listed in {list:?}"))
        .state()
}

async fn events_about(app: &Clients, target_id: &str) -> Vec<credd::pb::AuditEvent> {
    app.audit
        .clone()
        .list_audit_events(ListAuditEventsRequest {
            target_id: target_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list audit events")
        .into_inner()
        .events
}

async fn every_policy_bound_is_refused_naming_its_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    // The defaults, as a new org shows them.
    let policy = org.credential_policy.expect("a policy, even unset");
    assert_eq!(policy.pending_ttl, Some(days(7)));
    assert_eq!(policy.max_pending_secrets, 10);
    assert!(policy.allow_import);
    assert_eq!(policy.max_grace_period, Some(days(30)));

    let set = app
        .set_policy(
            &org.id,
            &["max_secret_lifetime", "default_secret_lifetime"],
            ninety_days(),
        )
        .await
        .expect("set a 90-day policy");
    let set = set.credential_policy.unwrap();
    assert_eq!(set.max_secret_lifetime, Some(days(90)));
    assert_eq!(
        set.pending_ttl,
        Some(days(7)),
        "fields outside the mask keep their values"
    );

    // A ttl beyond the maximum, an expire_time beyond it and one in the past.
    use generate_client_secret_request::Expiration;
    assert_invalid(
        app.generate_secret_with(&org.id, Some(Expiration::Ttl(days(91))))
            .await,
        "ttl",
    );
    let beyond = Utc::now() + chrono::Duration::days(91);
    assert_invalid(
        app.generate_secret_with(&org.id, Some(Expiration::ExpireTime(timestamp(beyond))))
            .await,
        "expire_time",
    );
    let past = Utc::now() - chrono::Duration::seconds(1);
    assert_invalid(
        app.generate_secret_with(&org.id, Some(Expiration::ExpireTime(timestamp(past))))
            .await,
        "expire_time",
    );
    assert_invalid(
        app.generate_secret_with(&org.id, Some(Expiration::Ttl(days(0))))
            .await,
        "ttl",
    );
    assert!(
        app.list_secrets(&org.id).await.is_empty(),
        "a refused Generate stores nothing"
    );

    // Within bounds: the ttl, or the policy's default when none is named.
    let before = Utc::now();
    let named = app
        .generate_secret_with(&org.id, Some(Expiration::Ttl(days(60))))
        .await
        .unwrap()
        .secret
        .unwrap();
    let end = time_of(named.expire_time.as_ref().expect("a lifetime's end"));
    assert!(
        end >= before + chrono::Duration::days(60)
            && end <= Utc::now() + chrono::Duration::days(60)
    );
    let defaulted = app
        .generate_secret_with(&org.id, None)
        .await
        .unwrap()
        .secret
        .unwrap();
    let end = time_of(
        defaulted
            .expire_time
            .as_ref()
            .expect("the default lifetime"),
    );
    assert!(end <= Utc::now() + chrono::Duration::days(30));
    assert!(end >= before + chrono::Duration::days(30));

    // A grace beyond max_grace_period, on Activate and on Rotate: nothing changes.
    let active = app
        .activate(&org.id, Secret::SecretId(named.id.clone()), 0)
        .await
        .unwrap();
    assert_invalid(
        app.activate(&org.id, Secret::SecretId(defaulted.id.clone()), 31 * DAY)
            .await,
        "grace_period",
    );
    assert_invalid(rotate(&app, &org.id, 31 * DAY).await, "grace_period");
    let listed = app.list_secrets(&org.id).await;
    assert_eq!(listed.len(), 2, "a refused rotation stores nothing");
    assert_eq!(state_of(&listed, &active.id), ClientSecretState::Active);
    assert_eq!(state_of(&listed, &defaulted.id), ClientSecretState::Pending);

    // A policy that shortens lifetimes applies to secrets issued after it: the
    // 60-day secret keeps its end (it was within the rules it was issued under,
    // and clamping would silently cut a rollout short); a new one gets 10 days.
    app.set_policy(
        &org.id,
        &["max_secret_lifetime", "default_secret_lifetime"],
        CredentialPolicy {
            max_secret_lifetime: Some(days(10)),
            default_secret_lifetime: Some(days(10)),
            ..Default::default()
        },
    )
    .await
    .expect("shorten the policy");
    let kept = app.list_secrets(&org.id).await;
    let kept = kept.iter().find(|s| s.id == named.id).unwrap();
    assert_eq!(
        kept.expire_time, named.expire_time,
        "existing secrets keep their expiry"
    );
    assert_invalid(
        app.generate_secret_with(&org.id, Some(Expiration::Ttl(days(11))))
            .await,
        "ttl",
    );

    // A broken policy is refused naming its field, and changes nothing.
    let bad = app
        .set_policy(
            &org.id,
            &["default_secret_lifetime"],
            CredentialPolicy {
                default_secret_lifetime: Some(days(120)),
                ..Default::default()
            },
        )
        .await;
    assert_invalid(bad, "credential_policy.default_secret_lifetime");
    let org_now = app.list_orgs().await.remove(0);
    assert_eq!(
        org_now.credential_policy.unwrap().max_secret_lifetime,
        Some(days(10)),
        "a refused policy changes nothing"
    );
    let negative = app
        .set_policy(
            &org.id,
            &["max_pending_secrets"],
            CredentialPolicy {
                max_pending_secrets: -1,
                ..Default::default()
            },
        )
        .await;
    assert_invalid(negative, "credential_policy.max_pending_secrets");
    let unknown = app
        .set_policy(&org.id, &["max_colour"], CredentialPolicy::default())
        .await;
    assert_invalid(unknown, "update_mask");
}

async fn imports_follow_the_policy_and_activate_in_one_call(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let (first, first_plaintext) = app.generate_and_activate(&org.id).await;

    // Import and activate in one call, with a grace for the previous secret.
    let plaintext = a_strong_secret();
    let imported = app
        .secrets
        .clone()
        .import_client_secret(ImportClientSecretRequest {
            activate: true,
            grace_period: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            expiration: Some(import_client_secret_request::Expiration::Ttl(days(10))),
            ..import_request(&org.id, &plaintext)
        })
        .await
        .expect("import and activate")
        .into_inner();
    assert_eq!(imported.state(), ClientSecretState::Active);
    assert!(imported.expire_time.is_some());
    assert!(app.verifies(&org.client_id, &plaintext).await);
    assert!(
        app.verifies(&org.client_id, &first_plaintext).await,
        "the previous secret verifies during its grace"
    );
    assert_eq!(
        state_of(&app.list_secrets(&org.id).await, &first.id),
        ClientSecretState::Retiring
    );

    // allow_import false: refused, nothing stored.
    app.set_policy(
        &org.id,
        &["allow_import"],
        CredentialPolicy {
            allow_import: false,
            ..Default::default()
        },
    )
    .await
    .expect("forbid imports");
    let refused = assert_code(
        app.secrets
            .clone()
            .import_client_secret(import_request(&org.id, &a_strong_secret()))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("allow_import"),
        "{}",
        refused.message()
    );
    assert_eq!(app.list_secrets(&org.id).await.len(), 2);
}

async fn pending_secrets_are_capped_superseded_and_expired(backend: Backend) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = spawn_app_with_clock_and(backend, clock.clone(), |settings| {
        settings.sweep_interval = Some(Duration::from_millis(100));
    })
    .await;
    let org = app.create_org().await;

    // Ten wait at once; the 11th is refused with the rule named.
    let mut pending = Vec::new();
    for _ in 0..10 {
        pending.push(app.generate_secret(&org.id).await);
    }
    let eleventh = assert_code(
        app.generate_secret_with(&org.id, None).await,
        Code::FailedPrecondition,
    );
    assert!(
        eleventh.message().contains("max_pending_secrets"),
        "{}",
        eleventh.message()
    );

    // Activating the 5th supersedes every older PENDING one, not the newer ones.
    let fifth = pending[4].secret.clone().unwrap();
    app.activate(&org.id, Secret::SecretId(fifth.id.clone()), 0)
        .await
        .unwrap();
    let listed = app.list_secrets(&org.id).await;
    for (n, generated) in pending.iter().enumerate() {
        let id = &generated.secret.as_ref().unwrap().id;
        let expected = match n {
            0..4 => ClientSecretState::Superseded,
            4 => ClientSecretState::Active,
            _ => ClientSecretState::Pending,
        };
        assert_eq!(state_of(&listed, id), expected, "secret {n}");
    }
    for older in &pending[..4] {
        let id = older.secret.as_ref().unwrap().id.clone();
        assert_code(
            app.activate(&org.id, Secret::SecretId(id), 0).await,
            Code::FailedPrecondition,
        );
        assert!(!app.verifies(&org.client_id, &older.plaintext).await);
    }

    // Past pending_ttl (7 days) the newer ones are EXPIRED by the sweeper, with
    // one event each; the active one is untouched.
    clock.advance(chrono::Duration::days(7) + chrono::Duration::seconds(1));
    let newer: Vec<String> = pending[5..]
        .iter()
        .map(|g| g.secret.as_ref().unwrap().id.clone())
        .collect();
    // Listed as EXPIRED as of now at once, before any sweep stores it.
    let listed = app.list_secrets(&org.id).await;
    for id in &newer {
        assert_eq!(state_of(&listed, id), ClientSecretState::Expired);
    }
    wait_until(
        "the sweeper stores the ends",
        Duration::from_secs(10),
        async || {
            let ended = app
                .audit
                .clone()
                .list_audit_events(ListAuditEventsRequest {
                    org_id: org.id.clone(),
                    action: "secret.expired".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .events;
            ended.len() >= newer.len()
        },
    )
    .await;
    assert_eq!(state_of(&listed, &fifth.id), ClientSecretState::Active);
    for id in &newer {
        let trail = events_about(&app, id).await;
        let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["secret.expired", "secret.generate"], "{id}");
        assert_eq!(trail[0].caller, "credd");
        assert_code(
            app.activate(&org.id, Secret::SecretId(id.clone()), 0).await,
            Code::FailedPrecondition,
        );
    }
}

async fn an_expired_secret_never_verifies_to_the_second_on_any_replica(backend: Backend) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let first = spawn_app_with_clock_and(backend, clock.clone(), |settings| {
        // This replica never sweeps in the test's time: verify alone must refuse.
        settings.sweep_interval = Some(Duration::from_secs(3600));
    })
    .await;
    // The second replica reads the same clock, so both are asked at each instant.
    let second = crate::helpers::spawn_replica_with_clock(&first, clock.clone(), |settings| {
        settings.sweep_interval = Some(Duration::from_secs(3600));
    })
    .await;
    let org = first.create_org().await;
    let plaintext = a_strong_secret();
    // Imported (argon2, cached after the first verify) and generated (digest).
    let imported = first
        .secrets
        .clone()
        .import_client_secret(ImportClientSecretRequest {
            activate: true,
            expiration: Some(import_client_secret_request::Expiration::Ttl(
                prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                },
            )),
            ..import_request(&org.id, &plaintext)
        })
        .await
        .unwrap()
        .into_inner();
    let end = time_of(imported.expire_time.as_ref().unwrap());
    assert!(first.verifies(&org.client_id, &plaintext).await);
    assert!(first.verifies(&org.client_id, &plaintext).await, "cached");
    wait_until(
        "the replica sees the secret",
        Duration::from_secs(10),
        async || second.verifies(&org.client_id, &plaintext).await,
    )
    .await;

    // A millisecond before the end it verifies; at the end it does not, cache or
    // not, on the clock the replica reads.
    clock.advance(end - clock_now(&clock) - chrono::Duration::milliseconds(1));
    for replica in [&first, &second] {
        assert!(replica.verifies(&org.client_id, &plaintext).await);
    }
    clock.advance(chrono::Duration::milliseconds(1));
    for (name, replica) in [("first", &first), ("second", &second)] {
        assert!(
            !replica.verifies(&org.client_id, &plaintext).await,
            "expired at its expire_time on the {name} replica, though cached and not swept"
        );
    }
    // Activating a secret that expired a millisecond ago is refused.
    let pending = first
        .generate_secret_with(
            &org.id,
            Some(generate_client_secret_request::Expiration::Ttl(
                prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                },
            )),
        )
        .await
        .unwrap();
    clock.advance(chrono::Duration::milliseconds(1001));
    let refused = assert_code(
        first
            .activate(
                &org.id,
                Secret::SecretId(pending.secret.unwrap().id.clone()),
                0,
            )
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("expired"),
        "{}",
        refused.message()
    );
    assert!(!first.verifies(&org.client_id, &pending.plaintext).await);
    let listed = first.list_secrets(&org.id).await;
    assert_eq!(
        state_of(&listed, &imported.id),
        ClientSecretState::Expired,
        "listed as EXPIRED as of now, before any sweep"
    );
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<Utc> {
    use credd::service::Clock as _;
    clock.now()
}

async fn two_replicas_sweeping_write_each_end_once(backend: Backend) {
    // Both replicas sweep every 50 ms on the wall clock, racing for every end.
    let first = spawn_app_with(backend, |settings| {
        settings.sweep_interval = Some(Duration::from_millis(50));
    })
    .await;
    let second = spawn_replica_with(&first, |settings| {
        settings.sweep_interval = Some(Duration::from_millis(50));
    })
    .await;
    let two_seconds = Some(import_client_secret_request::Expiration::Ttl(
        prost_types::Duration {
            seconds: 2,
            nanos: 0,
        },
    ));
    // Three orgs whose ACTIVE secret's lifetime ends within two seconds, and one
    // whose previous secret's one-second grace ends.
    let mut expiring = Vec::new();
    for _ in 0..3 {
        let org = first.create_org().await;
        let secret = second
            .secrets
            .clone()
            .import_client_secret(ImportClientSecretRequest {
                activate: true,
                expiration: two_seconds,
                ..import_request(&org.id, &a_strong_secret())
            })
            .await
            .unwrap()
            .into_inner();
        expiring.push(secret.id);
    }
    let rotated = first.create_org().await;
    let (retiring, _) = first.generate_and_activate(&rotated.id).await;
    rotate(&second, &rotated.id, 1).await.unwrap();

    let ends = async || {
        first
            .audit
            .clone()
            .list_audit_events(ListAuditEventsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .into_iter()
            .filter(|e| e.action == "secret.expired" || e.action == "secret.grace_ended")
            .collect::<Vec<_>>()
    };
    wait_until("every end is stored", Duration::from_secs(15), async || {
        ends().await.len() >= 4
    })
    .await;
    // Let both sweepers run a few more rounds: nothing is written twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ends = ends().await;
    let mut found: Vec<(&str, &str)> = ends
        .iter()
        .map(|e| (e.action.as_str(), e.target_id.as_str()))
        .collect();
    found.sort_unstable();
    let mut expected: Vec<(&str, &str)> = expiring
        .iter()
        .map(|id| ("secret.expired", id.as_str()))
        .chain([("secret.grace_ended", retiring.id.as_str())])
        .collect();
    expected.sort_unstable();
    assert_eq!(found, expected, "one end event per secret: {ends:?}");
    for id in &expiring {
        let org_id = &ends.iter().find(|e| &e.target_id == id).unwrap().org_id;
        assert_eq!(
            state_of(&second.list_secrets(org_id).await, id),
            ClientSecretState::Expired
        );
    }
}

/// PostgreSQL only: a trigger refuses the step that moves the ACTIVE secret out
/// (the last write of a rotation, and of an import with `activate`). Each call
/// then fails after its first writes, and nothing of it is left: no new secret,
/// no event, the ACTIVE secret as it was and still verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_or_activating_import_failing_midway_leaves_nothing() {
    use sea_orm::ConnectionTrait as _;
    let Some(backend) = Backend::postgres() else {
        eprintln!("CREDD_TEST_DATABASE_URL is not set: PostgreSQL trigger test skipped");
        return;
    };
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let first = rotate(&app, &org.id, 0).await.expect("first rotation");
    let before = app.list_secrets(&org.id).await;
    let trail = async || {
        app.audit
            .clone()
            .list_audit_events(ListAuditEventsRequest {
                org_id: org.id.clone(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
    };
    let trail_before = trail().await.len();
    let db = sea_orm::Database::connect(app.database_url.as_str())
        .await
        .unwrap();
    db.execute_unprepared(
        "CREATE FUNCTION credd_test_refuse() RETURNS trigger AS $$ BEGIN \
           IF OLD.state = 'ACTIVE' AND NEW.state <> 'ACTIVE' THEN \
             RAISE EXCEPTION 'test: the ACTIVE secret may not move'; \
           END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER credd_test_refuse BEFORE UPDATE ON client_secrets \
           FOR EACH ROW EXECUTE FUNCTION credd_test_refuse();",
    )
    .await
    .unwrap();
    assert!(
        rotate(&app, &org.id, 60).await.is_err(),
        "the rotation fails"
    );
    let plaintext = a_strong_secret();
    let import = app
        .secrets
        .clone()
        .import_client_secret(ImportClientSecretRequest {
            activate: true,
            ..import_request(&org.id, &plaintext)
        })
        .await;
    assert!(import.is_err(), "the activating import fails");
    let shape = |list: Vec<credd::pb::ClientSecret>| {
        list.into_iter()
            .map(|s| (s.id.clone(), s.state(), s.expire_time))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(app.list_secrets(&org.id).await),
        shape(before),
        "no secret of the failed calls is stored, the ACTIVE one unmoved"
    );
    let trail_after = trail().await;
    assert_eq!(
        trail_after.len(),
        trail_before,
        "no event of the failed calls: {trail_after:?}"
    );
    assert!(app.verifies(&org.client_id, &first.plaintext).await);
    assert!(!app.verifies(&org.client_id, &plaintext).await);
}

async fn rotate_is_one_transaction(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    // No secret yet: a rotation is a first activation.
    let first = rotate(&app, &org.id, 0).await.expect("first rotation");
    let first_meta = first.secret.clone().unwrap();
    assert_eq!(first_meta.state(), ClientSecretState::Active);
    assert!(first.plaintext.starts_with("credd_cs_"));
    assert!(app.verifies(&org.client_id, &first.plaintext).await);

    // With a grace: the new verifies, the old one until the grace ends.
    let second = rotate(&app, &org.id, 3600)
        .await
        .expect("rotate with grace");
    assert!(app.verifies(&org.client_id, &second.plaintext).await);
    assert!(app.verifies(&org.client_id, &first.plaintext).await);
    let listed = app.list_secrets(&org.id).await;
    assert_eq!(
        state_of(&listed, &first_meta.id),
        ClientSecretState::Retiring
    );
    let trail = events_about(&app, &second.secret.as_ref().unwrap().id).await;
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["secret.activate", "secret.generate"]);

    // A rotation that fails (the org is gone between the policy read and the
    // write is hard to time; a refused one is not): nothing stored, nothing moved.
    assert_invalid(rotate(&app, &org.id, -5).await, "grace_period");
    // (last_used_time moves with the verifications above, in the background.)
    let shape = |list: Vec<credd::pb::ClientSecret>| {
        list.into_iter()
            .map(|s| (s.id.clone(), s.state(), s.expire_time))
            .collect::<Vec<_>>()
    };
    let after = app.list_secrets(&org.id).await;
    assert_eq!(
        shape(after),
        shape(listed),
        "a refused rotation leaves the org as it was"
    );
    assert_code(
        rotate(&app, "01a23835-6fed-7610-96b1-f8545188bab2", 0).await,
        Code::NotFound,
    );
}

async fn lists_filter_by_state_and_expiry_across_orgs(backend: Backend) {
    let app = spawn_app(backend).await;
    let (soon, later, none) = (
        app.create_org().await,
        app.create_org().await,
        app.create_org().await,
    );
    use generate_client_secret_request::Expiration;
    let mut ids = std::collections::HashMap::new();
    for (org, ttl) in [(&soon, Some(5)), (&later, Some(60)), (&none, None)] {
        let generated = app
            .generate_secret_with(&org.id, ttl.map(|d| Expiration::Ttl(days(d))))
            .await
            .unwrap();
        let id = generated.secret.unwrap().id;
        app.activate(&org.id, Secret::SecretId(id.clone()), 0)
            .await
            .unwrap();
        ids.insert(org.id.clone(), id);
        // A pending one beside each.
        app.generate_secret(&org.id).await;
    }

    // "What expires in the next 14 days", across every org.
    let expiring = list_with(
        &app,
        ListClientSecretsRequest {
            org_id: "-".into(),
            states: vec![
                ClientSecretState::Active as i32,
                ClientSecretState::Retiring as i32,
            ],
            expire_before: Some(timestamp(Utc::now() + chrono::Duration::days(14))),
            ..Default::default()
        },
    )
    .await;
    let found: Vec<(&str, &str)> = expiring
        .iter()
        .map(|s| (s.org_id.as_str(), s.id.as_str()))
        .collect();
    assert_eq!(found, [(soon.id.as_str(), ids[&soon.id].as_str())]);

    // Every active secret across orgs; only pending ones of one org.
    let active = list_with(
        &app,
        ListClientSecretsRequest {
            org_id: "-".into(),
            states: vec![ClientSecretState::Active as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(active.len(), 3);
    assert!(
        active
            .iter()
            .all(|s| s.state() == ClientSecretState::Active)
    );
    let pending = list_with(
        &app,
        ListClientSecretsRequest {
            org_id: later.id.clone(),
            states: vec![ClientSecretState::Pending as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].org_id, later.id);

    // Across orgs pages too, newest first, without repeats.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .secrets
            .clone()
            .list_client_secrets(ListClientSecretsRequest {
                org_id: "-".into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.secrets.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 6);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);

    // An org-scoped reader sees only its orgs across "-".
    let token = CallerTokensClient::new(app.channel_with(Some(crate::helpers::TOKEN)))
        .create_caller_token(credd::pb::CreateCallerTokenRequest {
            name: "soon-reader".into(),
            scopes: vec!["secrets:read".into()],
            org_ids: vec![soon.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    let scoped = Clients::new(app.channel.clone(), Some(&token));
    let reach = scoped
        .secrets
        .clone()
        .list_client_secrets(ListClientSecretsRequest {
            org_id: "-".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secrets;
    assert_eq!(reach.len(), 2);
    assert!(reach.iter().all(|s| s.org_id == soon.id));

    // Bad filters name their field.
    assert_invalid(
        app.secrets
            .clone()
            .list_client_secrets(ListClientSecretsRequest {
                org_id: "-".into(),
                states: vec![99],
                ..Default::default()
            })
            .await,
        "states",
    );
}

async fn refused_calls_leave_one_event_per_caller(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = app.create_org().await;
    let reader = CallerTokensClient::new(app.channel_with(Some(crate::helpers::TOKEN)))
        .create_caller_token(credd::pb::CreateCallerTokenRequest {
            name: "reader".into(),
            scopes: vec!["orgs:read".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    let as_reader = Clients::new(app.channel.clone(), Some(&reader));
    for _ in 0..3 {
        assert_code(
            as_reader.generate_secret_with(&org.id, None).await,
            Code::PermissionDenied,
        );
    }
    let nobody = Clients::new(app.channel.clone(), Some("not-a-token"));
    for _ in 0..2 {
        assert_code(
            nobody
                .orgs
                .clone()
                .list_orgs(credd::pb::ListOrgsRequest::default())
                .await,
            Code::Unauthenticated,
        );
    }
    // The tally is written once a minute, and at stop; another replica reads it.
    app.stop().await.expect("a clean stop");
    let reader_app = crate::helpers::spawn_replica(&app).await;
    let events = reader_app
        .audit
        .clone()
        .list_audit_events(ListAuditEventsRequest {
            action: "auth.refused".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let mut found: Vec<(String, serde_json::Value)> = events
        .iter()
        .map(|e| {
            (
                e.target_id.clone(),
                serde_json::from_str(&e.details).unwrap(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "reader");
    assert_eq!(found[0].1["permission_denied"], 3);
    assert_eq!(found[0].1["unauthenticated"], 0);
    assert_eq!(found[1].0, "unknown");
    assert_eq!(found[1].1["unauthenticated"], 2);
}

async fn update_org_keeps_the_login_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app
        .create_org_with("Shop", "https://shop.example", "")
        .await;
    // An App Link on links.shop.example: main_website may not move onto its host.
    app.apps
        .clone()
        .create_app_registration(credd::pb::CreateAppRegistrationRequest {
            org_id: org.id.clone(),
            name: "iOS".into(),
            platform: credd::pb::Platform::Ios.into(),
            bundle_id: "com.shop.ios".into(),
            app_link: "https://links.shop.example/app".into(),
            apple_team_id: "ABCDE12345".into(),
            ..Default::default()
        })
        .await
        .expect("register a native app with an App Link");
    let update = |org: Org, paths: &[&str]| UpdateOrgRequest {
        org: Some(org),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let clash = assert_code(
        app.orgs
            .clone()
            .update_org(update(
                Org {
                    id: org.id.clone(),
                    main_website: "https://links.shop.example".into(),
                    ..Default::default()
                },
                &["main_website"],
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        clash.message().contains("links.shop.example"),
        "{}",
        clash.message()
    );
    let unchanged = app.list_orgs().await;
    assert_eq!(unchanged[0].main_website, "https://shop.example");

    // The default login domain is nobody's custom domain.
    assert_invalid(
        app.orgs
            .clone()
            .update_org(update(
                Org {
                    id: org.id.clone(),
                    custom_domain: "login.credd.local".into(),
                    ..Default::default()
                },
                &["custom_domain"],
            ))
            .await,
        "org.custom_domain",
    );
    assert_invalid(
        app.orgs
            .clone()
            .create_org(credd::pb::CreateOrgRequest {
                name: "Other".into(),
                main_website: "https://other.example".into(),
                custom_domain: "LOGIN.credd.local".into(),
            })
            .await,
        "custom_domain",
    );
}

/// Two activations of one org race. `lock_live_org` serialises them, so there is
/// no transaction conflict to answer ABORTED: whichever commits second acts on
/// the state the first left. Activating the newer secret second succeeds (it
/// supersedes the older); activating the older second finds it SUPERSEDED and
/// is told FAILED_PRECONDITION. Either way exactly one secret is ACTIVE: the newer.
async fn concurrent_activations_are_serialised_and_the_newest_wins(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..5 {
        let (older, newer) = (
            app.generate_secret(&org.id).await.secret.unwrap().id,
            app.generate_secret(&org.id).await.secret.unwrap().id,
        );
        let (r_older, r_newer) = tokio::join!(
            app.activate(&org.id, Secret::SecretId(older.clone()), 0),
            app.activate(&org.id, Secret::SecretId(newer.clone()), 0),
        );
        let code =
            |r: &Result<_, tonic::Status>| r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        assert_eq!(
            code(&r_newer),
            Code::Ok,
            "the newer secret's activation always succeeds"
        );
        assert!(
            matches!(code(&r_older), Code::Ok | Code::FailedPrecondition),
            "{:?}",
            code(&r_older)
        );
        *codes.entry(format!("{:?}", code(&r_older))).or_insert(0) += 1;
        let active = list_with(
            &app,
            ListClientSecretsRequest {
                org_id: org.id.clone(),
                states: vec![ClientSecretState::Active as i32],
                ..Default::default()
            },
        )
        .await;
        assert_eq!(active.len(), 1, "{active:?}");
        assert_eq!(active[0].id, newer, "the newer secret is the ACTIVE one");
    }
    eprintln!("the older secret's activation in a race: {codes:?}");
}

both_backends!(
    every_policy_bound_is_refused_naming_its_field,
    imports_follow_the_policy_and_activate_in_one_call,
    pending_secrets_are_capped_superseded_and_expired,
    an_expired_secret_never_verifies_to_the_second_on_any_replica,
    two_replicas_sweeping_write_each_end_once,
    rotate_is_one_transaction,
    lists_filter_by_state_and_expiry_across_orgs,
    refused_calls_leave_one_event_per_caller,
    update_org_keeps_the_login_rules,
    concurrent_activations_are_serialised_and_the_newest_wins,
);

through_pgbouncer!(
    rotate_is_one_transaction: true,
    concurrent_activations_are_serialised_and_the_newest_wins: false,
    two_replicas_sweeping_write_each_end_once: true,
);
