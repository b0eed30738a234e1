//! credd.v1.ClientSecrets end to end: the documents' scenarios on both backends.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use credd::{
    pb::{
        ActivateClientSecretRequest, ClientSecret, ClientSecretState, GenerateClientSecretRequest,
        ImportClientSecretRequest, ListClientSecretsRequest, Org, VerifyClientSecretRequest,
        activate_client_secret_request::Secret,
    },
    service::ManualClock,
};
use tonic::Code;

use crate::helpers::{
    Backend, assert_code, assert_invalid, assert_unique_violation, collect_pages, spawn_app,
    spawn_app_with, spawn_app_with_clock, wait_until, wrong_import_of,
};

const IMPORTED: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA";

fn state_of(list: &[ClientSecret], id: &str) -> ClientSecretState {
    list.iter()
        .find(|s| s.id == id)
        .expect("secret listed")
        .state()
}

async fn a_new_org_has_no_secret_and_verifies_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let view = app.integration(&acme.id).await;
    assert!(view.active_secret.is_none());
    assert_eq!(view.pending_secret_count, 0);
    assert!(app.list_secrets(&acme.id).await.is_empty());
    assert!(!app.verifies(&acme.client_id, IMPORTED).await);
}

async fn the_documents_rotation_scenario(backend: Backend) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut app = spawn_app_with_clock(backend, clock.clone()).await;
    let acme = app.create_org().await;

    // Generate: PENDING, shown once, does not verify.
    let first = app.generate_secret(&acme.id).await;
    let first_meta = first.secret.clone().unwrap();
    assert_eq!(first_meta.state(), ClientSecretState::Pending);
    assert!(first.plaintext.starts_with("credd_cs_"));
    assert_eq!(
        first_meta.hint,
        first.plaintext[first.plaintext.len() - 4..]
    );
    assert!(
        !app.verifies(&acme.client_id, &first.plaintext).await,
        "a pending secret does not verify"
    );

    // Activate now.
    let active = app
        .activate(&acme.id, Secret::SecretId(first_meta.id.clone()), 0)
        .await
        .unwrap();
    assert_eq!(active.state(), ClientSecretState::Active);
    assert!(active.activate_time.is_some());
    assert!(app.verifies(&acme.client_id, &first.plaintext).await);
    let verdict = app
        .secrets
        .verify_client_secret(VerifyClientSecretRequest {
            client_id: acme.client_id.clone(),
            client_secret: first.plaintext.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (verdict.org_id.as_str(), verdict.secret_id.as_str()),
        (acme.id.as_str(), first_meta.id.as_str()),
        "a valid verdict names the org and the secret that verified"
    );

    // A second secret does not verify until activated.
    let second = app.generate_secret(&acme.id).await;
    assert!(app.verifies(&acme.client_id, &first.plaintext).await);
    assert!(!app.verifies(&acme.client_id, &second.plaintext).await);
    let view = app.integration(&acme.id).await;
    assert_eq!(view.active_secret.unwrap().id, first_meta.id);
    assert_eq!(view.pending_secret_count, 1);

    // Activate later, by presenting the generated secret: the first stops at once.
    let activated = app
        .activate(&acme.id, Secret::Plaintext(second.plaintext.clone()), 0)
        .await
        .unwrap();
    assert_eq!(activated.id, second.secret.as_ref().unwrap().id);
    assert!(app.verifies(&acme.client_id, &second.plaintext).await);
    assert!(!app.verifies(&acme.client_id, &first.plaintext).await);
    assert_eq!(
        state_of(&app.list_secrets(&acme.id).await, &first_meta.id),
        ClientSecretState::Superseded
    );

    // Rotate with a 60-second grace: both verify until it ends, to the second.
    let third = app.generate_secret(&acme.id).await;
    app.activate(&acme.id, Secret::Plaintext(third.plaintext.clone()), 60)
        .await
        .unwrap();
    assert!(app.verifies(&acme.client_id, &third.plaintext).await);
    assert!(
        app.verifies(&acme.client_id, &second.plaintext).await,
        "the previous secret verifies during the grace"
    );
    let listed = app.list_secrets(&acme.id).await;
    let retiring = listed
        .iter()
        .find(|s| s.id == second.secret.as_ref().unwrap().id)
        .unwrap();
    assert_eq!(retiring.state(), ClientSecretState::Retiring);
    assert!(retiring.expire_time.is_some());
    let view = app.integration(&acme.id).await;
    assert_eq!(view.retiring_secrets.len(), 1);

    clock.advance(chrono::Duration::seconds(59));
    assert!(
        app.verifies(&acme.client_id, &second.plaintext).await,
        "still inside the grace at 59 s"
    );
    clock.advance(chrono::Duration::seconds(1));
    assert!(
        !app.verifies(&acme.client_id, &second.plaintext).await,
        "refused at 60 s"
    );
    assert!(app.verifies(&acme.client_id, &third.plaintext).await);
    assert_eq!(
        state_of(
            &app.list_secrets(&acme.id).await,
            &second.secret.as_ref().unwrap().id
        ),
        ClientSecretState::Superseded
    );

    // Revoke the active secret: the org has none, nothing verifies.
    let third_id = third.secret.as_ref().unwrap().id.clone();
    let revoked = app.revoke(&acme.id, &third_id.clone()).await.unwrap();
    assert_eq!(revoked.state(), ClientSecretState::Revoked);
    assert!(revoked.revoke_time.is_some());
    assert!(!app.verifies(&acme.client_id, &third.plaintext).await);
    let view = app.integration(&acme.id).await;
    assert!(view.active_secret.is_none());

    // Revoked and superseded secrets cannot come back.
    assert_code(
        app.activate(&acme.id, Secret::SecretId(third_id.clone()), 0)
            .await,
        Code::FailedPrecondition,
    );
    assert_code(
        app.activate(&acme.id, Secret::SecretId(first_meta.id.clone()), 0)
            .await,
        Code::FailedPrecondition,
    );
    assert_code(
        app.revoke(&acme.id, &third_id).await,
        Code::FailedPrecondition,
    );
}

