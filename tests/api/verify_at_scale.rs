//! Verify at scale, for correctness: the verdict cache, its invalidation in this
//! and other processes, the bounded argon2 queue and the per-client throttle —
//! all about argon2-stored (imported) secrets — and the directory's answers for
//! generated ones.

use std::time::{Duration, Instant};

use credd::pb::{
    ClientSecret, Org, VerifyClientSecretRequest, activate_client_secret_request::Secret,
};
use tonic::Code;

use crate::helpers::{
    Backend, TestApp, assert_code, spawn_app, spawn_app_with, spawn_replica, wait_until,
    wrong_import_of, wrong_version_of,
};

/// A generated secret of `org`, still PENDING: its id and plaintext.
async fn generate(app: &TestApp, org: &Org) -> (String, String) {
    let generated = app.generate_secret(&org.id).await;
    (generated.secret.unwrap().id, generated.plaintext)
}

async fn a_second_verify_is_a_cache_hit_with_no_argon2_work(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let (_, secret) = app.import_and_activate(&acme.id).await;
    // Exact counts: no background invalidation of the writes above may land
    // between the verifications below.
    app.wait_until_changes_are_taken_in().await;
    let hashes = app.verifier.hasher().computations();
    assert!(app.verify(&acme.client_id, &secret).await.unwrap());
    assert_eq!(
        app.verifier.hasher().computations(),
        hashes + 1,
        "the first verify is cold"
    );
    for _ in 0..5 {
        assert!(app.verify(&acme.client_id, &secret).await.unwrap());
    }
    assert_eq!(
        app.verifier.hasher().computations(),
        hashes + 1,
        "the next five are cache hits"
    );
    assert_eq!(app.verifier.cache().len(), 1);
    // Failures are never cached: each wrong secret costs its hash again.
    let wrong = wrong_import_of(&secret);
    for _ in 0..2 {
        assert!(!app.verify(&acme.client_id, &wrong).await.unwrap());
    }
    assert_eq!(app.verifier.hasher().computations(), hashes + 3);
}

async fn a_burst_of_identical_cold_verifications_costs_one_hash(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.argon2_m_kib = 4096).await;
    let acme = app.create_org().await;
    let (_, secret) = app.import_and_activate(&acme.id).await;
    // A background invalidation during the burst would let a second leader hash.
    app.wait_until_changes_are_taken_in().await;
    let hashes = app.verifier.hasher().computations();
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let mut client = app.secrets.clone();
            let request = VerifyClientSecretRequest {
                client_id: acme.client_id.clone(),
                client_secret: secret.clone(),
            };
            tokio::spawn(async move { client.verify_client_secret(request).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().unwrap().into_inner().valid);
    }
    assert_eq!(
        app.verifier.hasher().computations(),
        hashes + 1,
        "one leader hashed, the rest waited for it"
    );
}

async fn cached_verdicts_go_at_once_on_revoke_activate_and_delete(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let (_, first) = app.generate_and_activate(&acme.id).await;
    assert!(app.verifies(&acme.client_id, &first).await);
    // A rotation without grace: the cached first secret stops at once.
    let (second_meta, second) = app.generate_and_activate(&acme.id).await;
    assert!(!app.verifies(&acme.client_id, &first).await);
    assert!(app.verifies(&acme.client_id, &second).await);
    // Revoke: gone at once.
    app.revoke(&acme.id, &second_meta.id).await.unwrap();
    assert!(!app.verifies(&acme.client_id, &second).await);
    // Delete the org: gone at once.
    let (_, third) = app.generate_and_activate(&acme.id).await;
    assert!(app.verifies(&acme.client_id, &third).await);
    app.delete_org(&acme.id).await;
    assert!(!app.verifies(&acme.client_id, &third).await);
}

async fn another_process_sees_an_activation_within_a_second(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_replica(&a).await;
    let acme = a.create_org().await;
    let (_, old) = a.generate_and_activate(&acme.id).await;
    // B verifies, and so caches, the old secret.
    assert!(b.verifies(&acme.client_id, &old).await);
    assert!(b.verifies(&acme.client_id, &old).await);
    let mut old = old;
    for round in 0..3 {
        let (_, new) = a.generate_and_activate(&acme.id).await;
        wait_until(
            &format!("round {round}: B refuses the old secret within 1 s"),
            Duration::from_secs(1),
            async || !b.verifies(&acme.client_id, &old).await,
        )
        .await;
        assert!(b.verifies(&acme.client_id, &new).await);
        assert!(
            b.verifies(&acme.client_id, &new).await,
            "and B caches the new one"
        );
        // The next round retires this one.
        old = new;
    }
}

