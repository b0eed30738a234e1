//! Verify at scale, for correctness: the verdict cache, its invalidation in this
//! and other processes, the bounded argon2 queue and the per-client throttle.

use std::time::{Duration, Instant};

use credd::pb::{
    ActivateClientSecretRequest, CreateOrgRequest, DeleteOrgRequest, GenerateClientSecretRequest,
    Org, RevokeClientSecretRequest, VerifyClientSecretRequest,
    activate_client_secret_request::Secret,
};
use tonic::Code;

use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with, spawn_replica};

async fn org(app: &mut TestApp) -> Org {
    app.orgs
        .create_org(CreateOrgRequest {
            name: "Acme".into(),
            main_website: "https://acme.example".into(),
            custom_domain: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn generate(app: &mut TestApp, org: &Org) -> (String, String) {
    let generated = app
        .secrets
        .generate_client_secret(GenerateClientSecretRequest {
            org_id: org.id.clone(),
            description: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    (generated.secret.unwrap().id, generated.plaintext)
}

async fn activate(app: &mut TestApp, org: &Org, id: &str, grace: i64) {
    app.secrets
        .activate_client_secret(ActivateClientSecretRequest {
            org_id: org.id.clone(),
            secret: Some(Secret::SecretId(id.into())),
            grace_period: (grace > 0).then_some(prost_types::Duration {
                seconds: grace,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
}

async fn verify(app: &mut TestApp, org: &Org, secret: &str) -> Result<bool, tonic::Status> {
    app.secrets
        .verify_client_secret(VerifyClientSecretRequest {
            client_id: org.client_id.clone(),
            client_secret: secret.into(),
        })
        .await
        .map(|r| r.into_inner().valid)
}

fn wrong_version_of(secret: &str) -> String {
    // Same locator, fresh random part and a valid checksum: well-formed, wrong.
    let id = {
        use base64::Engine as _;
        let locator = &secret["credd_cs_".len().."credd_cs_".len() + 22];
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(locator)
            .unwrap();
        uuid::Uuid::from_slice(&bytes).unwrap().to_string()
    };
    let id = credd::domain::ids::SecretId::parse("secret_id", &id).unwrap();
    secrecy::ExposeSecret::expose_secret(&credd::domain::secret::generate_for(&id)).to_owned()
}

async fn a_second_verify_is_a_cache_hit_with_no_argon2_work(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app).await;
    let (id, secret) = generate(&mut app, &acme).await;
    activate(&mut app, &acme, &id, 0).await;
    let hashes = app.verifier.hasher().computations();
    assert!(verify(&mut app, &acme, &secret).await.unwrap());
    assert_eq!(
        app.verifier.hasher().computations(),
        hashes + 1,
        "the first verify is cold"
    );
    for _ in 0..5 {
        assert!(verify(&mut app, &acme, &secret).await.unwrap());
    }
    assert_eq!(
        app.verifier.hasher().computations(),
        hashes + 1,
        "the next five are cache hits"
    );
    assert_eq!(app.verifier.cache().len(), 1);
    // Failures are never cached: each wrong secret costs its hash again.
    let wrong = wrong_version_of(&secret);
    for _ in 0..2 {
        assert!(!verify(&mut app, &acme, &wrong).await.unwrap());
    }
    assert_eq!(app.verifier.hasher().computations(), hashes + 3);
}

async fn a_burst_of_identical_cold_verifications_costs_one_hash(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| s.argon2_m_kib = 4096).await;
    let acme = org(&mut app).await;
    let (id, secret) = generate(&mut app, &acme).await;
    activate(&mut app, &acme, &id, 0).await;
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
    let mut app = spawn_app(backend).await;
    let acme = org(&mut app).await;
    let (first_id, first) = generate(&mut app, &acme).await;
    activate(&mut app, &acme, &first_id, 0).await;
    assert!(verify(&mut app, &acme, &first).await.unwrap());
    // A rotation without grace: the cached first secret stops at once.
    let (second_id, second) = generate(&mut app, &acme).await;
    activate(&mut app, &acme, &second_id, 0).await;
    assert!(!verify(&mut app, &acme, &first).await.unwrap());
    assert!(verify(&mut app, &acme, &second).await.unwrap());
    // Revoke: gone at once.
    app.secrets
        .revoke_client_secret(RevokeClientSecretRequest {
            org_id: acme.id.clone(),
            secret_id: second_id,
        })
        .await
        .unwrap();
    assert!(!verify(&mut app, &acme, &second).await.unwrap());
    // Delete the org: gone at once.
    let (third_id, third) = generate(&mut app, &acme).await;
    activate(&mut app, &acme, &third_id, 0).await;
    assert!(verify(&mut app, &acme, &third).await.unwrap());
    app.orgs
        .delete_org(DeleteOrgRequest {
            id: acme.id.clone(),
        })
        .await
        .unwrap();
    assert!(!verify(&mut app, &acme, &third).await.unwrap());
}

async fn another_process_sees_an_activation_within_a_second(backend: Backend) {
    let mut a = spawn_app(backend).await;
    let mut b = spawn_replica(&a).await;
    let acme = org(&mut a).await;
    let (old_id, old) = generate(&mut a, &acme).await;
    activate(&mut a, &acme, &old_id, 0).await;
    // B verifies, and so caches, the old secret.
    assert!(verify(&mut b, &acme, &old).await.unwrap());
    assert!(verify(&mut b, &acme, &old).await.unwrap());
    let mut old = old;
    for round in 0..3 {
        let (new_id, new) = generate(&mut a, &acme).await;
        activate(&mut a, &acme, &new_id, 0).await;
        let activated = Instant::now();
        while verify(&mut b, &acme, &old).await.unwrap() {
            assert!(
                activated.elapsed() < Duration::from_secs(1),
                "round {round}: B still accepted the old secret after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(verify(&mut b, &acme, &new).await.unwrap());
        assert!(
            verify(&mut b, &acme, &new).await.unwrap(),
            "and B caches the new one"
        );
        // The next round retires this one.
        old = new;
    }
}

async fn cold_verifications_past_the_queue_are_told_to_retry(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| {
        s.argon2_m_kib = 16 * 1024;
        s.argon2_t = 2;
        s.argon2_workers = Some(1);
        s.argon2_queue = 2;
        s.verify_throttle_rate = 0.0;
    })
    .await;
    let acme = org(&mut app).await;
    let (id, secret) = generate(&mut app, &acme).await;
    activate(&mut app, &acme, &id, 0).await;
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let mut client = app.secrets.clone();
            let request = VerifyClientSecretRequest {
                client_id: acme.client_id.clone(),
                client_secret: wrong_version_of(&secret),
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

async fn the_throttle_isolates_clients_and_spares_cached_secrets(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| {
        s.verify_throttle_rate = 0.01;
        s.verify_throttle_burst = 2;
    })
    .await;
    let noisy = org(&mut app).await;
    let quiet = org(&mut app).await;
    let (id, secret) = generate(&mut app, &noisy).await;
    activate(&mut app, &noisy, &id, 0).await;
    assert!(
        verify(&mut app, &noisy, &secret).await.unwrap(),
        "cold, first token, now cached"
    );
    assert!(
        !verify(&mut app, &noisy, &wrong_version_of(&secret))
            .await
            .unwrap(),
        "cold, second token"
    );
    let status = verify(&mut app, &noisy, &wrong_version_of(&secret))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "the bucket is empty: retry later, not false"
    );
    assert!(
        verify(&mut app, &noisy, &secret).await.unwrap(),
        "the cached right secret still verifies"
    );
    let (quiet_id, quiet_secret) = generate(&mut app, &quiet).await;
    activate(&mut app, &quiet, &quiet_id, 0).await;
    assert!(
        verify(&mut app, &quiet, &quiet_secret).await.unwrap(),
        "other clients are untouched"
    );
    assert!(
        !verify(&mut app, &quiet, &wrong_version_of(&quiet_secret))
            .await
            .unwrap()
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
    let mut app = spawn_app_with(backend, |s| s.verify_throttle_rate = 0.0).await;
    let acme = org(&mut app).await;
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
                    let (id, plaintext) = generate(&mut app, &acme).await;
                    secrets.push((id, plaintext, State::Pending));
                }
                1 if !secrets.is_empty() => {
                    let i = rng.below(secrets.len());
                    if secrets[i].2 == State::Pending {
                        let grace = if rng.below(2) == 0 { 0 } else { 3600 };
                        activate(&mut app, &acme, &secrets[i].0.clone(), grace).await;
                        for s in secrets.iter_mut() {
                            s.2 = match s.2 {
                                State::Active if grace > 0 => State::Retiring,
                                State::Active | State::Retiring => State::Gone,
                                other => other,
                            };
                        }
                        secrets[i].2 = State::Active;
                    }
                }
                2 if !secrets.is_empty() => {
                    let i = rng.below(secrets.len());
                    if secrets[i].2 != State::Gone {
                        app.secrets
                            .revoke_client_secret(RevokeClientSecretRequest {
                                org_id: acme.id.clone(),
                                secret_id: secrets[i].0.clone(),
                            })
                            .await
                            .unwrap();
                        secrets[i].2 = State::Gone;
                    }
                }
                _ => {}
            }
            for (id, plaintext, state) in &secrets {
                let expected = matches!(state, State::Active | State::Retiring);
                assert_eq!(
                    verify(&mut app, &acme, plaintext).await.unwrap(),
                    expected,
                    "step {step}: secret {id} in {state:?}"
                );
                assert!(
                    !verify(&mut app, &acme, &wrong_version_of(plaintext))
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
    cold_verifications_past_the_queue_are_told_to_retry,
    the_throttle_isolates_clients_and_spares_cached_secrets,
    no_sequence_of_operations_makes_a_wrong_secret_valid,
);
