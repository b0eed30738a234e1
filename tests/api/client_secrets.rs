//! credd.v1.ClientSecrets end to end: the documents' scenarios on both backends.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use credd::{
    pb::{
        ActivateClientSecretRequest, ClientSecret, ClientSecretState, CreateOrgRequest,
        DeleteOrgRequest, GenerateClientSecretRequest, GenerateClientSecretResponse,
        GetIntegrationRequest, ImportClientSecretRequest, ListClientSecretsRequest, Org,
        RevokeClientSecretRequest, VerifyClientSecretRequest, VerifyClientSecretResponse,
        activate_client_secret_request::Secret,
    },
    service::ManualClock,
};
use tonic::Code;

use crate::helpers::{
    Backend, TestApp, assert_code, assert_invalid, spawn_app, spawn_app_with_clock,
};

const IMPORTED: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA";

async fn org(app: &mut TestApp, name: &str) -> Org {
    app.orgs
        .create_org(CreateOrgRequest {
            name: name.into(),
            main_website: "https://acme.example".into(),
            custom_domain: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn generate(app: &mut TestApp, org: &Org) -> GenerateClientSecretResponse {
    app.secrets
        .generate_client_secret(GenerateClientSecretRequest {
            org_id: org.id.clone(),
            description: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// A generated secret, activated at once.
async fn generate_active(app: &mut TestApp, org: &Org) -> GenerateClientSecretResponse {
    let generated = generate(app, org).await;
    let id = generated.secret.clone().unwrap().id;
    activate(app, org, Secret::SecretId(id), 0).await.unwrap();
    generated
}

async fn activate(
    app: &mut TestApp,
    org: &Org,
    secret: Secret,
    grace_seconds: i64,
) -> Result<ClientSecret, tonic::Status> {
    app.secrets
        .activate_client_secret(ActivateClientSecretRequest {
            org_id: org.id.clone(),
            secret: Some(secret),
            grace_period: (grace_seconds > 0).then_some(prost_types::Duration {
                seconds: grace_seconds,
                nanos: 0,
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn verify_raw(
    app: &mut TestApp,
    client_id: &str,
    secret: &str,
) -> Result<VerifyClientSecretResponse, tonic::Status> {
    app.secrets
        .verify_client_secret(VerifyClientSecretRequest {
            client_id: client_id.into(),
            client_secret: secret.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn verifies(app: &mut TestApp, org: &Org, secret: &str) -> bool {
    let answer = verify_raw(app, &org.client_id, secret)
        .await
        .expect("verify answers");
    if answer.valid {
        assert_eq!(answer.org_id, org.id);
        assert!(!answer.secret_id.is_empty());
    } else {
        assert!(
            answer.org_id.is_empty() && answer.secret_id.is_empty(),
            "a refusal carries no ids: {answer:?}"
        );
    }
    answer.valid
}

async fn secrets(app: &mut TestApp, org: &Org) -> Vec<ClientSecret> {
    app.secrets
        .list_client_secrets(ListClientSecretsRequest {
            org_id: org.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secrets
}

fn state_of(list: &[ClientSecret], id: &str) -> ClientSecretState {
    list.iter()
        .find(|s| s.id == id)
        .expect("secret listed")
        .state()
}

async fn a_new_org_has_no_secret_and_verifies_nothing(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let view = app
        .orgs
        .get_integration(GetIntegrationRequest {
            org_id: acme.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(view.active_secret.is_none());
    assert_eq!(view.pending_secret_count, 0);
    assert!(secrets(&mut app, &acme).await.is_empty());
    assert!(!verifies(&mut app, &acme, IMPORTED).await);
}

async fn the_documents_rotation_scenario(backend: Backend) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut app = spawn_app_with_clock(backend, clock.clone()).await;
    let acme = org(&mut app, "Acme").await;

    // Generate: PENDING, shown once, does not verify.
    let first = generate(&mut app, &acme).await;
    let first_meta = first.secret.clone().unwrap();
    assert_eq!(first_meta.state(), ClientSecretState::Pending);
    assert!(first.plaintext.starts_with("credd_cs_"));
    assert_eq!(
        first_meta.hint,
        first.plaintext[first.plaintext.len() - 4..]
    );
    assert!(
        !verifies(&mut app, &acme, &first.plaintext).await,
        "a pending secret does not verify"
    );

    // Activate now.
    let active = activate(&mut app, &acme, Secret::SecretId(first_meta.id.clone()), 0)
        .await
        .unwrap();
    assert_eq!(active.state(), ClientSecretState::Active);
    assert!(active.activate_time.is_some());
    assert!(verifies(&mut app, &acme, &first.plaintext).await);

    // A second secret does not verify until activated.
    let second = generate(&mut app, &acme).await;
    assert!(verifies(&mut app, &acme, &first.plaintext).await);
    assert!(!verifies(&mut app, &acme, &second.plaintext).await);
    let view = app
        .orgs
        .get_integration(GetIntegrationRequest {
            org_id: acme.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.active_secret.unwrap().id, first_meta.id);
    assert_eq!(view.pending_secret_count, 1);

    // Activate later, by presenting the generated secret: the first stops at once.
    let activated = activate(
        &mut app,
        &acme,
        Secret::Plaintext(second.plaintext.clone()),
        0,
    )
    .await
    .unwrap();
    assert_eq!(activated.id, second.secret.as_ref().unwrap().id);
    assert!(verifies(&mut app, &acme, &second.plaintext).await);
    assert!(!verifies(&mut app, &acme, &first.plaintext).await);
    assert_eq!(
        state_of(&secrets(&mut app, &acme).await, &first_meta.id),
        ClientSecretState::Superseded
    );

    // Rotate with a 60-second grace: both verify until it ends, to the second.
    let third = generate(&mut app, &acme).await;
    activate(
        &mut app,
        &acme,
        Secret::Plaintext(third.plaintext.clone()),
        60,
    )
    .await
    .unwrap();
    assert!(verifies(&mut app, &acme, &third.plaintext).await);
    assert!(
        verifies(&mut app, &acme, &second.plaintext).await,
        "the previous secret verifies during the grace"
    );
    let listed = secrets(&mut app, &acme).await;
    let retiring = listed
        .iter()
        .find(|s| s.id == second.secret.as_ref().unwrap().id)
        .unwrap();
    assert_eq!(retiring.state(), ClientSecretState::Retiring);
    assert!(retiring.expire_time.is_some());
    let view = app
        .orgs
        .get_integration(GetIntegrationRequest {
            org_id: acme.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.retiring_secrets.len(), 1);

    clock.advance(chrono::Duration::seconds(59));
    assert!(
        verifies(&mut app, &acme, &second.plaintext).await,
        "still inside the grace at 59 s"
    );
    clock.advance(chrono::Duration::seconds(1));
    assert!(
        !verifies(&mut app, &acme, &second.plaintext).await,
        "refused at 60 s"
    );
    assert!(verifies(&mut app, &acme, &third.plaintext).await);
    assert_eq!(
        state_of(
            &secrets(&mut app, &acme).await,
            &second.secret.as_ref().unwrap().id
        ),
        ClientSecretState::Superseded
    );

    // Revoke the active secret: the org has none, nothing verifies.
    let third_id = third.secret.as_ref().unwrap().id.clone();
    let revoked = app
        .secrets
        .revoke_client_secret(RevokeClientSecretRequest {
            org_id: acme.id.clone(),
            secret_id: third_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state(), ClientSecretState::Revoked);
    assert!(revoked.revoke_time.is_some());
    assert!(!verifies(&mut app, &acme, &third.plaintext).await);
    let view = app
        .orgs
        .get_integration(GetIntegrationRequest {
            org_id: acme.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(view.active_secret.is_none());

    // Revoked and superseded secrets cannot come back.
    assert_code(
        activate(&mut app, &acme, Secret::SecretId(third_id.clone()), 0).await,
        Code::FailedPrecondition,
    );
    assert_code(
        activate(&mut app, &acme, Secret::SecretId(first_meta.id.clone()), 0).await,
        Code::FailedPrecondition,
    );
    assert_code(
        app.secrets
            .revoke_client_secret(RevokeClientSecretRequest {
                org_id: acme.id.clone(),
                secret_id: third_id,
            })
            .await,
        Code::FailedPrecondition,
    );
}

async fn a_grace_period_ends_when_a_newer_secret_is_activated(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let one = generate(&mut app, &acme).await;
    let two = generate(&mut app, &acme).await;
    let three = generate(&mut app, &acme).await;
    activate(&mut app, &acme, Secret::Plaintext(one.plaintext.clone()), 0)
        .await
        .unwrap();
    activate(
        &mut app,
        &acme,
        Secret::Plaintext(two.plaintext.clone()),
        3600,
    )
    .await
    .unwrap();
    assert!(
        verifies(&mut app, &acme, &one.plaintext).await,
        "one retires for an hour"
    );
    assert!(verifies(&mut app, &acme, &two.plaintext).await);
    activate(
        &mut app,
        &acme,
        Secret::Plaintext(three.plaintext.clone()),
        3600,
    )
    .await
    .unwrap();
    // Only the secret that was ACTIVE retires; the earlier RETIRING one is superseded.
    assert!(!verifies(&mut app, &acme, &one.plaintext).await);
    assert!(verifies(&mut app, &acme, &two.plaintext).await);
    assert!(verifies(&mut app, &acme, &three.plaintext).await);
    let four = generate(&mut app, &acme).await;
    activate(
        &mut app,
        &acme,
        Secret::Plaintext(four.plaintext.clone()),
        0,
    )
    .await
    .unwrap();
    assert!(!verifies(&mut app, &acme, &two.plaintext).await);
    assert!(!verifies(&mut app, &acme, &three.plaintext).await);
    assert!(verifies(&mut app, &acme, &four.plaintext).await);
}

async fn activating_is_checked(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let other = org(&mut app, "Other").await;
    let mine = generate(&mut app, &acme).await;
    let theirs = generate(&mut app, &other).await;

    // Activate later refuses a plaintext that is no pending secret of this org.
    assert_invalid(
        activate(
            &mut app,
            &acme,
            Secret::Plaintext(theirs.plaintext.clone()),
            0,
        )
        .await,
        "plaintext",
    );
    assert_invalid(
        activate(&mut app, &acme, Secret::Plaintext("nonsense".into()), 0).await,
        "plaintext",
    );
    assert_invalid(
        activate(&mut app, &acme, Secret::Plaintext(IMPORTED.into()), 0).await,
        "plaintext",
    );
    let mut flipped = mine.plaintext.clone().into_bytes();
    let last = flipped.len() - 10;
    flipped[last] = if flipped[last] == b'x' { b'y' } else { b'x' };
    assert_invalid(
        activate(
            &mut app,
            &acme,
            Secret::Plaintext(String::from_utf8(flipped).unwrap()),
            0,
        )
        .await,
        "plaintext",
    );
    // By id, another org's secret is not found.
    assert_code(
        activate(
            &mut app,
            &acme,
            Secret::SecretId(theirs.secret.unwrap().id),
            0,
        )
        .await,
        Code::NotFound,
    );
    assert_invalid(
        activate(&mut app, &acme, Secret::SecretId("x".into()), 0).await,
        "secret_id",
    );
    assert_invalid(
        app.secrets
            .activate_client_secret(ActivateClientSecretRequest {
                org_id: acme.id.clone(),
                secret: None,
                grace_period: None,
            })
            .await,
        "secret",
    );
    assert_invalid(
        app.secrets
            .activate_client_secret(ActivateClientSecretRequest {
                org_id: acme.id.clone(),
                secret: Some(Secret::SecretId(mine.secret.clone().unwrap().id)),
                grace_period: Some(prost_types::Duration {
                    seconds: 31 * 86_400,
                    nanos: 0,
                }),
            })
            .await,
        "grace_period",
    );
    // A grace far past any Duration is a clear refusal, not a panic.
    assert_invalid(
        app.secrets
            .activate_client_secret(ActivateClientSecretRequest {
                org_id: acme.id.clone(),
                secret: Some(Secret::SecretId(mine.secret.clone().unwrap().id)),
                grace_period: Some(prost_types::Duration {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
            })
            .await,
        "grace_period",
    );

    // Activating the ACTIVE secret again is a no-op that answers it.
    let id = mine.secret.unwrap().id;
    let first = activate(&mut app, &acme, Secret::SecretId(id.clone()), 0)
        .await
        .unwrap();
    let again = activate(&mut app, &acme, Secret::SecretId(id.clone()), 0)
        .await
        .unwrap();
    assert_eq!(first, again);
    let by_plaintext = activate(
        &mut app,
        &acme,
        Secret::Plaintext(mine.plaintext.clone()),
        0,
    )
    .await
    .unwrap();
    assert_eq!(by_plaintext, first);

    // Unknown org.
    let ghost = Org {
        id: uuid::Uuid::now_v7().to_string(),
        ..acme.clone()
    };
    assert_code(
        app.secrets
            .generate_client_secret(GenerateClientSecretRequest {
                org_id: ghost.id.clone(),
                description: String::new(),
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        activate(&mut app, &ghost, Secret::SecretId(id), 0).await,
        Code::NotFound,
    );
    assert_invalid(
        app.secrets
            .generate_client_secret(GenerateClientSecretRequest {
                org_id: acme.id.clone(),
                description: "x".repeat(201),
            })
            .await,
        "description",
    );
}

async fn an_imported_secret_is_pending_until_activated_and_weak_ones_are_refused(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let import = |plaintext: &str| ImportClientSecretRequest {
        org_id: acme.id.clone(),
        plaintext: plaintext.into(),
        description: "from our vault".into(),
    };
    let imported = app
        .secrets
        .import_client_secret(import(IMPORTED))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.state(), ClientSecretState::Pending);
    assert!(imported.imported);
    assert_eq!(imported.hint, &IMPORTED[IMPORTED.len() - 4..]);
    assert!(!verifies(&mut app, &acme, IMPORTED).await);

    activate(&mut app, &acme, Secret::Plaintext(IMPORTED.into()), 0)
        .await
        .unwrap();
    assert!(verifies(&mut app, &acme, IMPORTED).await);
    let mut wrong = IMPORTED.to_owned();
    wrong.replace_range(3..4, "Z");
    assert!(!verifies(&mut app, &acme, &wrong).await);

    // Rotating from an imported to a generated secret with grace keeps both valid.
    let generated = generate(&mut app, &acme).await;
    activate(
        &mut app,
        &acme,
        Secret::Plaintext(generated.plaintext.clone()),
        600,
    )
    .await
    .unwrap();
    assert!(verifies(&mut app, &acme, IMPORTED).await);
    assert!(verifies(&mut app, &acme, &generated.plaintext).await);

    for weak in [
        "",
        "too-short-0123456789",
        "has spaces in it but is long enough to pass",
        &"ab".repeat(20),
        &generated.plaintext,
    ] {
        assert_invalid(
            app.secrets.import_client_secret(import(weak)).await,
            "plaintext",
        );
    }
}

async fn every_wrong_secret_answers_the_same_false(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let other = org(&mut app, "Other").await;
    let good = generate_active(&mut app, &acme).await;
    let foreign = generate_active(&mut app, &other).await;

    let secret = good.plaintext.clone();
    let mut flipped = secret.clone().into_bytes();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let one_mib = "a".repeat(1 << 20);
    let cases: Vec<(&str, String)> = vec![
        ("truncated", secret[..secret.len() - 1].to_owned()),
        ("flipped", flipped),
        ("other org's", foreign.plaintext.clone()),
        ("empty", String::new()),
        ("wrong prefix", secret.replacen("credd_cs_", "credd_cx_", 1)),
        ("import-shaped", IMPORTED.to_owned()),
        ("garbage", "not a secret at all".to_owned()),
    ];
    for (what, candidate) in &cases {
        assert!(
            !verifies(&mut app, &acme, candidate).await,
            "{what} must not verify"
        );
    }
    // 1 MiB: refused before the handler (message too large) or false, never valid.
    match verify_raw(&mut app, &acme.client_id, &one_mib).await {
        Ok(answer) => assert!(!answer.valid),
        Err(status) => assert_ne!(status.code(), Code::Ok),
    }
    // A right secret under the wrong or an unknown client ID.
    assert!(
        !verify_raw(&mut app, &other.client_id, &secret)
            .await
            .unwrap()
            .valid
    );
    assert!(
        !verify_raw(&mut app, &"0".repeat(32), &secret)
            .await
            .unwrap()
            .valid
    );
    assert!(!verify_raw(&mut app, "", &secret).await.unwrap().valid);
    // And the right pair still verifies.
    assert!(verifies(&mut app, &acme, &secret).await);
    let refused = app.verifier.counters().refused();
    assert!(
        refused.get("bad_checksum").copied().unwrap_or(0) >= 1,
        "{refused:?}"
    );
    assert!(
        refused.get("empty").copied().unwrap_or(0) >= 1,
        "{refused:?}"
    );
}

async fn malformed_secrets_cost_no_hash_and_unknown_clients_cost_one(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let good = generate_active(&mut app, &acme).await;
    let service = app.verifier.clone();
    let hashes = || service.hasher().computations();

    let before = hashes();
    let truncated = &good.plaintext[..good.plaintext.len() - 2];
    assert!(
        !verify_raw(&mut app, &acme.client_id, truncated)
            .await
            .unwrap()
            .valid
    );
    let mut flipped = good.plaintext.clone().into_bytes();
    flipped[30] = if flipped[30] == b'Q' { b'R' } else { b'Q' };
    assert!(
        !verify_raw(
            &mut app,
            &acme.client_id,
            &String::from_utf8(flipped).unwrap()
        )
        .await
        .unwrap()
        .valid
    );
    assert_eq!(
        hashes(),
        before,
        "a malformed secret is refused without argon2 work"
    );

    let before = hashes();
    assert!(
        verify_raw(&mut app, &acme.client_id, &good.plaintext)
            .await
            .unwrap()
            .valid
    );
    assert_eq!(
        hashes(),
        before + 1,
        "a known client costs one argon2 verification"
    );
    let before = hashes();
    assert!(
        !verify_raw(&mut app, &"ab".repeat(16), &good.plaintext)
            .await
            .unwrap()
            .valid
    );
    assert_eq!(
        hashes(),
        before + 1,
        "an unknown client costs the same one verification"
    );
    let pending = generate(&mut app, &acme).await;
    let before = hashes();
    assert!(
        !verify_raw(&mut app, &acme.client_id, &pending.plaintext)
            .await
            .unwrap()
            .valid
    );
    assert_eq!(
        hashes(),
        before + 1,
        "a pending secret costs the same one verification"
    );
}

async fn twenty_concurrent_activations_leave_exactly_one_active(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let mut generated = Vec::new();
    for _ in 0..20 {
        generated.push(generate(&mut app, &acme).await);
    }
    let calls = generated.iter().map(|g| {
        let mut client = app.secrets.clone();
        let request = ActivateClientSecretRequest {
            org_id: acme.id.clone(),
            secret: Some(Secret::SecretId(g.secret.as_ref().unwrap().id.clone())),
            grace_period: None,
        };
        tokio::spawn(async move { client.activate_client_secret(request).await })
    });
    let outcomes = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("no deadlock: every activation answers");
    let mut succeeded = 0;
    for outcome in outcomes {
        match outcome.unwrap() {
            Ok(_) => succeeded += 1,
            Err(status) => assert!(
                matches!(status.code(), Code::FailedPrecondition | Code::Unavailable),
                "a clean failure, not {status:?}"
            ),
        }
    }
    assert!(succeeded >= 1);
    let listed = secrets(&mut app, &acme).await;
    let active: Vec<_> = listed
        .iter()
        .filter(|s| s.state() == ClientSecretState::Active)
        .collect();
    assert_eq!(active.len(), 1, "exactly one ACTIVE secret");
    let superseded = listed
        .iter()
        .filter(|s| s.state() == ClientSecretState::Superseded)
        .count();
    assert_eq!(
        superseded,
        succeeded - 1,
        "every other success was superseded"
    );
    let winner = generated
        .iter()
        .find(|g| g.secret.as_ref().unwrap().id == active[0].id)
        .unwrap();
    assert!(verifies(&mut app, &acme, &winner.plaintext).await);
}

async fn the_store_refuses_a_second_active_secret_itself(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let one = generate(&mut app, &acme).await;
    let two = generate(&mut app, &acme).await;
    activate(&mut app, &acme, Secret::SecretId(one.secret.unwrap().id), 0)
        .await
        .unwrap();
    use sea_orm::ConnectionTrait as _;
    let db = sea_orm::Database::connect(app.database_url.as_str())
        .await
        .unwrap();
    let forced = db
        .execute_unprepared(&format!(
            "UPDATE client_secrets SET state = 'ACTIVE' WHERE id = '{}'",
            two.secret.unwrap().id
        ))
        .await;
    assert!(
        forced.is_err(),
        "the partial unique index refuses a second ACTIVE secret"
    );
    db.close().await.ok();
}

async fn listing_shows_metadata_newest_first_in_pages(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(generate(&mut app, &acme).await.secret.unwrap().id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .secrets
            .list_client_secrets(ListClientSecretsRequest {
                org_id: acme.id.clone(),
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.secrets.iter().map(|s| s.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "newest first, each once");
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_code(
        app.secrets
            .list_client_secrets(ListClientSecretsRequest {
                org_id: unknown,
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
}

async fn deleting_an_org_stops_its_secrets_at_once(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let good = generate_active(&mut app, &acme).await;
    assert!(verifies(&mut app, &acme, &good.plaintext).await);
    app.orgs
        .delete_org(DeleteOrgRequest {
            id: acme.id.clone(),
        })
        .await
        .unwrap();
    assert!(!verifies(&mut app, &acme, &good.plaintext).await);
}

async fn last_used_time_is_recorded_without_a_write_per_verify(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let good = generate(&mut app, &acme).await;
    let id = good.secret.unwrap().id;
    activate(&mut app, &acme, Secret::SecretId(id.clone()), 0)
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(verifies(&mut app, &acme, &good.plaintext).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        let listed = secrets(&mut app, &acme).await;
        if let Some(time) = listed
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.last_used_time)
        {
            break time;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_time was never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // More verifies within the minute do not move it (coalesced).
    for _ in 0..3 {
        assert!(verifies(&mut app, &acme, &good.plaintext).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listed = secrets(&mut app, &acme).await;
    assert_eq!(
        listed.iter().find(|s| s.id == id).unwrap().last_used_time,
        Some(first)
    );
}

both_backends!(
    a_new_org_has_no_secret_and_verifies_nothing,
    the_documents_rotation_scenario,
    a_grace_period_ends_when_a_newer_secret_is_activated,
    activating_is_checked,
    an_imported_secret_is_pending_until_activated_and_weak_ones_are_refused,
    every_wrong_secret_answers_the_same_false,
    malformed_secrets_cost_no_hash_and_unknown_clients_cost_one,
    twenty_concurrent_activations_leave_exactly_one_active,
    the_store_refuses_a_second_active_secret_itself,
    listing_shows_metadata_newest_first_in_pages,
    deleting_an_org_stops_its_secrets_at_once,
    last_used_time_is_recorded_without_a_write_per_verify,
);

/// PostgreSQL only: the test cuts the database off from credd (no new
/// connections, existing ones terminated), then lets it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_answers_unavailable_never_a_verdict() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("CREDD_TEST_DATABASE_URL is not set: PostgreSQL outage test skipped");
        return;
    };
    let Backend::Postgres(admin_url) = backend.clone() else {
        unreachable!()
    };
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app, "Acme").await;
    let good = generate_active(&mut app, &acme).await;
    assert!(verifies(&mut app, &acme, &good.plaintext).await);

    use sea_orm::ConnectionTrait as _;
    let name = url::Url::parse(&app.database_url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let admin = sea_orm::Database::connect(admin_url.as_str())
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
        ))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();

    // The right secret's verdict was cached; credd forgets the cache as soon as it
    // notices the outage (its notification connection drops). Until then it may
    // answer the cached `true`, never `false`.
    let noticed = std::time::Instant::now();
    loop {
        match verify_raw(&mut app, &acme.client_id, &good.plaintext).await {
            Ok(answer) => assert!(answer.valid, "never a false for the right secret"),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                break;
            }
        }
        assert!(
            noticed.elapsed() < Duration::from_secs(5),
            "the outage was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for candidate in [good.plaintext.clone(), IMPORTED.to_owned()] {
        let outcome = verify_raw(&mut app, &acme.client_id, &candidate).await;
        let status = outcome.expect_err("an unreachable store is never a verdict");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // Malformed input is refused from its text alone, store or not.
    assert!(
        !verify_raw(&mut app, &acme.client_id, "garbage")
            .await
            .unwrap()
            .valid
    );

    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    admin.close().await.ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match verify_raw(&mut app, &acme.client_id, &good.plaintext).await {
            Ok(answer) => {
                assert!(
                    answer.valid,
                    "the right secret verifies again once the store is back"
                );
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "credd did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