async fn a_grace_period_ends_when_a_newer_secret_is_activated(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let one = app.generate_secret(&acme.id).await;
    let two = app.generate_secret(&acme.id).await;
    let three = app.generate_secret(&acme.id).await;
    app.activate(&acme.id, Secret::Plaintext(one.plaintext.clone()), 0)
        .await
        .unwrap();
    app.activate(&acme.id, Secret::Plaintext(two.plaintext.clone()), 3600)
        .await
        .unwrap();
    assert!(
        app.verifies(&acme.client_id, &one.plaintext).await,
        "one retires for an hour"
    );
    assert!(app.verifies(&acme.client_id, &two.plaintext).await);
    app.activate(&acme.id, Secret::Plaintext(three.plaintext.clone()), 3600)
        .await
        .unwrap();
    // Only the secret that was ACTIVE retires; the earlier RETIRING one is superseded.
    assert!(!app.verifies(&acme.client_id, &one.plaintext).await);
    assert!(app.verifies(&acme.client_id, &two.plaintext).await);
    assert!(app.verifies(&acme.client_id, &three.plaintext).await);
    let four = app.generate_secret(&acme.id).await;
    app.activate(&acme.id, Secret::Plaintext(four.plaintext.clone()), 0)
        .await
        .unwrap();
    assert!(!app.verifies(&acme.client_id, &two.plaintext).await);
    assert!(!app.verifies(&acme.client_id, &three.plaintext).await);
    assert!(app.verifies(&acme.client_id, &four.plaintext).await);
}