/// An org of `a`'s with an active secret that replica `b` has verified and holds
/// in its cache, so that a later refusal on `b` comes from invalidation and not
/// from a cold lookup.
async fn secret_cached_on(b: &TestApp, a: &TestApp) -> (Org, ClientSecret, String) {
    let acme = a.create_org().await;
    let (secret, plaintext) = a.import_and_activate(&acme.id).await;
    b.wait_until_changes_are_taken_in().await;
    assert!(b.verifies(&acme.client_id, &plaintext).await);
    let hashes = b.verifier.hasher().computations();
    assert!(b.verifies(&acme.client_id, &plaintext).await);
    assert_eq!(
        b.verifier.hasher().computations(),
        hashes,
        "B answers from its cache"
    );
    (acme, secret, plaintext)
}

async fn a_secret_revoked_on_one_replica_is_refused_on_another_within_seconds(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_replica(&a).await;
    let (acme, secret, plaintext) = secret_cached_on(&b, &a).await;
    a.revoke(&acme.id, &secret.id).await.unwrap();
    wait_until(
        "B refuses the secret revoked on A",
        Duration::from_secs(3),
        async || !b.verifies(&acme.client_id, &plaintext).await,
    )
    .await;
}

async fn an_org_deleted_on_one_replica_is_refused_on_another_within_seconds(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_replica(&a).await;
    let (acme, _, plaintext) = secret_cached_on(&b, &a).await;
    a.delete_org(&acme.id).await;
    wait_until(
        "B refuses the secret of the org deleted on A",
        Duration::from_secs(3),
        // verify, not verifies: until B hears of the delete, its cached verdict
        // names an org that GetOrg no longer finds.
        async || !b.verify(&acme.client_id, &plaintext).await.unwrap(),
    )
    .await;
}

/// Invalidation names the org: org B's rotation leaves org A's cached verdict a
/// cache hit (no argon2 work), on the replica that wrote and on another — no
/// thundering herd of cold verifies after every write.
async fn another_orgs_rotation_leaves_a_cached_verdict_a_hit_on_every_replica(backend: Backend) {
    let first = spawn_app(backend).await;
    let replica = spawn_replica(&first).await;
    let acme = first.create_org().await;
    let (_, acme_secret) = first.import_and_activate(&acme.id).await;
    let other = first.create_org().await;
    let (_, other_secret) = first.import_and_activate(&other.id).await;
    for app in [&first, &replica] {
        app.wait_until_changes_are_taken_in().await;
        assert!(app.verifies(&acme.client_id, &acme_secret).await);
        assert!(app.verifies(&other.client_id, &other_secret).await);
    }

    let rotated = first.generate_secret(&other.id).await;
    // Counted after the generate, which hashes the new secret once.
    let hashes = [&first, &replica].map(|app| app.verifier.hasher().computations());
    first
        .activate(&other.id, Secret::SecretId(rotated.secret.unwrap().id), 0)
        .await
        .unwrap();
    for (app, before) in [&first, &replica].into_iter().zip(hashes) {
        app.wait_until_changes_are_taken_in().await;
        assert!(app.verifies(&acme.client_id, &acme_secret).await);
        assert_eq!(
            app.verifier.hasher().computations(),
            before,
            "the untouched org's verdict is still a cache hit"
        );
        assert!(
            !app.verifies(&other.client_id, &other_secret).await,
            "the rotated org's old secret is refused: the change did arrive"
        );
    }
}

async fn cold_verifications_past_the_queue_are_told_to_retry(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.argon2_m_kib = 16 * 1024;
        s.argon2_t = 2;
        s.argon2_workers = Some(1);
        s.argon2_queue = 2;
        s.verify_throttle_rate = 0.0;
    })
    .await;
    let acme = app.create_org().await;
    let (_, secret) = app.import_and_activate(&acme.id).await;
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let mut client = app.secrets.clone();
            let request = VerifyClientSecretRequest {
                client_id: acme.client_id.clone(),
                client_secret: wrong_import_of(&secret),
            };
            tokio::spawn(async move { client.verify_client_secret(request).await })
        })
        .collect();
    let mut exhausted = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(answer) => assert!(!answer.into_inner().valid),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                exhausted += 1;
            }
        }
    }
    assert!(
        exhausted > 0,
        "16 cold verifies on 1 worker with a queue of 2 must turn some away"
    );
}

