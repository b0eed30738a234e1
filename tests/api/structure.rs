//! Guarantees the structure gives: a page token continues only its own list, and a
//! PostgreSQL notification alone reaches another replica.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use credd::pb::{
    ListAuditEventsRequest, ListClientSecretsRequest, ListOrgsRequest,
    activate_client_secret_request::Secret,
};

use crate::helpers::{Backend, assert_invalid, spawn_app, spawn_app_with, wait_until};

async fn a_page_token_continues_only_the_list_it_came_from(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let acme = app.create_org().await;
    let other = app.create_org().await;
    for _ in 0..3 {
        app.generate_secret(&acme.id).await;
        app.generate_secret(&other.id).await;
    }
    let first = app
        .secrets
        .list_client_secrets(ListClientSecretsRequest {
            org_id: acme.id.clone(),
            page_size: 1,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());
    let list_secrets = |org_id: &str, page_token: &str| ListClientSecretsRequest {
        org_id: org_id.to_owned(),
        page_size: 1,
        page_token: page_token.to_owned(),
        ..Default::default()
    };
    let second = app
        .secrets
        .list_client_secrets(list_secrets(&acme.id, &token))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        second.secrets[0].id, first.secrets[0].id,
        "the token moves on"
    );

    // Another org's list.
    assert_invalid(
        app.secrets
            .list_client_secrets(list_secrets(&other.id, &token))
            .await,
        "page_token",
    );
    // Another kind of list.
    assert_invalid(
        app.orgs
            .list_orgs(ListOrgsRequest {
                page_size: 1,
                page_token: token.clone(),
            })
            .await,
        "page_token",
    );
    // The same list with another filter.
    let audit_token = app
        .audit
        .list_audit_events(ListAuditEventsRequest {
            org_id: acme.id.clone(),
            action: "secret.generate".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!audit_token.is_empty());
    assert_invalid(
        app.audit
            .list_audit_events(ListAuditEventsRequest {
                org_id: acme.id.clone(),
                page_size: 1,
                page_token: audit_token,
                ..Default::default()
            })
            .await,
        "page_token",
    );
    // The token changed by hand: every single character, and its decoded id.
    for i in 0..token.len() {
        let mut bytes = token.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let modified = String::from_utf8(bytes).unwrap();
        assert_invalid(
            app.secrets
                .list_client_secrets(list_secrets(&acme.id, &modified))
                .await,
            "page_token",
        );
    }
    let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap();
    let (body, checksum) = decoded.rsplit_once(':').unwrap();
    let (front, id) = body.rsplit_once(':').unwrap();
    let other_id = app.list_secrets(&other.id).await.remove(0).id;
    assert_ne!(id, other_id);
    let forged = URL_SAFE_NO_PAD.encode(format!("{front}:{other_id}:{checksum}"));
    assert_invalid(
        app.secrets
            .list_client_secrets(list_secrets(&acme.id, &forged))
            .await,
        "page_token",
    );
}

both_backends!(
    a_page_token_continues_only_the_list_it_came_from,
    a_change_without_a_log_entry_forgets_everything,
);

/// PostgreSQL only: with the change-counter poll slowed to a minute, a revocation
/// on one replica still reaches another within a second — NOTIFY alone carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_alone_reaches_another_replica_within_a_second() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("CREDD_TEST_DATABASE_URL is not set: PostgreSQL notification test skipped");
        return;
    };
    let first = spawn_app(backend).await;
    let url = first.database_url.clone();
    let slow_poll = Duration::from_secs(60);
    let second = spawn_app_with(first.backend.clone(), |settings| {
        settings.database_url = url.as_str().into();
        settings.change_poll_interval = Some(slow_poll);
    })
    .await;
    let org = first.create_org().await;
    // Imported, so that its verdict is cached (a generated secret's digest is in
    // the directory, which the same notification reloads).
    let (secret, plaintext) = first.import_and_activate(&org.id).await;
    let (generated_meta, generated) = {
        let generated = first.generate_secret(&org.id).await;
        (generated.secret.unwrap(), generated.plaintext)
    };
    // Cached on the second replica, whose counter poll will not run for a minute
    // (verified again until the activation's own notification has come and gone).
    wait_until(
        "the second replica caches the verdict",
        Duration::from_secs(5),
        async || {
            second.verifies(&org.client_id, &plaintext).await && second.verifier.cache().len() == 1
        },
    )
    .await;

    first.revoke(&org.id, &secret.id).await.unwrap();
    let took = wait_until(
        "the second replica forgets the revoked secret",
        Duration::from_secs(1),
        async || second.verifier.cache().is_empty(),
    )
    .await;
    assert!(!second.verifies(&org.client_id, &plaintext).await);
    eprintln!("notification reached the other replica in {took:?}");
    // The directory follows the same notifications: an activation on the first
    // replica verifies on the second within a second, a revocation is refused.
    first
        .activate(&org.id, Secret::SecretId(generated_meta.id.clone()), 0)
        .await
        .unwrap();
    wait_until(
        "the second replica verifies the secret activated on the first",
        Duration::from_secs(1),
        async || second.verifies(&org.client_id, &generated).await,
    )
    .await;
    first.revoke(&org.id, &generated_meta.id).await.unwrap();
    wait_until(
        "the second replica refuses the secret revoked on the first",
        Duration::from_secs(1),
        async || !second.verifies(&org.client_id, &generated).await,
    )
    .await;
}

