//! credd.v1.Orgs end to end.

use std::collections::HashSet;

use credd::pb::{
    CreateOrgRequest, DeleteOrgRequest, GetIntegrationRequest, GetOrgRequest, ListOrgsRequest, Org,
    UpdateOrgRequest, get_org_request::Lookup,
};
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{
    Backend, TestApp, assert_code, assert_invalid, assert_unique_violation, collect_pages,
    spawn_app,
};

fn new_org(name: &str, custom_domain: &str) -> CreateOrgRequest {
    CreateOrgRequest {
        name: name.into(),
        main_website: "https://acme.example".into(),
        custom_domain: custom_domain.into(),
    }
}

async fn create(app: &TestApp, name: &str, custom_domain: &str) -> Org {
    app.create_org_with(name, "https://acme.example", custom_domain)
        .await
}

async fn get(app: &mut TestApp, lookup: Lookup) -> Result<Org, tonic::Status> {
    app.orgs
        .get_org(GetOrgRequest {
            lookup: Some(lookup),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// An UpdateOrg request for `patch` (which names the org by id) under a mask of
/// `paths`.
fn update(patch: Org, paths: &[&str]) -> UpdateOrgRequest {
    UpdateOrgRequest {
        org: Some(patch),
        update_mask: mask(paths),
    }
}

async fn creating_an_org_returns_it_with_a_fresh_client_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = create(&app, "Acme", "").await;
    let second = create(&app, "Acme", "").await;

    assert_eq!(first.name, "Acme");
    assert_eq!(first.main_website, "https://acme.example");
    assert_eq!(first.login_domain, "login.credd.local");
    assert_eq!(first.client_id.len(), 32);
    assert!(first.client_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(first.create_time.is_some() && first.update_time.is_some());
    assert_ne!(first.id, second.id);
    assert_ne!(first.client_id, second.client_id);
}

async fn an_org_is_found_by_id_client_id_or_custom_domain(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = create(&app, "Acme", "Login.Acme.Example.").await;
    assert_eq!(org.custom_domain, "login.acme.example");
    assert_eq!(org.login_domain, "login.acme.example");

    assert_eq!(
        get(&mut app, Lookup::Id(org.id.clone())).await.unwrap(),
        org
    );
    assert_eq!(
        get(&mut app, Lookup::ClientId(org.client_id.clone()))
            .await
            .unwrap(),
        org
    );
    // The gateway passes the Host header as it arrived: case and a trailing dot vary.
    assert_eq!(
        get(&mut app, Lookup::CustomDomain("LOGIN.acme.example.".into()))
            .await
            .unwrap(),
        org
    );
}

async fn unknown_orgs_are_not_found(backend: Backend) {
    let mut app = spawn_app(backend).await;
    create(&app, "Acme", "login.acme.example").await;
    let unknown_id = uuid::Uuid::now_v7().to_string();
    assert_code(
        get(&mut app, Lookup::Id(unknown_id.clone())).await,
        Code::NotFound,
    );
    assert_code(
        get(&mut app, Lookup::ClientId("0".repeat(32))).await,
        Code::NotFound,
    );
    assert_code(
        get(&mut app, Lookup::ClientId("not-a-client-id".into())).await,
        Code::NotFound,
    );
    assert_code(
        get(&mut app, Lookup::CustomDomain("other.acme.example".into())).await,
        Code::NotFound,
    );
    assert_code(
        app.orgs
            .delete_org(DeleteOrgRequest {
                id: unknown_id.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        app.orgs
            .get_integration(GetIntegrationRequest { org_id: unknown_id })
            .await,
        Code::NotFound,
    );
    assert_invalid(get(&mut app, Lookup::Id("42".into())).await, "id");
    assert_invalid(
        app.orgs.get_org(GetOrgRequest { lookup: None }).await,
        "lookup",
    );
}

async fn every_validation_rule_names_its_field(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let named = |name: &str| CreateOrgRequest {
        name: name.into(),
        ..new_org("x", "")
    };
    let website = |main_website: &str| CreateOrgRequest {
        main_website: main_website.into(),
        ..new_org("Acme", "")
    };
    let cases: Vec<(CreateOrgRequest, &str)> = vec![
        (named(""), "name"),
        (named("   "), "name"),
        (named(&"x".repeat(201)), "name"),
        (named("bad\nname"), "name"),
        (website(""), "main_website"),
        (website("acme.example"), "main_website"),
        (website("http://acme.example"), "main_website"),
        (website("https://u:p@acme.example"), "main_website"),
        (website("https://10.0.0.1"), "main_website"),
        (new_org("Acme", "not a domain"), "custom_domain"),
        (new_org("Acme", "localhost"), "custom_domain"),
        (new_org("Acme", "192.168.0.1"), "custom_domain"),
        (new_org("Acme", "-bad.acme.example"), "custom_domain"),
        (
            new_org("Acme", "https://login.acme.example"),
            "custom_domain",
        ),
    ];
    for (request, field) in cases {
        assert_invalid(app.orgs.create_org(request).await, field);
    }
    assert!(
        app.list_orgs().await.is_empty(),
        "a refused org must not be stored"
    );
}

async fn a_custom_domain_belongs_to_one_org(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let first = create(&app, "First", "login.acme.example").await;
    assert_code(
        app.orgs
            .create_org(new_org("Second", "LOGIN.acme.example"))
            .await,
        Code::AlreadyExists,
    );
    let second = create(&app, "Second", "").await;
    let claim = update(
        Org {
            id: second.id.clone(),
            custom_domain: "login.acme.example".into(),
            ..Default::default()
        },
        &["custom_domain"],
    );
    assert_code(
        app.orgs.update_org(claim.clone()).await,
        Code::AlreadyExists,
    );

    // Deleting the first org releases its domain.
    app.orgs
        .delete_org(DeleteOrgRequest { id: first.id })
        .await
        .unwrap();
    let updated = app.orgs.update_org(claim).await.unwrap().into_inner();
    assert_eq!(updated.login_domain, "login.acme.example");
}

async fn listing_pages_through_every_org_exactly_once(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(create(&app, &format!("Org {i}"), "").await.id);
    }
    let (seen, pages) = collect_pages(async |page_token| {
        let page = app
            .orgs
            .clone()
            .list_orgs(ListOrgsRequest {
                page_size: 5,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orgs.len() <= 5);
        let ids = page.orgs.into_iter().map(|org| org.id).collect();
        (ids, page.next_page_token)
    })
    .await;
    assert_eq!(pages, 5);
    assert_eq!(seen, created, "every org once, in creation order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 23);

    let all = app
        .orgs
        .list_orgs(ListOrgsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.orgs.len(), 23, "the default page size is 50");
    assert!(all.next_page_token.is_empty());

    for bad in ["garbage", "AAAA", "eyJpZCI6MX0"] {
        assert_invalid(
            app.orgs
                .list_orgs(ListOrgsRequest {
                    page_size: 5,
                    page_token: bad.into(),
                })
                .await,
            "page_token",
        );
    }
    assert_invalid(
        app.orgs
            .list_orgs(ListOrgsRequest {
                page_size: 1001,
                page_token: String::new(),
            })
            .await,
        "page_size",
    );
    assert_invalid(
        app.orgs
            .list_orgs(ListOrgsRequest {
                page_size: -1,
                page_token: String::new(),
            })
            .await,
        "page_size",
    );
}

async fn updating_changes_only_the_masked_fields(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = create(&app, "Acme", "login.acme.example").await;
    let renamed = app
        .orgs
        .update_org(update(
            Org {
                id: org.id.clone(),
                name: "Acme Corp".into(),
                main_website: "https://ignored.example".into(),
                ..Default::default()
            },
            &["name"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "Acme Corp");
    assert_eq!(renamed.main_website, org.main_website);
    assert_eq!(renamed.custom_domain, "login.acme.example");
    assert_eq!(renamed.client_id, org.client_id);

    let moved = app
        .orgs
        .update_org(update(
            Org {
                id: org.id.clone(),
                main_website: "https://corp.example".into(),
                ..Default::default()
            },
            &["main_website", "custom_domain"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.main_website, "https://corp.example");
    assert_eq!(
        moved.custom_domain, "",
        "an empty custom_domain in the mask removes it"
    );
    assert_eq!(moved.login_domain, "login.credd.local");
    assert_eq!(
        get(&mut app, Lookup::Id(org.id.clone())).await.unwrap(),
        moved
    );

    let bad = update(
        Org {
            id: org.id.clone(),
            main_website: "http://corp.example".into(),
            ..Default::default()
        },
        &["main_website"],
    );
    assert_invalid(app.orgs.update_org(bad).await, "org.main_website");
    assert_invalid(
        app.orgs
            .update_org(UpdateOrgRequest {
                org: Some(Org {
                    id: org.id.clone(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await,
        "update_mask",
    );
    assert_invalid(
        app.orgs
            .update_org(update(
                Org {
                    id: org.id.clone(),
                    ..Default::default()
                },
                &["colour"],
            ))
            .await,
        "update_mask",
    );
    let missing = update(
        Org {
            id: uuid::Uuid::now_v7().to_string(),
            name: "X".into(),
            ..Default::default()
        },
        &["name"],
    );
    assert_code(app.orgs.update_org(missing).await, Code::NotFound);
}

async fn id_and_client_id_can_never_change(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = create(&app, "Acme", "").await;
    for field in ["client_id", "id"] {
        let attempt = update(
            Org {
                id: org.id.clone(),
                client_id: "f".repeat(32),
                name: "Renamed".into(),
                ..Default::default()
            },
            &["name", field],
        );
        assert_invalid(app.orgs.update_org(attempt).await, "update_mask");
    }
    assert_eq!(
        get(&mut app, Lookup::Id(org.id.clone())).await.unwrap(),
        org,
        "nothing changed"
    );
}

async fn a_deleted_org_is_gone_and_its_client_id_stays_retired(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = create(&app, "Acme", "login.acme.example").await;
    app.orgs
        .delete_org(DeleteOrgRequest { id: org.id.clone() })
        .await
        .unwrap();

    assert_code(
        get(&mut app, Lookup::Id(org.id.clone())).await,
        Code::NotFound,
    );
    assert_code(
        get(&mut app, Lookup::ClientId(org.client_id.clone())).await,
        Code::NotFound,
    );
    assert_code(
        get(&mut app, Lookup::CustomDomain("login.acme.example".into())).await,
        Code::NotFound,
    );
    assert_code(
        app.orgs
            .delete_org(DeleteOrgRequest { id: org.id.clone() })
            .await,
        Code::NotFound,
    );
    assert!(app.list_orgs().await.is_empty());

    // The tombstone keeps the client ID unique: the store refuses to reissue it.
    let row = |client_id: &str| {
        format!(
            "INSERT INTO orgs (id, client_id, name, main_website, create_time, update_time) \
             VALUES ('{}', '{client_id}', 'x', 'https://x.example', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            uuid::Uuid::now_v7(),
        )
    };
    assert_unique_violation(
        app.execute_sql(&row(&org.client_id)).await,
        "a deleted org's client ID must not be insertable again",
    );
    // The same statement with a fresh client ID goes through: the refusal above
    // was the client ID's.
    app.execute_sql(&row(&"f".repeat(32))).await.unwrap();
}

async fn the_integration_shows_login_domain_and_client_id_but_no_secret(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let plain = create(&app, "Plain", "").await;
    let custom = create(&app, "Custom", "id.custom.example").await;

    let view = app
        .orgs
        .get_integration(GetIntegrationRequest {
            org_id: plain.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.org_id, plain.id);
    assert_eq!(view.client_id, plain.client_id);
    assert_eq!(view.login_domain, "login.credd.local");
    assert!(
        view.active_secret.is_none(),
        "a new org has no client secret"
    );
    assert_eq!(view.pending_secret_count, 0);

    let view = app
        .orgs
        .get_integration(GetIntegrationRequest { org_id: custom.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.login_domain, "id.custom.example");
    assert_invalid(
        app.orgs
            .get_integration(GetIntegrationRequest {
                org_id: String::new(),
            })
            .await,
        "org_id",
    );
}

async fn the_default_login_domain_is_configurable(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |settings| {
        settings.default_login_domain = "auth.example.net".into();
    })
    .await;
    let org = create(&app, "Acme", "").await;
    assert_eq!(org.login_domain, "auth.example.net");
}

both_backends!(
    creating_an_org_returns_it_with_a_fresh_client_id,
    an_org_is_found_by_id_client_id_or_custom_domain,
    unknown_orgs_are_not_found,
    every_validation_rule_names_its_field,
    a_custom_domain_belongs_to_one_org,
    listing_pages_through_every_org_exactly_once,
    updating_changes_only_the_masked_fields,
    id_and_client_id_can_never_change,
    a_deleted_org_is_gone_and_its_client_id_stays_retired,
    the_integration_shows_login_domain_and_client_id_but_no_secret,
    the_default_login_domain_is_configurable,
);

through_pgbouncer!(
    listing_pages_through_every_org_exactly_once: false,
    a_custom_domain_belongs_to_one_org: true,
);
