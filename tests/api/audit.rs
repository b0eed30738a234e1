//! The audit trail: every write leaves one event in its own transaction, failed
//! verifications are aggregated, and no secret or token is ever in it.

use credd::{
    domain::caller::{Actor, Scope, Scopes},
    pb::{
        AppRegistration, ClientSecretState, CreateAppRegistrationRequest, CreateOrgRequest,
        DeleteAppRegistrationRequest, DeleteOrgRequest, GenerateClientSecretRequest,
        ImportClientSecretRequest, ListAuditEventsRequest, Platform, UpdateAppRegistrationRequest,
        UpdateOrgRequest, activate_client_secret_request::Secret,
    },
};
use tonic::Code;

use crate::{
    callers::tokens_of,
    helpers::{Backend, TestApp, assert_code, assert_invalid, collect_pages, spawn_app},
};

/// Every event `filter` selects, newest first, read four to a page.
async fn events(app: &TestApp, filter: ListAuditEventsRequest) -> Vec<credd::pb::AuditEvent> {
    let (events, _) = collect_pages(async |page_token| {
        let page = app
            .audit
            .clone()
            .list_audit_events(ListAuditEventsRequest {
                page_token,
                page_size: 4,
                ..filter.clone()
            })
            .await
            .unwrap()
            .into_inner();
        (page.events, page.next_page_token)
    })
    .await;
    events
}

/// Every event of `org_id`, newest first.
async fn trail_of(app: &TestApp, org_id: &str) -> Vec<credd::pb::AuditEvent> {
    let filter = ListAuditEventsRequest {
        org_id: org_id.into(),
        ..Default::default()
    };
    events(app, filter).await
}

fn actions(events: &[credd::pb::AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.action.as_str()).collect()
}