/// SQLite only: another process holds the database's write lock past credd's busy
/// timeout (a backup tool, a stuck migration). Writes answer UNAVAILABLE — retry
/// later — not INTERNAL, nothing is half-written, and once the lock is gone writes
/// succeed again; reads (verify) go on meanwhile, as WAL allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_database_answers_unavailable_for_writes_and_recovers() {
    use sea_orm::sqlx::{self, Connection as _};

    let app = spawn_app(Backend::Sqlite).await;
    let org = app.create_org().await;
    let (_, plaintext) = app.generate_and_activate(&org.id).await;
    let mut holder = sqlx::SqliteConnection::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();

    let status = app
        .orgs
        .clone()
        .create_org(credd::pb::CreateOrgRequest {
            name: "Blocked".into(),
            main_website: "https://blocked.example".into(),
            custom_domain: String::new(),
        })
        .await
        .expect_err("no write while another process holds the lock");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        app.verifies(&org.client_id, &plaintext).await,
        "reads go on under WAL"
    );

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    let names: Vec<String> = app.list_orgs().await.into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["Acme"], "the refused write left nothing behind");
    app.create_org_with("After", "https://after.example", "")
        .await;
}

/// PostgreSQL only: the change-counter read hangs (another session holds a lock on
/// the table, as a stuck migration or a hung connection would). The server must
/// not wait for ever: the read gives up after a bound, what memory holds answers
/// for `CREDD_STALE_IF_ERROR` and then UNAVAILABLE (never a verdict it can no
/// longer check), readiness turns NOT_SERVING while the services, whose store
/// still answers, stay SERVING; once the read succeeds again it all answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_change_feed_read_stops_answering_from_memory_after_the_stale_window() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let Some(backend) = Backend::postgres() else {
        eprintln!("CREDD_TEST_DATABASE_URL is not set: PostgreSQL lock test skipped");
        return;
    };
    let app = spawn_app_with(backend, |s| s.stale_if_error = Duration::from_secs(2)).await;
    let (org, plaintext) = app.cached_verdict().await;
    let health = async |service: &str| {
        HealthClient::new(app.channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status()
    };
    let lock = app.lock_table("change_counter").await;
    wait_until(
        "nothing answers from memory once the change counter has been unreadable for the window",
        Duration::from_secs(10),
        async || match app.verify(&org.client_id, &plaintext).await {
            Ok(valid) => {
                assert!(valid, "the right secret is never false");
                false
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                true
            }
        },
    )
    .await;
    wait_until(
        "readiness turns NOT_SERVING",
        Duration::from_secs(3),
        async || health("").await == ServingStatus::NotServing,
    )
    .await;
    assert_eq!(
        health("credd.v1.ClientSecrets").await,
        ServingStatus::Serving,
        "the store itself answers"
    );
    lock.rollback().await.unwrap();

    // Readable again: verdicts answer, and readiness is back.
    assert!(
        app.verdict_once_past(
            tonic::Code::Unavailable,
            Duration::from_secs(10),
            &org.client_id,
            &plaintext
        )
        .await
    );
    wait_until(
        "readiness turns SERVING again",
        Duration::from_secs(3),
        async || health("").await == ServingStatus::Serving,
    )
    .await;
}

/// A replica of an older version announces a change by the counter alone (it
/// writes no change-log entry). A counter that moved more than the entries explain
/// makes this process forget everything, rather than keep verdicts it cannot check.
async fn a_change_without_a_log_entry_forgets_everything(backend: Backend) {
    let app = spawn_app(backend).await;
    app.cached_verdict().await;
    app.execute_sql("UPDATE change_counter SET version = version + 1 WHERE id = 1")
        .await
        .unwrap();
    wait_until(
        "the unexplained change empties the cache",
        Duration::from_secs(5),
        async || app.verifier.cache().is_empty(),
    )
    .await;
}

/// Adapters and use cases name an org only through the caller's reach
/// (`OrgAccess::admit`, `convert::org_in_reach`): `ReachedOrg::by_credd`, the
/// way around it for credd's own work, never appears in them.
#[test]
fn adapters_and_use_cases_never_step_around_the_callers_reach() {
    let mut offenders = Vec::new();
    for dir in ["src/grpc", "src/service"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            if code.contains("ReachedOrg::by_credd") {
                offenders.push(path.display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}
