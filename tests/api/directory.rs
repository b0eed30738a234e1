//! The in-memory directory and the stored hashes: generated secrets as digests,
//! hashes moved to today's format on their next verify, and the login lookups
//! answered from memory and kept current on every replica.

use std::time::Duration;

use credd::{
    pb::{
        CheckRedirectUriRequest, CreateAppRegistrationRequest, DeleteAppRegistrationRequest,
        GetOrgRequest, Org, Platform, UpdateOrgRequest, get_org_request::Lookup,
    },
    service::hasher::{Hasher, HasherConfig},
};
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{
    Backend, Clients, TestApp, assert_code, spawn_app, spawn_app_with, spawn_replica,
    spawn_replica_with, wait_until,
};

async fn generated_secrets_are_stored_as_digests_and_imported_ones_with_argon2(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let generated = app.generate_secret(&org.id).await;
    let phc = app.stored_phc(&generated.secret.unwrap().id).await;
    assert!(phc.starts_with("$sha256$"), "{phc}");
    assert!(!phc.contains(&generated.plaintext));
    let (imported, _) = app.import_and_activate(&org.id).await;
    let phc = app.stored_phc(&imported.id).await;
    assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
}

/// A secret credd generated before digests is stored with argon2id. It keeps
/// verifying (one argon2 verification), and that verification moves it to a
/// digest: the next costs no argon2 at all.
async fn a_generated_secret_hashed_with_argon2_moves_to_a_digest_on_its_next_verify(
    backend: Backend,
) {
    let first = spawn_app(backend).await;
    let org = first.create_org().await;
    let (secret, plaintext) = first.generate_and_activate(&org.id).await;
    // What an older credd stored: argon2id of the generated secret.
    let legacy = Hasher::new(HasherConfig {
        m_kib: 64,
        t: 1,
        p: 1,
        workers: 1,
        queue: 4,
    })
    .unwrap()
    .hash(plaintext.clone().into())
    .await
    .unwrap();
    first
        .execute_sql(&format!(
            "UPDATE client_secrets SET phc = '{legacy}' WHERE id = '{}'",
            secret.id
        ))
        .await
        .unwrap();
    // A process that starts now reads the argon2 hash.
    let app = spawn_replica_with(&first, |s| s.verify_cache_ttl = Duration::ZERO).await;
    let hashes = app.verifier.hasher().computations();
    assert!(app.verifies(&org.client_id, &plaintext).await);
    assert_eq!(app.verifier.hasher().computations(), hashes + 1);
    wait_until(
        "the stored hash becomes a digest",
        Duration::from_secs(5),
        async || app.stored_phc(&secret.id).await.starts_with("$sha256$"),
    )
    .await;
    // The replica that re-stored it reads it back; the other hears of it.
    for replica in [&app, &first] {
        wait_until(
            "verifying costs no argon2 any more",
            Duration::from_secs(3),
            async || {
                let hashes = replica.verifier.hasher().computations();
                replica.verifies(&org.client_id, &plaintext).await
                    && replica.verifier.hasher().computations() == hashes
            },
        )
        .await;
    }
    assert!(
        !app.verify(
            &org.client_id,
            &crate::helpers::wrong_version_of(&plaintext)
        )
        .await
        .unwrap()
    );
}

/// Raising `CREDD_ARGON2_M_KIB` upgrades every imported secret that is used: credd
/// restarted with the new cost re-stores the hash of each secret that verifies.
async fn a_restart_with_a_higher_argon2_cost_rehashes_an_imported_secret_on_verify(
    backend: Backend,
) {
    let mut first = spawn_app_with(backend, |s| s.argon2_m_kib = 64).await;
    let org = first.create_org().await;
    let (secret, plaintext) = first.import_and_activate(&org.id).await;
    assert!(first.verifies(&org.client_id, &plaintext).await);
    let before = first.stored_phc(&secret.id).await;
    assert!(before.contains("$m=64,t=1,p=1$"), "{before}");
    first.stop().await.unwrap();

    let restarted = spawn_replica_with(&first, |s| s.argon2_m_kib = 256).await;
    assert!(restarted.verifies(&org.client_id, &plaintext).await);
    wait_until(
        "the stored hash carries the new parameters",
        Duration::from_secs(5),
        async || {
            restarted
                .stored_phc(&secret.id)
                .await
                .contains("$m=256,t=1,p=1$")
        },
    )
    .await;
    let after = restarted.stored_phc(&secret.id).await;
    assert_ne!(after, before, "a fresh salt and hash");
    assert!(restarted.verifies(&org.client_id, &plaintext).await);
    assert!(
        !restarted
            .verify(&org.client_id, &crate::helpers::wrong_import_of(&plaintext))
            .await
            .unwrap()
    );
}