/// A gateway with a short deadline gives up on cold verifications while they wait
/// for an argon2 worker. Each cancelled wait gives its queue place back: afterwards
/// the queue is empty and another org's rightful secret verifies, instead of every
/// cold verify answering RESOURCE_EXHAUSTED until a restart.
async fn cancelled_verifications_give_their_queue_places_back(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.argon2_m_kib = 16 * 1024;
        s.argon2_t = 2;
        s.argon2_workers = Some(1);
        s.argon2_queue = 4;
        s.verify_throttle_rate = 0.0;
    })
    .await;
    let victim = app.create_org().await;
    let (_, victim_secret) = app.import_and_activate(&victim.id).await;
    let bystander = app.create_org().await;
    let (_, rightful) = app.import_and_activate(&bystander.id).await;
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let mut client = app.secrets.clone();
            let mut request = tonic::Request::new(VerifyClientSecretRequest {
                client_id: victim.client_id.clone(),
                client_secret: wrong_import_of(&victim_secret),
            });
            request.set_timeout(Duration::from_millis(20));
            tokio::spawn(async move { client.verify_client_secret(request).await })
        })
        .collect();
    let mut cancelled = 0;
    for call in calls {
        if let Err(status) = call.await.unwrap()
            && matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded)
        {
            cancelled += 1;
        }
    }
    assert!(
        cancelled > 4,
        "more cancellations than the queue holds: {cancelled}"
    );
    wait_until(
        "the argon2 queue empties",
        Duration::from_secs(30),
        async || app.verifier.hasher().waiting() == 0,
    )
    .await;
    // Cancelled calls the server had not yet read may still arrive and queue for
    // a moment; a leaked place would refuse forever.
    assert!(
        app.verdict_once_past(
            Code::ResourceExhausted,
            Duration::from_secs(30),
            &bystander.client_id,
            &rightful
        )
        .await,
        "the rightful secret of another org verifies after the storm"
    );
}

/// A flood of wrong secrets empties a client's bucket, but the secret that verified
/// before is known (a keyed digest, no argon2) and skips the throttle once its
/// cached verdict has expired: the rightful client keeps verifying.
async fn the_rightful_secret_keeps_verifying_under_a_flood_of_wrong_ones(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.verify_throttle_rate = 0.001;
        s.verify_throttle_burst = 3;
        s.verify_cache_ttl = Duration::from_secs(1);
    })
    .await;
    let victim = app.create_org().await;
    let (_, secret) = app.import_and_activate(&victim.id).await;
    assert!(app.verify(&victim.client_id, &secret).await.unwrap());
    let mut throttled = 0;
    for _ in 0..10 {
        match app
            .verify(&victim.client_id, &wrong_import_of(&secret))
            .await
        {
            Ok(valid) => assert!(!valid),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                throttled += 1;
            }
        }
    }
    assert!(throttled >= 8, "the flood empties the bucket: {throttled}");
    // Elapsed time is the point here: the cached verdict must expire, so that the
    // next verify is cold.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        app.verify(&victim.client_id, &secret).await.unwrap(),
        "a cold verify of the rightful secret is not throttled"
    );
}

/// Made-up client IDs each would get a full bucket of their own; client IDs
/// without a bucket share one to get theirs, so their dummy-hash work is bounded
/// (decided before the store: the same for real and made-up IDs), while a client
/// already seen keeps its own bucket.
async fn made_up_clients_share_one_bounded_budget(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.verify_throttle_rate = 0.001;
        s.verify_throttle_burst = 4;
        s.verify_cache_ttl = Duration::ZERO;
    })
    .await;
    let real = app.create_org().await;
    let (_, secret) = app.import_and_activate(&real.id).await;
    // Seen once: its bucket is paid from the newcomers' one (1 of 4).
    assert!(app.verify(&real.client_id, &secret).await.unwrap());
    let hashes = app.verifier.hasher().computations();
    let mut throttled = 0;
    for i in 0..20 {
        match app
            .verify(&format!("{:032x}", 0xc0ffee + i), &wrong_import_of(&secret))
            .await
        {
            Ok(valid) => assert!(!valid),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                throttled += 1;
            }
        }
    }
    assert_eq!(
        throttled, 17,
        "3 new buckets, then the shared bucket is empty"
    );
    assert_eq!(app.verifier.hasher().computations(), hashes + 3);
    assert!(
        app.verify(&real.client_id, &secret).await.unwrap(),
        "a client already seen keeps its own bucket"
    );
}

