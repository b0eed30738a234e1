//! Callers and scopes: every RPC of every service against every kind of token.

use std::{collections::BTreeMap, time::Duration};

use credd::{
    domain::caller::{Actor, Scope, Scopes},
    pb::{CreateOrgRequest, ListOrgsRequest, VerifyClientSecretRequest, orgs_client::OrgsClient},
    service::{SystemClock, callers::TokenService},
    store::Store,
};
use prost::Message as _;
use tonic::{Code, codegen::http::uri::PathAndQuery};

use crate::helpers::{Backend, TestApp, assert_code, spawn_app};

/// What the test expects of each RPC, written here independently of the server's
/// table. An RPC the server gains without a line here fails the test.
fn expected_scope(service: &str, method: &str) -> Option<Scope> {
    Some(match (service, method) {
        ("credd.v1.Orgs", "GetOrg" | "ListOrgs" | "GetIntegration") => Scope::OrgsRead,
        ("credd.v1.Orgs", "CreateOrg" | "UpdateOrg" | "DeleteOrg") => Scope::OrgsWrite,
        ("credd.v1.ClientSecrets", "VerifyClientSecret") => Scope::SecretsVerify,
        ("credd.v1.ClientSecrets", _) => Scope::SecretsWrite,
        (
            "credd.v1.AppRegistrations",
            "CreateAppRegistration" | "UpdateAppRegistration" | "DeleteAppRegistration",
        ) => Scope::AppsWrite,
        ("credd.v1.AppRegistrations", _) => Scope::AppsRead,
        ("credd.v1.Audit", "ListAuditEvents") => Scope::AuditRead,
        _ => return None,
    })
}

/// Every RPC of every credd service, read from the descriptors credd serves.
fn every_rpc() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(credd::pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "credd.v1") {
        for service in &file.service {
            for method in &service.method {
                rpcs.push((
                    format!("credd.v1.{}", service.name()),
                    method.name().to_owned(),
                ));
            }
        }
    }
    assert!(rpcs.len() >= 20, "found only {rpcs:?}");
    rpcs
}

/// Calls `/service/method` with an empty message as `token` and answers the code.
async fn call(app: &TestApp, service: &str, method: &str, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(app.channel_with(token));
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/{service}/{method}")).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

pub async fn tokens_of(app: &TestApp) -> (Store, TokenService) {
    let store = Store::connect(&app.database_url).await.unwrap();
    (
        store.clone(),
        TokenService::new(store, std::sync::Arc::new(SystemClock)),
    )
}

async fn create_token(
    tokens: &TokenService,
    name: &str,
    scopes: &[Scope],
    expires_in: Option<chrono::Duration>,
) -> String {
    let (_, token) = tokens
        .create(
            &Actor::cli(),
            name,
            Scopes::of(scopes.iter().copied()),
            expires_in,
        )
        .await
        .unwrap();
    token.reveal().to_owned()
}

/// What a caller should get from an RPC that needs a given scope.
type Expectation = Box<dyn Fn(Option<Scope>) -> Outcome>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unauthenticated,
    PermissionDenied,
    Allowed,
}