async fn activating_is_checked(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let other = app.create_org().await;
    let mine = app.generate_secret(&acme.id).await;
    let theirs = app.generate_secret(&other.id).await;

    // Activate later refuses a plaintext that is no pending secret of this org.
    assert_invalid(
        app.activate(&acme.id, Secret::Plaintext(theirs.plaintext.clone()), 0)
            .await,
        "plaintext",
    );
    assert_invalid(
        app.activate(&acme.id, Secret::Plaintext("nonsense".into()), 0)
            .await,
        "plaintext",
    );
    assert_invalid(
        app.activate(&acme.id, Secret::Plaintext(IMPORTED.into()), 0)
            .await,
        "plaintext",
    );
    let mut flipped = mine.plaintext.clone().into_bytes();
    let last = flipped.len() - 10;
    flipped[last] = if flipped[last] == b'x' { b'y' } else { b'x' };
    assert_invalid(
        app.activate(
            &acme.id,
            Secret::Plaintext(String::from_utf8(flipped).unwrap()),
            0,
        )
        .await,
        "plaintext",
    );
    // By id, another org's secret is not found.
    assert_code(
        app.activate(&acme.id, Secret::SecretId(theirs.secret.unwrap().id), 0)
            .await,
        Code::NotFound,
    );
    assert_invalid(
        app.activate(&acme.id, Secret::SecretId("x".into()), 0)
            .await,
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
    // Past the 30-day most; and a grace far past any Duration is a clear refusal,
    // not a panic.
    let pending = Secret::SecretId(mine.secret.clone().unwrap().id);
    for grace_seconds in [31 * 86_400, i64::MAX] {
        assert_invalid(
            app.activate(&acme.id, pending.clone(), grace_seconds).await,
            "grace_period",
        );
    }

    // Activating the ACTIVE secret again is a no-op that answers it.
    let id = mine.secret.unwrap().id;
    let first = app
        .activate(&acme.id, Secret::SecretId(id.clone()), 0)
        .await
        .unwrap();
    let again = app
        .activate(&acme.id, Secret::SecretId(id.clone()), 0)
        .await
        .unwrap();
    assert_eq!(first, again);
    let by_plaintext = app
        .activate(&acme.id, Secret::Plaintext(mine.plaintext.clone()), 0)
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
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        app.activate(&ghost.id, Secret::SecretId(id), 0).await,
        Code::NotFound,
    );
    assert_invalid(
        app.secrets
            .generate_client_secret(GenerateClientSecretRequest {
                org_id: acme.id.clone(),
                description: "x".repeat(201),
                ..Default::default()
            })
            .await,
        "description",
    );
}