async fn org_by_domain(clients: &Clients, domain: &str) -> Result<Org, tonic::Status> {
    clients
        .orgs
        .clone()
        .get_org(GetOrgRequest {
            lookup: Some(Lookup::CustomDomain(domain.into())),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn redirect_allowed(clients: &Clients, client_id: &str, uri: &str) -> bool {
    clients
        .apps
        .clone()
        .check_redirect_uri(CheckRedirectUriRequest {
            client_id: client_id.into(),
            redirect_uri: uri.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .allowed
}

async fn set_domain(app: &TestApp, org: &Org, domain: &str) {
    let mut patch = org.clone();
    patch.custom_domain = domain.into();
    app.orgs
        .clone()
        .update_org(UpdateOrgRequest {
            org: Some(patch),
            update_mask: Some(FieldMask {
                paths: vec!["custom_domain".into()],
            }),
        })
        .await
        .unwrap();
}

/// Waits until `b` resolves `domain` to `org` (`None`: to nothing).
async fn b_resolves(b: &TestApp, domain: &str, org: Option<&Org>, what: &str) {
    wait_until(what, Duration::from_secs(1), async || {
        match (org_by_domain(b, domain).await, org) {
            (Ok(found), Some(org)) => found.id == org.id,
            (Err(status), None) => status.code() == Code::NotFound,
            _ => false,
        }
    })
    .await;
}

/// Every write on replica A reaches replica B's login lookups within a second —
/// creates, custom-domain changes, a domain released by one org and claimed by
/// another, app registrations and deletes — and A answers its own writes at once.
async fn login_lookups_follow_every_change_on_every_replica(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_replica(&a).await;
    // B is running (its notification connection open, its polls under way) before
    // A writes: the second is for a running replica.
    b.wait_until_changes_are_taken_in().await;
    let shop = a
        .create_org_with("Shop", "https://shop.example", "login.shop.example")
        .await;
    assert_eq!(
        org_by_domain(&a, "login.shop.example").await.unwrap().id,
        shop.id,
        "the writing replica answers at once"
    );
    b_resolves(
        &b,
        "LOGIN.shop.example.",
        Some(&shop),
        "B resolves a new org",
    )
    .await;

    // The domain moves to another org: released by one, claimed by the other.
    let other = a
        .create_org_with("Other", "https://other.example", "")
        .await;
    set_domain(&a, &shop, "").await;
    set_domain(&a, &other, "login.shop.example").await;
    assert_eq!(
        org_by_domain(&a, "login.shop.example").await.unwrap().id,
        other.id
    );
    b_resolves(&b, "login.shop.example", Some(&other), "B follows the move").await;
    set_domain(&a, &shop, "id.shop.example").await;
    b_resolves(
        &b,
        "id.shop.example",
        Some(&shop),
        "B resolves the new domain",
    )
    .await;
    assert_eq!(
        org_by_domain(&b, "login.shop.example").await.unwrap().id,
        other.id,
        "and the claimed one stays with its new org"
    );

    // App registrations: registered, then deleted.
    let callback = "https://www.shop.example/oauth/callback";
    let app = a
        .apps
        .clone()
        .create_app_registration(CreateAppRegistrationRequest {
            org_id: shop.id.clone(),
            name: "Shop web".into(),
            platform: Platform::Web.into(),
            callback_url: callback.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(redirect_allowed(&a, &shop.client_id, callback).await);
    wait_until(
        "B allows the new callback",
        Duration::from_secs(1),
        async || redirect_allowed(&b, &shop.client_id, callback).await,
    )
    .await;
    assert!(!redirect_allowed(&b, &other.client_id, callback).await);
    a.apps
        .clone()
        .delete_app_registration(DeleteAppRegistrationRequest { id: app.id })
        .await
        .unwrap();
    assert!(!redirect_allowed(&a, &shop.client_id, callback).await);
    wait_until(
        "B refuses the deleted app's callback",
        Duration::from_secs(1),
        async || !redirect_allowed(&b, &shop.client_id, callback).await,
    )
    .await;

    // The org goes: nothing resolves it any more, on either replica.
    a.delete_org(&other.id).await;
    assert_code(
        org_by_domain(&a, "login.shop.example").await,
        Code::NotFound,
    );
    b_resolves(&b, "login.shop.example", None, "B forgets the deleted org").await;
    wait_until(
        "B forgets its client ID",
        Duration::from_secs(1),
        async || {
            b.orgs
                .clone()
                .get_org(GetOrgRequest {
                    lookup: Some(Lookup::ClientId(other.client_id.clone())),
                })
                .await
                .is_err_and(|status| status.code() == Code::NotFound)
        },
    )
    .await;
}

both_backends!(
    generated_secrets_are_stored_as_digests_and_imported_ones_with_argon2,
    a_generated_secret_hashed_with_argon2_moves_to_a_digest_on_its_next_verify,
    a_restart_with_a_higher_argon2_cost_rehashes_an_imported_secret_on_verify,
    login_lookups_follow_every_change_on_every_replica,
);

through_pgbouncer!(
    login_lookups_follow_every_change_on_every_replica: false,
);

/// PostgreSQL only: the login path asks no database. With the orgs, apps and
/// secrets tables locked (every query of them would hang), GetOrg by custom
/// domain and by client ID, CheckRedirectUri and the verification of a generated
/// secret still answer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_path_answers_with_its_tables_locked() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("CREDD_TEST_DATABASE_URL is not set: PostgreSQL lock test skipped");
        return;
    };
    let app = spawn_app(backend).await;
    let org = app
        .create_org_with("Shop", "https://shop.example", "login.shop.example")
        .await;
    let callback = "https://www.shop.example/cb";
    app.apps
        .clone()
        .create_app_registration(CreateAppRegistrationRequest {
            org_id: org.id.clone(),
            name: "Shop web".into(),
            platform: Platform::Web.into(),
            callback_url: callback.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, secret) = app.generate_and_activate(&org.id).await;
    app.wait_until_changes_are_taken_in().await;
    let locks = [
        app.lock_table("orgs").await,
        app.lock_table("app_registrations").await,
        app.lock_table("client_secrets").await,
    ];
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        assert_eq!(
            org_by_domain(&app, "login.shop.example").await.unwrap().id,
            org.id
        );
        assert!(redirect_allowed(&app, &org.client_id, callback).await);
        assert!(app.verify(&org.client_id, &secret).await.unwrap());
    })
    .await;
    for lock in locks {
        lock.rollback().await.unwrap();
    }
    answered.expect("no lookup of the login path waited on a locked table");
}