async fn every_rpc_needs_exactly_its_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    let (store, tokens) = tokens_of(&app).await;
    let mut callers: Vec<(String, Option<String>, Expectation)> = Vec::new();
    callers.push((
        "no token".into(),
        None,
        Box::new(|_| Outcome::Unauthenticated),
    ));
    let unknown = credd::domain::caller::generate_token();
    callers.push((
        "unknown token".into(),
        Some(unknown.reveal().to_owned()),
        Box::new(|_| Outcome::Unauthenticated),
    ));
    let expired = create_token(
        &tokens,
        "expired",
        &[Scope::Admin],
        Some(chrono::Duration::seconds(-1)),
    )
    .await;
    callers.push((
        "expired token".into(),
        Some(expired),
        Box::new(|_| Outcome::Unauthenticated),
    ));
    let revoked = create_token(&tokens, "revoked", &[Scope::Admin], None).await;
    tokens.revoke(&Actor::cli(), "revoked").await.unwrap();
    callers.push((
        "revoked token".into(),
        Some(revoked),
        Box::new(|_| Outcome::Unauthenticated),
    ));
    for scope in Scope::ALL {
        let token = create_token(&tokens, &scope.as_str().replace(':', "-"), &[scope], None).await;
        callers.push((
            format!("{} token", scope.as_str()),
            Some(token),
            Box::new(move |needed| match needed {
                Some(needed) if scope == Scope::Admin || scope == needed => Outcome::Allowed,
                _ => Outcome::PermissionDenied,
            }),
        ));
    }
    app.authenticator.reload(&store).await.unwrap();

    let mut failures = Vec::new();
    for (service, method) in every_rpc() {
        let needed = expected_scope(&service, &method);
        if needed.is_none() {
            failures.push(format!(
                "{service}/{method} has no expected scope in this test"
            ));
        }
        for (who, token, expect) in &callers {
            let code = call(&app, &service, &method, token.as_deref()).await;
            let outcome = match code {
                Code::Unauthenticated => Outcome::Unauthenticated,
                Code::PermissionDenied => Outcome::PermissionDenied,
                _ => Outcome::Allowed,
            };
            if outcome != expect(needed) {
                failures.push(format!(
                    "{service}/{method} as {who}: got {code:?}, expected {:?}",
                    expect(needed)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn a_gateway_token_verifies_and_checks_redirects_and_nothing_else(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let (store, tokens) = tokens_of(&app).await;
    let gateway = create_token(
        &tokens,
        "edge-gateway",
        &[Scope::SecretsVerify, Scope::AppsRead],
        None,
    )
    .await;
    app.authenticator.reload(&store).await.unwrap();
    let org = app
        .orgs
        .create_org(CreateOrgRequest {
            name: "Acme".into(),
            main_website: "https://acme.example".into(),
            custom_domain: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let channel = app.channel_with(Some(&gateway));
    let mut secrets = credd::pb::client_secrets_client::ClientSecretsClient::new(channel.clone());
    let answer = secrets
        .verify_client_secret(VerifyClientSecretRequest {
            client_id: org.client_id.clone(),
            client_secret: "x".repeat(40),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.valid);
    let mut apps =
        credd::pb::app_registrations_client::AppRegistrationsClient::new(channel.clone());
    apps.check_redirect_uri(credd::pb::CheckRedirectUriRequest {
        client_id: org.client_id,
        redirect_uri: "https://a.example/cb".into(),
    })
    .await
    .unwrap();
    let mut orgs = OrgsClient::new(channel);
    assert_code(
        orgs.list_orgs(ListOrgsRequest::default()).await,
        Code::PermissionDenied,
    );
    assert_code(
        secrets
            .generate_client_secret(credd::pb::GenerateClientSecretRequest {
                org_id: org.id,
                description: String::new(),
            })
            .await,
        Code::PermissionDenied,
    );
}

async fn a_revoked_token_stops_working_within_seconds_without_a_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_store, tokens) = tokens_of(&app).await;
    let token = create_token(&tokens, "short-lived", &[Scope::OrgsRead], None).await;
    let mut orgs = OrgsClient::new(app.channel_with(Some(&token)));
    // The running server picks up the new token by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while orgs.list_orgs(ListOrgsRequest::default()).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "a new token was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Revoked by the command line, beside the database, as an operator would.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_credd"))
        .args(["token", "revoke", "short-lived"])
        .env("CREDD_DATABASE_URL", &app.database_url)
        .env("CREDD_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let revoked_at = std::time::Instant::now();
    loop {
        match orgs.list_orgs(ListOrgsRequest::default()).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            _ => assert!(
                revoked_at.elapsed() < Duration::from_secs(5),
                "revocation took more than 5 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn the_token_commands_print_a_token_once_and_never_list_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let credd = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_credd"))
            .args(args)
            .env("CREDD_DATABASE_URL", &app.database_url)
            .env("CREDD_LOG", "info")
            .output()
            .unwrap()
    };
    let created = credd(&[
        "token",
        "create",
        "--name",
        "edge",
        "--scope",
        "secrets:verify",
        "--scope",
        "apps:read",
        "--expires-in",
        "90d",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8(created.stdout).unwrap();
    let token = stdout.lines().last().unwrap().to_owned();
    assert!(
        token.starts_with("credd_ct_") && token.len() == 58,
        "{token}"
    );
    assert!(
        !String::from_utf8_lossy(&created.stderr).contains(&token[10..40]),
        "the token stays out of the logs"
    );

    let listed = credd(&["token", "list"]);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listing.contains("edge") && listing.contains("secrets:verify apps:read"),
        "{listing}"
    );
    assert!(
        !listing.contains(&token[10..40]),
        "list never shows a token"
    );

    let duplicate = credd(&["token", "create", "--name", "edge", "--scope", "admin"]);
    assert!(!duplicate.status.success());
    let bad_scope = credd(&["token", "create", "--name", "x", "--scope", "orgs:delete"]);
    assert!(!bad_scope.status.success());
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("unknown scope"));

    // The token works against the running server once it reloads.
    app.authenticator
        .reload(&Store::connect(&app.database_url).await.unwrap())
        .await
        .unwrap();
    let mut secrets =
        credd::pb::client_secrets_client::ClientSecretsClient::new(app.channel_with(Some(&token)));
    secrets
        .verify_client_secret(VerifyClientSecretRequest {
            client_id: "0".repeat(32),
            client_secret: "x".into(),
        })
        .await
        .unwrap();

    assert!(credd(&["token", "revoke", "edge"]).status.success());
    assert!(
        !credd(&["token", "revoke", "edge"]).status.success(),
        "revoking twice is an error"
    );
    let listing = String::from_utf8(credd(&["token", "list"]).stdout).unwrap();
    let row: BTreeMap<_, _> = listing
        .lines()
        .skip(1)
        .map(|l| {
            (
                l.split_whitespace().next().unwrap().to_owned(),
                l.to_owned(),
            )
        })
        .collect();
    assert!(
        row["edge"].split_whitespace().last().unwrap() != "-",
        "the revoke time is listed: {listing}"
    );
}

both_backends!(
    every_rpc_needs_exactly_its_scope,
    a_gateway_token_verifies_and_checks_redirects_and_nothing_else,
    a_revoked_token_stops_working_within_seconds_without_a_restart,
    the_token_commands_print_a_token_once_and_never_list_it,
);