async fn an_imported_secret_is_pending_until_activated_and_weak_ones_are_refused(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let import = |plaintext: &str| ImportClientSecretRequest {
        org_id: acme.id.clone(),
        plaintext: plaintext.into(),
        description: "from our vault".into(),
        ..Default::default()
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
    assert!(!app.verifies(&acme.client_id, IMPORTED).await);

    app.activate(&acme.id, Secret::Plaintext(IMPORTED.into()), 0)
        .await
        .unwrap();
    assert!(app.verifies(&acme.client_id, IMPORTED).await);
    let mut wrong = IMPORTED.to_owned();
    wrong.replace_range(3..4, "Z");
    assert!(!app.verifies(&acme.client_id, &wrong).await);

    // Rotating from an imported to a generated secret with grace keeps both valid.
    let generated = app.generate_secret(&acme.id).await;
    app.activate(
        &acme.id,
        Secret::Plaintext(generated.plaintext.clone()),
        600,
    )
    .await
    .unwrap();
    assert!(app.verifies(&acme.client_id, IMPORTED).await);
    assert!(app.verifies(&acme.client_id, &generated.plaintext).await);

    for weak in [
        "",
        "too-short-0123456789",
        "has spaces in it but is long enough to pass",
        &"ab".repeat(20),
        &generated.plaintext,
        // Enough distinct characters, but predictable: a repeated block, keyboard
        // walks, a sequence, a common word.
        "Password1Password1Password1Pa",
        "qwertyuiopasdfghjklzxcvbnm1234567890",
        "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "aB3dE6gH9aB3dE6gH9aB3dE6gH9aB3dE6gH9",
    ] {
        assert_invalid(
            app.secrets.import_client_secret(import(weak)).await,
            "plaintext",
        );
    }
}

async fn every_wrong_secret_answers_the_same_false(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let other = app.create_org().await;
    let (_, secret) = app.generate_and_activate(&acme.id).await;
    let (_, foreign) = app.generate_and_activate(&other.id).await;

    let mut flipped = secret.clone().into_bytes();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("truncated", secret[..secret.len() - 1].to_owned()),
        ("flipped", flipped),
        ("other org's", foreign),
        ("empty", String::new()),
        ("wrong prefix", secret.replacen("credd_cs_", "credd_cx_", 1)),
        ("import-shaped", IMPORTED.to_owned()),
        ("garbage", "not a secret at all".to_owned()),
        // Just under the 64 KiB request limit, so it reaches the handler.
        ("60 KiB long", "a".repeat(60 << 10)),
    ];
    for (what, candidate) in &cases {
        assert!(
            !app.verifies(&acme.client_id, candidate).await,
            "{what} must not verify"
        );
    }
    // Past the request limit there is no verdict at all: the message is refused as
    // too large before the handler, never answered as valid.
    assert_code(
        app.verify(&acme.client_id, &"a".repeat(1 << 20)).await,
        Code::OutOfRange,
    );
    // A right secret under the wrong or an unknown client ID.
    assert!(!app.verify(&other.client_id, &secret).await.unwrap());
    assert!(!app.verify(&"0".repeat(32), &secret).await.unwrap());
    assert!(!app.verify("", &secret).await.unwrap());
    // And the right pair still verifies.
    assert!(app.verifies(&acme.client_id, &secret).await);
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
    let app = spawn_app_with(backend, |s| s.verify_cache_ttl = Duration::ZERO).await;
    let acme = app.create_org().await;
    let (_, good) = app.generate_and_activate(&acme.id).await;
    let (_, imported) = app.import_and_activate(&acme.id).await;
    let service = app.verifier.clone();
    let hashes = || service.hasher().computations();

    let before = hashes();
    let truncated = &good[..good.len() - 2];
    assert!(!app.verify(&acme.client_id, truncated).await.unwrap());
    let mut flipped = good.clone().into_bytes();
    flipped[30] = if flipped[30] == b'Q' { b'R' } else { b'Q' };
    assert!(
        !app.verify(&acme.client_id, &String::from_utf8(flipped).unwrap())
            .await
            .unwrap()
    );
    assert_eq!(
        hashes(),
        before,
        "a malformed secret is refused without argon2 work"
    );

    // A generated secret is a SHA-256 digest, for a known client and an unknown
    // one alike: no argon2 at all.
    let before = hashes();
    assert!(!app.verify(&acme.client_id, &good).await.unwrap());
    assert!(!app.verify(&"ab".repeat(16), &good).await.unwrap());
    let pending = app.generate_secret(&acme.id).await;
    assert!(
        !app.verify(&acme.client_id, &pending.plaintext)
            .await
            .unwrap()
    );
    assert_eq!(hashes(), before, "generated secrets cost no argon2 work");

    // An imported secret costs one argon2 verification, whether the client is
    // known or not and whether the secret is right or not.
    for (client_id, secret, what) in [
        (
            acme.client_id.as_str(),
            imported.as_str(),
            "the right secret",
        ),
        (
            acme.client_id.as_str(),
            &wrong_import_of(&imported),
            "a wrong one",
        ),
        (&"ab".repeat(16), imported.as_str(), "an unknown client"),
    ] {
        let before = hashes();
        app.verify(client_id, secret).await.unwrap();
        assert_eq!(hashes(), before + 1, "{what} costs one argon2 verification");
    }
}