/// PostgreSQL only: the throttle is decided before the database is asked. The
/// wrong secrets carry hints memory does not hold, so each is a miss that may read
/// the org again from the store; with the secrets table locked that read hangs.
/// Every call asks the throttle first: past the burst of 2, four are told
/// RESOURCE_EXHAUSTED at once. (Were the store read before the throttle, the one
/// call whose read is due would hang before spending its token, and only three
/// would be refused at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_throttle_answers_before_the_database_is_asked() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("CREDD_TEST_DATABASE_URL is not set: PostgreSQL lock test skipped");
        return;
    };
    let app = spawn_app_with(backend, |s| {
        s.verify_throttle_rate = 0.001;
        s.verify_throttle_burst = 2;
    })
    .await;
    let org = app.create_org().await;
    let (_, secret) = app.import_and_activate(&org.id).await;
    let lock = app.lock_table("client_secrets").await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut client = app.secrets.clone();
            // A different hint each: not held in memory, so a miss.
            let unheld = {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .encode(credd::domain::ids::random_bytes::<30>())
            };
            assert_ne!(unheld[unheld.len() - 4..], secret[secret.len() - 4..]);
            let mut request = tonic::Request::new(VerifyClientSecretRequest {
                client_id: org.client_id.clone(),
                client_secret: unheld,
            });
            request.set_timeout(Duration::from_secs(2));
            tokio::spawn(async move {
                let started = Instant::now();
                let code = client
                    .verify_client_secret(request)
                    .await
                    .map_or_else(|s| s.code(), |_| Code::Ok);
                (code, started.elapsed())
            })
        })
        .collect();
    let mut exhausted_at_once = 0;
    for call in calls {
        let (code, took) = call.await.unwrap();
        if code == Code::ResourceExhausted && took < Duration::from_secs(1) {
            exhausted_at_once += 1;
        }
    }
    lock.rollback().await.unwrap();
    assert_eq!(
        exhausted_at_once, 4,
        "past the burst of 2, no call waits on the locked store"
    );
}

async fn the_throttle_isolates_clients_and_spares_cached_secrets(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.verify_throttle_rate = 0.01;
        s.verify_throttle_burst = 2;
    })
    .await;
    let noisy = app.create_org().await;
    let quiet = app.create_org().await;
    let (_, secret) = app.import_and_activate(&noisy.id).await;
    // "Cached" below must stay cached: no background invalidation of the writes
    // above may drop the verdict and turn its next verify cold (and throttled).
    app.wait_until_changes_are_taken_in().await;
    assert!(
        app.verify(&noisy.client_id, &secret).await.unwrap(),
        "cold, first token, now cached"
    );
    assert!(
        !app.verify(&noisy.client_id, &wrong_import_of(&secret))
            .await
            .unwrap(),
        "cold, second token"
    );
    let status = app
        .verify(&noisy.client_id, &wrong_import_of(&secret))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "the bucket is empty: retry later, not false"
    );
    assert!(
        app.verify(&noisy.client_id, &secret).await.unwrap(),
        "the cached right secret still verifies"
    );
    let (_, quiet_secret) = app.import_and_activate(&quiet.id).await;
    assert!(
        app.verify(&quiet.client_id, &quiet_secret).await.unwrap(),
        "other clients are untouched"
    );
    assert!(
        !app.verify(&quiet.client_id, &wrong_import_of(&quiet_secret))
            .await
            .unwrap()
    );
}

