//! The audit trail: every write leaves one event in its own transaction, failed
//! verifications are aggregated, and no secret or token is ever in it.

use credd::pb::{
    ActivateClientSecretRequest, CreateAppRegistrationRequest, CreateOrgRequest, DeleteOrgRequest,
    GenerateClientSecretRequest, ImportClientSecretRequest, ListAuditEventsRequest, Platform,
    RevokeClientSecretRequest, UpdateOrgRequest, VerifyClientSecretRequest,
    activate_client_secret_request::Secret,
};
use tonic::Code;

use crate::{
    callers::tokens_of,
    helpers::{Backend, TestApp, assert_code, assert_invalid, spawn_app},
};

async fn events(app: &mut TestApp, filter: ListAuditEventsRequest) -> Vec<credd::pb::AuditEvent> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .audit
            .list_audit_events(ListAuditEventsRequest {
                page_token: token,
                page_size: 4,
                ..filter.clone()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
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
    let generated = app
        .secrets
        .generate_client_secret(GenerateClientSecretRequest {
            org_id: org.id.clone(),
            description: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let secret_id = generated.secret.unwrap().id;
    app.secrets
        .activate_client_secret(ActivateClientSecretRequest {
            org_id: org.id.clone(),
            secret: Some(Secret::SecretId(secret_id.clone())),
            grace_period: None,
        })
        .await
        .unwrap();
    app.secrets
        .revoke_client_secret(RevokeClientSecretRequest {
            org_id: org.id.clone(),
            secret_id: secret_id.clone(),
        })
        .await
        .unwrap();
    app.apps
        .create_app_registration(CreateAppRegistrationRequest {
            org_id: org.id.clone(),
            name: "Web".into(),
            platform: Platform::Web.into(),
            callback_url: "https://app.acme.example/cb".into(),
            ..Default::default()
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

    let trail = events(
        &mut app,
        ListAuditEventsRequest {
            org_id: org.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        actions(&trail),
        [
            "org.update",
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
    assert_eq!(trail[3].target_id, secret_id);

    // Filters: action, time range.
    let only = events(
        &mut app,
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
        &mut app,
        ListAuditEventsRequest {
            start_time: after_all,
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty());
    let before = events(
        &mut app,
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
    let trail = events(
        &mut app,
        ListAuditEventsRequest {
            org_id: org.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(trail[0].action, "org.delete");
    assert_eq!(trail.len(), 7);
}

async fn a_refused_write_leaves_no_event(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = app
        .orgs
        .create_org(CreateOrgRequest {
            name: "A".into(),
            main_website: "https://a.example".into(),
            custom_domain: "login.a.example".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let before = events(&mut app, ListAuditEventsRequest::default())
        .await
        .len();
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
    let generated = app
        .secrets
        .generate_client_secret(GenerateClientSecretRequest {
            org_id: org.id.clone(),
            description: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = generated.secret.unwrap().id;
    app.secrets
        .revoke_client_secret(RevokeClientSecretRequest {
            org_id: org.id.clone(),
            secret_id: id.clone(),
        })
        .await
        .unwrap();
    assert_code(
        app.secrets
            .activate_client_secret(ActivateClientSecretRequest {
                org_id: org.id.clone(),
                secret: Some(Secret::SecretId(id)),
                grace_period: None,
            })
            .await,
        Code::FailedPrecondition,
    );
    let after = events(&mut app, ListAuditEventsRequest::default()).await;
    assert_eq!(
        after.len(),
        before + 2,
        "only the generate and the revoke: {:?}",
        actions(&after)
    );
}

async fn failed_verifications_are_counted_in_one_event_per_org(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = app
        .orgs
        .create_org(CreateOrgRequest {
            name: "A".into(),
            main_website: "https://a.example".into(),
            custom_domain: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    for attempt in ["wrong", "also-wrong-but-longer-than-thirty-two-chars", ""] {
        let answer = app
            .secrets
            .verify_client_secret(VerifyClientSecretRequest {
                client_id: org.client_id.clone(),
                client_secret: attempt.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!answer.valid);
    }
    // An unknown client has no org to charge.
    app.secrets
        .verify_client_secret(VerifyClientSecretRequest {
            client_id: "0".repeat(32),
            client_secret: "x".into(),
        })
        .await
        .unwrap();
    app.verifier.flush_failed_verifications().await;
    app.verifier.flush_failed_verifications().await;
    let failed = events(
        &mut app,
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
    let org = app
        .orgs
        .create_org(CreateOrgRequest {
            name: "A".into(),
            main_website: "https://a.example".into(),
            custom_domain: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let imported = "Vx9kP2mQ7rT4wY6zA1bC3dE5fG8hJ0kLmNoPqRsTuVw";
    let generated = app
        .secrets
        .generate_client_secret(GenerateClientSecretRequest {
            org_id: org.id.clone(),
            description: "d".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    app.secrets
        .activate_client_secret(ActivateClientSecretRequest {
            org_id: org.id.clone(),
            secret: Some(Secret::Plaintext(generated.clone())),
            grace_period: None,
        })
        .await
        .unwrap();
    app.secrets
        .import_client_secret(ImportClientSecretRequest {
            org_id: org.id.clone(),
            plaintext: imported.into(),
            description: String::new(),
        })
        .await
        .unwrap();
    app.secrets
        .activate_client_secret(ActivateClientSecretRequest {
            org_id: org.id.clone(),
            secret: Some(Secret::Plaintext(imported.into())),
            grace_period: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    let (_, tokens) = tokens_of(&app).await;
    let (_, token) = tokens
        .create(
            &credd::domain::caller::Actor::cli(),
            "ci",
            credd::domain::caller::Scopes::of([credd::domain::caller::Scope::AuditRead]),
            None,
        )
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
    failed_verifications_are_counted_in_one_event_per_org,
    no_secret_or_token_is_ever_in_the_trail,
);