async fn twenty_concurrent_activations_leave_exactly_one_active(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    // Twenty waiting at once: past the default cap of ten.
    app.set_policy(&acme.id, &["max_pending_secrets"], Default::default())
        .await
        .unwrap();
    let mut generated = Vec::new();
    for _ in 0..20 {
        generated.push(app.generate_secret(&acme.id).await);
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
                matches!(
                    status.code(),
                    Code::Aborted | Code::FailedPrecondition | Code::Unavailable
                ),
                "a clean failure, not {status:?}"
            ),
        }
    }
    assert!(succeeded >= 1);
    let listed = app.list_secrets(&acme.id).await;
    let active: Vec<_> = listed
        .iter()
        .filter(|s| s.state() == ClientSecretState::Active)
        .collect();
    assert_eq!(active.len(), 1, "exactly one ACTIVE secret");
    let superseded = listed
        .iter()
        .filter(|s| s.state() == ClientSecretState::Superseded)
        .count();
    // Each activation supersedes the ACTIVE secret before it and every PENDING
    // one generated before it: of the 20, one is ACTIVE, and every other is
    // SUPERSEDED or still PENDING (generated after the last activation), or was
    // refused.
    assert_eq!(
        superseded
            + listed
                .iter()
                .filter(|s| s.state() == ClientSecretState::Pending)
                .count(),
        19,
        "{listed:?}"
    );
    assert!(
        superseded >= succeeded - 1,
        "every other success was superseded"
    );
    let winner = generated
        .iter()
        .find(|g| g.secret.as_ref().unwrap().id == active[0].id)
        .unwrap();
    assert!(app.verifies(&acme.client_id, &winner.plaintext).await);
}

async fn the_store_refuses_a_second_active_secret_itself(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let one = app.generate_secret(&acme.id).await;
    let two = app.generate_secret(&acme.id).await;
    app.activate(&acme.id, Secret::SecretId(one.secret.unwrap().id), 0)
        .await
        .unwrap();
    let forced = app
        .execute_sql(&format!(
            "UPDATE client_secrets SET state = 'ACTIVE' WHERE id = '{}'",
            two.secret.unwrap().id
        ))
        .await;
    assert_unique_violation(
        forced,
        "the partial unique index refuses a second ACTIVE secret",
    );
    // The refused statement changed nothing: still one ACTIVE secret.
    let active = app
        .list_secrets(&acme.id)
        .await
        .into_iter()
        .filter(|s| s.state() == ClientSecretState::Active)
        .count();
    assert_eq!(active, 1);
}