async fn a_throttled_client_is_refused_then_served_again_as_its_bucket_refills(backend: Backend) {
    // One cold verification a burst, refilled at two a second.
    let app = spawn_app_with(backend, |s| {
        s.verify_throttle_rate = 2.0;
        s.verify_throttle_burst = 1;
    })
    .await;
    let acme = app.create_org().await;
    let (_, secret) = app.import_and_activate(&acme.id).await;
    let emptied = Instant::now();
    assert!(
        !app.verify(&acme.client_id, &wrong_import_of(&secret))
            .await
            .unwrap(),
        "the burst's one token: a cold verification and a false"
    );
    assert_code(
        app.verify(&acme.client_id, &wrong_import_of(&secret)).await,
        Code::ResourceExhausted,
    );
    // Refused calls take no token, so polling does not delay the refill.
    assert!(
        app.verdict_once_past(
            Code::ResourceExhausted,
            Duration::from_secs(3),
            &acme.client_id,
            &secret
        )
        .await,
        "once the bucket refills, the right secret is served and verifies"
    );
    assert!(
        emptied.elapsed() >= Duration::from_millis(500),
        "a token comes back at the rate (2/s), not at once: served after {:?}",
        emptied.elapsed()
    );
}

/// A small deterministic generator for the property test.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

async fn no_sequence_of_operations_makes_a_wrong_secret_valid(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.verify_throttle_rate = 0.0).await;
    let acme = app.create_org().await;
    // The model: each secret's state as credd should hold it.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum State {
        Pending,
        Active,
        Retiring,
        Gone,
    }
    let mut secrets: Vec<(String, String, State)> = Vec::new();
    for seed in [0x9E37_79B9_7F4A_7C15_u64, 0xD1B5_4A32_D192_ED03] {
        let mut rng = XorShift(seed);
        for step in 0..40 {
            match rng.below(5) {
                0 => {
                    let (id, plaintext) = generate(&app, &acme).await;
                    secrets.push((id, plaintext, State::Pending));
                }
                1 if !secrets.is_empty() => {
                    let i = rng.below(secrets.len());
                    if secrets[i].2 == State::Pending {
                        let grace = if rng.below(2) == 0 { 0 } else { 3600 };
                        app.activate(&acme.id, Secret::SecretId(secrets[i].0.clone()), grace)
                            .await
                            .unwrap();
                        for (j, s) in secrets.iter_mut().enumerate() {
                            s.2 = match s.2 {
                                State::Active if grace > 0 => State::Retiring,
                                State::Active | State::Retiring => State::Gone,
                                // Older pending secrets are superseded.
                                State::Pending if j < i => State::Gone,
                                other => other,
                            };
                        }
                        secrets[i].2 = State::Active;
                    }
                }
                2 if !secrets.is_empty() => {
                    let i = rng.below(secrets.len());
                    if secrets[i].2 != State::Gone {
                        app.revoke(&acme.id, &secrets[i].0).await.unwrap();
                        secrets[i].2 = State::Gone;
                    }
                }
                _ => {}
            }
            for (id, plaintext, state) in &secrets {
                let expected = matches!(state, State::Active | State::Retiring);
                assert_eq!(
                    app.verify(&acme.client_id, plaintext).await.unwrap(),
                    expected,
                    "step {step}: secret {id} in {state:?}"
                );
                assert!(
                    !app.verify(&acme.client_id, &wrong_version_of(plaintext))
                        .await
                        .unwrap(),
                    "step {step}: a wrong secret verified"
                );
            }
        }
    }
}

both_backends!(
    a_second_verify_is_a_cache_hit_with_no_argon2_work,
    a_burst_of_identical_cold_verifications_costs_one_hash,
    cached_verdicts_go_at_once_on_revoke_activate_and_delete,
    another_process_sees_an_activation_within_a_second,
    a_secret_revoked_on_one_replica_is_refused_on_another_within_seconds,
    an_org_deleted_on_one_replica_is_refused_on_another_within_seconds,
    another_orgs_rotation_leaves_a_cached_verdict_a_hit_on_every_replica,
    cold_verifications_past_the_queue_are_told_to_retry,
    cancelled_verifications_give_their_queue_places_back,
    the_throttle_isolates_clients_and_spares_cached_secrets,
    the_rightful_secret_keeps_verifying_under_a_flood_of_wrong_ones,
    made_up_clients_share_one_bounded_budget,
    a_throttled_client_is_refused_then_served_again_as_its_bucket_refills,
    no_sequence_of_operations_makes_a_wrong_secret_valid,
);