async fn every_write_leaves_one_event_with_who_what_and_request(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut request = tonic::Request::new(CreateOrgRequest {
        name: "Acme".into(),
        main_website: "https://acme.example".into(),
        custom_domain: "login.acme.example".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let org = app.orgs.create_org(request).await.unwrap().into_inner();
    let (secret, _) = app.generate_and_activate(&org.id).await;
    let secret_id = secret.id;
    app.revoke(&org.id, &secret_id).await.unwrap();
    let registered = app
        .apps
        .create_app_registration(CreateAppRegistrationRequest {
            org_id: org.id.clone(),
            name: "Web".into(),
            platform: Platform::Web.into(),
            callback_url: "https://app.acme.example/cb".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    app.apps
        .update_app_registration(UpdateAppRegistrationRequest {
            app_registration: Some(AppRegistration {
                id: registered.id.clone(),
                name: "Web app".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap();
    app.apps
        .delete_app_registration(DeleteAppRegistrationRequest {
            id: registered.id.clone(),
        })
        .await
        .unwrap();
    app.orgs
        .update_org(UpdateOrgRequest {
            org: Some(credd::pb::Org {
                id: org.id.clone(),
                name: "Acme Corp".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap();

    let trail = trail_of(&app, &org.id).await;
    assert_eq!(
        actions(&trail),
        [
            "org.update",
            "app.delete",
            "app.update",
            "app.create",
            "secret.revoke",
            "secret.activate",
            "secret.generate",
            "org.create"
        ],
        "newest first"
    );
    for event in &trail {
        assert_eq!(event.caller, "bootstrap");
        assert_eq!(event.org_id, org.id);
        assert_eq!(event.outcome, "ok");
        assert!(event.time.is_some() && !event.request_id.is_empty());
    }
    let created = trail.last().unwrap();
    assert_eq!(
        created.request_id, "req-42",
        "the caller's x-request-id is kept"
    );
    assert_eq!(created.target_id, org.id);
    let target_of = |action: &str| {
        trail
            .iter()
            .find(|e| e.action == action)
            .map(|e| e.target_id.as_str())
    };
    for action in ["secret.generate", "secret.activate", "secret.revoke"] {
        assert_eq!(target_of(action), Some(secret_id.as_str()), "{action}");
    }
    for action in ["app.create", "app.update", "app.delete"] {
        assert_eq!(target_of(action), Some(registered.id.as_str()), "{action}");
    }

    // Filters: action, time range.
    let only = events(
        &app,
        ListAuditEventsRequest {
            action: "secret.activate".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(actions(&only), ["secret.activate"]);
    let after_all = trail[0].time.map(|mut t| {
        t.seconds += 1;
        t
    });
    let none = events(
        &app,
        ListAuditEventsRequest {
            start_time: after_all,
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty());
    let before = events(
        &app,
        ListAuditEventsRequest {
            end_time: after_all,
            org_id: org.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(before.len(), trail.len());
    assert_invalid(
        app.audit
            .list_audit_events(ListAuditEventsRequest {
                org_id: "x".into(),
                ..Default::default()
            })
            .await,
        "org_id",
    );

    // Deleting the org is audited too, and the trail survives it.
    app.orgs
        .delete_org(DeleteOrgRequest { id: org.id.clone() })
        .await
        .unwrap();
    let trail = trail_of(&app, &org.id).await;
    assert_eq!(trail[0].action, "org.delete");
    assert_eq!(trail.len(), 9);

    // Caller tokens are managed beside the server (the command line): their events
    // belong to no org and name the token by its id.
    let (_, tokens) = tokens_of(&app).await;
    let (created, _) = tokens
        .create(&Actor::cli(), "ci", Scopes::of([Scope::AuditRead]), None)
        .await
        .unwrap();
    tokens.revoke(&Actor::cli(), "ci").await.unwrap();
    for action in ["token.create", "token.revoke"] {
        let only = events(
            &app,
            ListAuditEventsRequest {
                action: action.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(actions(&only), [action]);
        assert_eq!(
            (only[0].caller.as_str(), only[0].org_id.as_str()),
            ("cli", "")
        );
        assert_eq!(only[0].target_id, created.id.as_str());
        assert!(only[0].details.contains("\"ci\""), "{}", only[0].details);
        assert_eq!(only[0].outcome, "ok");
    }
}

async fn a_refused_write_leaves_no_event(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = app
        .create_org_with("A", "https://a.example", "login.a.example")
        .await;
    let before = events(&app, ListAuditEventsRequest::default()).await.len();
    assert_code(
        app.orgs
            .create_org(CreateOrgRequest {
                name: "B".into(),
                main_website: "https://b.example".into(),
                custom_domain: "login.a.example".into(),
            })
            .await,
        Code::AlreadyExists,
    );
    let id = app.generate_secret(&org.id).await.secret.unwrap().id;
    app.revoke(&org.id, &id).await.unwrap();
    assert_code(
        app.activate(&org.id, Secret::SecretId(id), 0).await,
        Code::FailedPrecondition,
    );
    let after = events(&app, ListAuditEventsRequest::default()).await;
    assert_eq!(
        after.len(),
        before + 2,
        "only the generate and the revoke: {:?}",
        actions(&after)
    );
}

/// Statements that make every insert into `audit_events` fail (as a full disk or
/// a broken audit table would), and the statement that undoes them.
fn audit_refusal(backend: &Backend) -> (&'static [&'static str], &'static str) {
    match backend {
        Backend::Sqlite => (
            &[
                "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_events \
               BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END",
            ],
            "DROP TRIGGER audit_refused",
        ),
        Backend::Postgres(_) | Backend::PgBouncer { .. } => (
            &[
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$",
                "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
            ],
            "DROP TRIGGER audit_refused ON audit_events",
        ),
    }
}

async fn a_change_whose_audit_event_cannot_be_written_is_not_made(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    let acme = app.create_org().await;
    let (active, plaintext) = app.generate_and_activate(&acme.id).await;
    let (refuse, allow) = audit_refusal(&backend);
    for statement in refuse {
        app.execute_sql(statement).await.unwrap();
    }

    // Each write fails as a whole: the change rolls back with its event.
    assert_code(
        app.orgs
            .clone()
            .create_org(CreateOrgRequest {
                name: "Unaudited".into(),
                main_website: "https://unaudited.example".into(),
                custom_domain: String::new(),
            })
            .await,
        Code::Internal,
    );
    assert_code(
        app.secrets
            .clone()
            .generate_client_secret(GenerateClientSecretRequest {
                org_id: acme.id.clone(),
                description: String::new(),
                ..Default::default()
            })
            .await,
        Code::Internal,
    );
    assert_code(app.revoke(&acme.id, &active.id).await, Code::Internal);
    assert_code(
        app.orgs
            .clone()
            .delete_org(DeleteOrgRequest {
                id: acme.id.clone(),
            })
            .await,
        Code::Internal,
    );

    let orgs = app.list_orgs().await;
    assert_eq!(
        orgs.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        [acme.id.as_str()],
        "no org was created and none deleted"
    );
    let secrets = app.list_secrets(&acme.id).await;
    assert_eq!(secrets.len(), 1, "no secret was generated: {secrets:?}");
    assert_eq!(
        secrets[0].state(),
        ClientSecretState::Active,
        "the secret was not revoked"
    );
    assert!(app.verifies(&acme.client_id, &plaintext).await);

    // With the audit table writable again, the same writes go through.
    app.execute_sql(allow).await.unwrap();
    app.create_org().await;
    app.revoke(&acme.id, &active.id).await.unwrap();
}

async fn failed_verifications_are_counted_in_one_event_per_org(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    for attempt in ["wrong", "also-wrong-but-longer-than-thirty-two-chars", ""] {
        assert!(!app.verifies(&org.client_id, attempt).await);
    }
    // An unknown client has no org to charge.
    assert!(!app.verifies(&"0".repeat(32), "x").await);
    app.verifier.flush_failed_verifications().await;
    app.verifier.flush_failed_verifications().await;
    let failed = events(
        &app,
        ListAuditEventsRequest {
            action: "verify.failed".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failed.len(), 1, "one event for the burst: {failed:?}");
    assert_eq!(failed[0].org_id, org.id);
    let details: serde_json::Value = serde_json::from_str(&failed[0].details).unwrap();
    assert_eq!(details["count"], 3);
}

async fn no_secret_or_token_is_ever_in_the_trail(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = app.create_org().await;
    let imported = "Vx9kP2mQ7rT4wY6zA1bC3dE5fG8hJ0kLmNoPqRsTuVw";
    let generated = app.generate_secret(&org.id).await.plaintext;
    app.activate(&org.id, Secret::Plaintext(generated.clone()), 0)
        .await
        .unwrap();
    app.secrets
        .import_client_secret(ImportClientSecretRequest {
            org_id: org.id.clone(),
            plaintext: imported.into(),
            description: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.activate(&org.id, Secret::Plaintext(imported.into()), 60)
        .await
        .unwrap();
    let (_, tokens) = tokens_of(&app).await;
    let (_, token) = tokens
        .create(&Actor::cli(), "ci", Scopes::of([Scope::AuditRead]), None)
        .await
        .unwrap();

    // The raw table, every column of every row.
    use sea_orm::{ConnectionTrait as _, Statement};
    let db = sea_orm::Database::connect(app.database_url.as_str())
        .await
        .unwrap();
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT id, caller, action, COALESCE(org_id, ''), target_id, outcome, request_id, details FROM audit_events",
        ))
        .await
        .unwrap();
    assert!(rows.len() >= 6);
    let mut dump = String::new();
    for row in rows {
        for i in 0..8 {
            dump.push_str(&row.try_get_by_index::<String>(i).unwrap());
            dump.push('|');
        }
    }
    db.close().await.ok();
    assert!(
        dump.contains("token.create") && dump.contains("secret.import"),
        "{dump}"
    );
    for secret in [generated.as_str(), imported, token.reveal()] {
        assert!(
            !dump.contains(&secret[secret.len() / 4..secret.len() * 3 / 4]),
            "a secret reached the audit table"
        );
    }
}

both_backends!(
    every_write_leaves_one_event_with_who_what_and_request,
    a_refused_write_leaves_no_event,
    a_change_whose_audit_event_cannot_be_written_is_not_made,
    failed_verifications_are_counted_in_one_event_per_org,
    no_secret_or_token_is_ever_in_the_trail,
);

through_pgbouncer!(
    every_write_leaves_one_event_with_who_what_and_request: true,
);