async fn listing_shows_metadata_newest_first_in_pages(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(app.generate_secret(&acme.id).await.secret.unwrap().id);
    }
    ids.reverse();
    let (seen, pages) = collect_pages(async |page_token| {
        let page = app
            .secrets
            .clone()
            .list_client_secrets(ListClientSecretsRequest {
                org_id: acme.id.clone(),
                page_size: 3,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ids = page.secrets.into_iter().map(|s| s.id).collect();
        (ids, page.next_page_token)
    })
    .await;
    assert_eq!(seen, ids, "newest first, each once");
    assert_eq!(pages, 3);
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
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let (_, good) = app.generate_and_activate(&acme.id).await;
    assert!(app.verifies(&acme.client_id, &good).await);
    app.delete_org(&acme.id).await;
    assert!(!app.verifies(&acme.client_id, &good).await);
}

async fn last_used_time_is_recorded_without_a_write_per_verify(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let (secret, good) = app.generate_and_activate(&acme.id).await;
    let id = secret.id;
    for _ in 0..5 {
        assert!(app.verifies(&acme.client_id, &good).await);
    }
    let last_used = async || {
        app.list_secrets(&acme.id)
            .await
            .into_iter()
            .find(|s| s.id == id)
            .and_then(|s| s.last_used_time)
    };
    wait_until(
        "last_used_time is written",
        Duration::from_secs(10),
        async || last_used().await.is_some(),
    )
    .await;
    let first = last_used().await;
    // More verifies within the minute do not move it (coalesced).
    for _ in 0..3 {
        assert!(app.verifies(&acme.client_id, &good).await);
    }
    // Deliberately elapsed time, not a wait for a condition: a write that was not
    // coalesced would be spawned off the RPC path with nothing to wait on, so the
    // test gives it 200 ms to land before checking that none did.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(last_used().await, first);
}

/// An import-shaped secret ending in `hint` (the part that selects candidates).
fn import_with_hint(hint: &str) -> String {
    use base64::Engine as _;
    let random = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(credd::domain::ids::random_bytes::<27>());
    format!("{random}{hint}")
}

/// Nine imports share a hint. Activating by plaintext tries at most the two
/// candidates a verification would (the ACTIVE one and the newest PENDING one):
/// a wrong plaintext with that hint costs at most two argon2 jobs, not nine.
async fn activation_by_plaintext_hashes_at_most_two_candidates(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let mut imported = Vec::new();
    for _ in 0..9 {
        let plaintext = import_with_hint("QxZ7");
        app.secrets
            .clone()
            .import_client_secret(credd::pb::ImportClientSecretRequest {
                org_id: org.id.clone(),
                plaintext: plaintext.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        imported.push(plaintext);
    }
    let hashes = app.verifier.hasher().computations();
    let status = app
        .activate(&org.id, Secret::Plaintext(import_with_hint("QxZ7")), 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        app.verifier.hasher().computations() - hashes <= 2,
        "{} argon2 jobs for one activation",
        app.verifier.hasher().computations() - hashes
    );
    let newest = imported.last().unwrap().clone();
    let active = app
        .activate(&org.id, Secret::Plaintext(newest.clone()), 0)
        .await
        .unwrap();
    assert_eq!(active.state(), ClientSecretState::Active);
    assert!(app.verify(&org.client_id, &newest).await.unwrap());
}

/// An import refused by the pending cap is refused before its hash is paid for.
async fn an_import_past_the_pending_cap_costs_no_argon2(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let import = |plaintext: String| {
        let mut secrets = app.secrets.clone();
        let org_id = org.id.clone();
        async move {
            secrets
                .import_client_secret(credd::pb::ImportClientSecretRequest {
                    org_id,
                    plaintext,
                    ..Default::default()
                })
                .await
        }
    };
    for _ in 0..10 {
        import(import_with_hint("Cap1")).await.unwrap();
    }
    let hashes = app.verifier.hasher().computations();
    let status = import(import_with_hint("Cap2")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        app.verifier.hasher().computations(),
        hashes,
        "no argon2 for a refusal"
    );
}

both_backends!(
    activation_by_plaintext_hashes_at_most_two_candidates,
    an_import_past_the_pending_cap_costs_no_argon2,
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

through_pgbouncer!(
    the_documents_rotation_scenario: true,
    twenty_concurrent_activations_leave_exactly_one_active: false,
    listing_shows_metadata_newest_first_in_pages: false,
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
    let app = spawn_app_with(backend, |s| s.stale_if_error = Duration::from_secs(3)).await;
    let acme = app.create_org().await;
    let (_, good) = app.generate_and_activate(&acme.id).await;
    assert!(app.verifies(&acme.client_id, &good).await);
    let unknown =
        secrecy::ExposeSecret::expose_secret(&credd::domain::secret::generate().1).to_owned();

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

    // While the stale window lasts, the right secret keeps verifying from memory
    // and an unknown one (which may have been made meanwhile) is UNAVAILABLE,
    // never `false`; past the window, nothing answers from memory. At no point is
    // the right secret `false`.
    wait_until(
        "the outage is noticed, then the stale window passes (UNAVAILABLE)",
        Duration::from_secs(10),
        async || match app.verify(&acme.client_id, &good).await {
            Ok(valid) => {
                assert!(valid, "never a false for the right secret");
                match app.verify(&acme.client_id, &unknown).await {
                    Ok(valid) => assert!(!valid, "an unknown secret never verifies"),
                    Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
                }
                false
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                true
            }
        },
    )
    .await;
    for candidate in [good.clone(), unknown.clone(), IMPORTED.to_owned()] {
        let outcome = app.verify(&acme.client_id, &candidate).await;
        let status = outcome.expect_err("an unreachable store is never a verdict");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // Malformed input is refused from its text alone, store or not.
    assert!(!app.verify(&acme.client_id, "garbage").await.unwrap());

    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    admin.close().await.ok();
    assert!(
        app.verdict_once_past(
            Code::Unavailable,
            Duration::from_secs(20),
            &acme.client_id,
            &good
        )
        .await,
        "the right secret verifies again once the store is back"
    );
}
