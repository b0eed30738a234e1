//! Gateway/ResolveLogin and caller tokens over gRPC: the edge cases.

use std::time::Duration;

use credd::pb::{
    CreateAppRegistrationRequest, CreateCallerTokenRequest, GetCallerTokenRequest, LoginRefusal,
    Platform, ResolveLoginRequest, ResolveLoginResponse, RevokeCallerTokenRequest,
    caller_tokens_client::CallerTokensClient, create_caller_token_request::Expiration,
    gateway_client::GatewayClient, orgs_client::OrgsClient,
};
use tonic::Code;

use crate::helpers::{
    Backend, TestApp, assert_code, assert_invalid, spawn_app, spawn_replica, wait_until,
};

async fn resolve(app: &TestApp, host: &str, client_id: &str, uri: &str) -> ResolveLoginResponse {
    GatewayClient::new(app.channel_with(Some(crate::helpers::TOKEN)))
        .resolve_login(ResolveLoginRequest {
            host: host.into(),
            client_id: client_id.into(),
            redirect_uri: uri.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn web_app(app: &TestApp, org_id: &str, callback: &str) {
    app.apps
        .clone()
        .create_app_registration(CreateAppRegistrationRequest {
            org_id: org_id.into(),
            name: "web".into(),
            platform: Platform::Web.into(),
            callback_url: callback.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn resolve_login_checks_host_client_and_redirect_together(backend: Backend) {
    let app = spawn_app(backend).await;
    let shop = app
        .create_org_with("Shop", "https://shop.example", "login.shop.example")
        .await;
    let other = app
        .create_org_with("Other", "https://other.example", "login.other.example")
        .await;
    let callback = "https://www.shop.example/cb";
    web_app(&app, &shop.id, callback).await;
    web_app(&app, &shop.id, "http://127.0.0.1:8080/cb").await;

    for host in [
        "login.shop.example",
        "LOGIN.Shop.Example",
        "login.shop.example.",
        "login.shop.example:443",
        "login.credd.local",
    ] {
        let answer = resolve(&app, host, &shop.client_id, callback).await;
        assert!(answer.allowed, "{host}: {answer:?}");
        assert_eq!(answer.reason(), LoginRefusal::Unspecified);
        assert_eq!(answer.org.unwrap().id, shop.id);
        assert!(!answer.app_registration_id.is_empty());
        assert!(answer.pkce_required);
    }
    let refused = |answer: ResolveLoginResponse| {
        assert!(!answer.allowed, "{answer:?}");
        assert!(answer.org.is_none() && answer.app_registration_id.is_empty());
        answer.reason()
    };
    assert_eq!(
        refused(resolve(&app, "login.other.example", &shop.client_id, callback).await),
        LoginRefusal::ClientNotOnHost,
        "another org's custom domain"
    );
    assert_eq!(
        refused(resolve(&app, "login.nowhere.example", &shop.client_id, callback).await),
        LoginRefusal::HostUnknown
    );
    assert_eq!(
        refused(resolve(&app, "not a host", &shop.client_id, callback).await),
        LoginRefusal::HostUnknown
    );
    for unknown in ["0123456789abcdef0123456789abcdef", "", "not-a-client-id"] {
        assert_eq!(
            refused(resolve(&app, "login.shop.example", unknown, callback).await),
            LoginRefusal::ClientUnknown
        );
    }
    assert_eq!(
        refused(
            resolve(
                &app,
                "login.shop.example",
                &shop.client_id,
                "https://www.shop.example/cb/x"
            )
            .await
        ),
        LoginRefusal::RedirectNotRegistered
    );
    // A loopback callback on another port is the same registration (RFC 8252).
    assert!(
        resolve(
            &app,
            "login.shop.example",
            &shop.client_id,
            "http://127.0.0.1:51234/cb"
        )
        .await
        .allowed
    );
    assert_eq!(
        refused(resolve(&app, "login.other.example", &other.client_id, callback).await),
        LoginRefusal::RedirectNotRegistered,
        "another org's callback"
    );
}

async fn caller_tokens_over_grpc_are_shown_once_scoped_and_revoked_everywhere(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_replica(&a).await;
    let shop = a.create_org().await;
    let mut tokens = CallerTokensClient::new(a.channel_with(Some(crate::helpers::TOKEN)));
    let create = |name: &str, scopes: &[&str], org_ids: Vec<String>| CreateCallerTokenRequest {
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        org_ids,
        expiration: Some(Expiration::Ttl(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        })),
    };
    // Bad input names the field.
    assert_invalid(
        tokens
            .create_caller_token(create("no-scopes", &[], vec![]))
            .await,
        "scopes",
    );
    assert_invalid(
        tokens
            .create_caller_token(create("bad", &["orgs:everything"], vec![]))
            .await,
        "scopes",
    );
    assert_invalid(
        tokens
            .create_caller_token(create(
                "gone",
                &["orgs:read"],
                vec![credd::domain::ids::OrgId::generate().into_string()],
            ))
            .await,
        "org_ids",
    );
    let mut past = create("past", &["orgs:read"], vec![]);
    past.expiration = Some(Expiration::ExpireTime(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    }));
    assert_invalid(tokens.create_caller_token(past).await, "expire_time");

    let created = tokens
        .create_caller_token(create("shop-admin", &["admin"], vec![shop.id.clone()]))
        .await
        .unwrap()
        .into_inner();
    let meta = created.caller_token.unwrap();
    assert_eq!(meta.org_ids, std::slice::from_ref(&shop.id));
    assert!(created.plaintext.starts_with("credd_ct_"));
    assert!(created.plaintext.ends_with(&meta.hint));
    assert!(meta.expire_time.is_some());
    // Never again: Get and List carry metadata only.
    let got = tokens
        .get_caller_token(GetCallerTokenRequest {
            id: meta.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{got:?}").contains(&created.plaintext));

    // The org-scoped admin makes tokens inside its org only, never more than it has.
    let mut scoped = CallerTokensClient::new(b.channel_with(Some(&created.plaintext)));
    assert_code(
        scoped
            .create_caller_token(create("everywhere", &["orgs:read"], vec![]))
            .await,
        Code::PermissionDenied,
    );
    let other = a.create_org().await;
    assert_code(
        scoped
            .create_caller_token(create("other", &["orgs:read"], vec![other.id.clone()]))
            .await,
        Code::PermissionDenied,
    );
    let inside = scoped
        .create_caller_token(create("shop-ci", &["secrets:write"], vec![shop.id.clone()]))
        .await
        .unwrap()
        .into_inner();
    // It sees tokens inside its org (its own among them), and only those.
    scoped
        .get_caller_token(GetCallerTokenRequest {
            id: meta.id.clone(),
        })
        .await
        .expect("a token inside the caller's org");
    tokens
        .create_caller_token(create("reader-everywhere", &["orgs:read"], vec![]))
        .await
        .unwrap();
    let bootstrap_list = tokens
        .list_caller_tokens(credd::pb::ListCallerTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .caller_tokens;
    let scoped_list = scoped
        .list_caller_tokens(credd::pb::ListCallerTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .caller_tokens;
    assert!(bootstrap_list.len() > scoped_list.len());
    assert!(scoped_list.iter().all(|t| t.org_ids == [shop.id.clone()]));

    // Revoked over gRPC on A: B refuses it within 10 s.
    let mut orgs_on_b = OrgsClient::new(b.channel_with(Some(&inside.plaintext)));
    let inside_id = inside.caller_token.unwrap().id;
    wait_until(
        "B accepts the new token",
        Duration::from_secs(10),
        async || {
            orgs_on_b
                .get_integration(credd::pb::GetIntegrationRequest {
                    org_id: shop.id.clone(),
                })
                .await
                .is_err_and(|s| s.code() == Code::PermissionDenied)
        },
    )
    .await;
    let revoked = tokens
        .revoke_caller_token(RevokeCallerTokenRequest {
            id: inside_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    wait_until(
        "B refuses the revoked token",
        Duration::from_secs(10),
        async || {
            orgs_on_b
                .get_integration(credd::pb::GetIntegrationRequest {
                    org_id: shop.id.clone(),
                })
                .await
                .is_err_and(|s| s.code() == Code::Unauthenticated)
        },
    )
    .await;
    assert_code(
        tokens
            .revoke_caller_token(RevokeCallerTokenRequest { id: inside_id })
            .await,
        Code::FailedPrecondition,
    );

    // An org named by a token is deleted: the token keeps its other orgs.
    let both = tokens
        .create_caller_token(create(
            "both",
            &["orgs:read"],
            vec![shop.id.clone(), other.id.clone()],
        ))
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    a.delete_org(&other.id).await;
    let mut orgs = OrgsClient::new(a.channel_with(Some(&both)));
    wait_until("the new token works", Duration::from_secs(10), async || {
        orgs.get_integration(credd::pb::GetIntegrationRequest {
            org_id: shop.id.clone(),
        })
        .await
        .is_ok()
    })
    .await;
    assert_code(
        orgs.get_integration(credd::pb::GetIntegrationRequest {
            org_id: other.id.clone(),
        })
        .await,
        Code::NotFound,
    );
    let listed = orgs
        .list_orgs(credd::pb::ListOrgsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .orgs;
    assert_eq!(
        listed.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        std::slice::from_ref(&shop.id)
    );
}

both_backends!(
    resolve_login_checks_host_client_and_redirect_together,
    caller_tokens_over_grpc_are_shown_once_scoped_and_revoked_everywhere,
);

through_pgbouncer!(
    caller_tokens_over_grpc_are_shown_once_scoped_and_revoked_everywhere: true,
);
