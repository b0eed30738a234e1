//! Callers and scopes: every RPC of every service against every kind of token.

use std::{collections::BTreeMap, time::Duration};

use credd::{
    domain::caller::{Actor, Scope, Scopes},
    pb::{ListOrgsRequest, VerifyClientSecretRequest, orgs_client::OrgsClient},
    service::{SystemClock, callers::TokenService},
    store::Store,
};
use prost::Message as _;
use tonic::{Code, codegen::http::uri::PathAndQuery};

use crate::helpers::{Backend, TestApp, assert_code, spawn_app, wait_until};

/// The RPCs each scope allows, as README's "Callers and scopes" table lists them,
/// written out here rather than derived from the server's own grouping. `admin`
/// allows all of them (its line lists those only it allows); an RPC the server
/// gains without a line here fails the test.
const ALLOWED: [(&str, &[&str]); 10] = [
    (
        "orgs:read",
        &[
            "credd.v1.Orgs/GetOrg",
            "credd.v1.Orgs/ListOrgs",
            "credd.v1.Orgs/GetIntegration",
        ],
    ),
    (
        "orgs:write",
        &[
            "credd.v1.Orgs/CreateOrg",
            "credd.v1.Orgs/UpdateOrg",
            "credd.v1.Orgs/DeleteOrg",
        ],
    ),
    (
        "secrets:read",
        &["credd.v1.ClientSecrets/ListClientSecrets"],
    ),
    (
        "secrets:write",
        &[
            "credd.v1.ClientSecrets/GenerateClientSecret",
            "credd.v1.ClientSecrets/ImportClientSecret",
            "credd.v1.ClientSecrets/ActivateClientSecret",
            "credd.v1.ClientSecrets/RevokeClientSecret",
            "credd.v1.ClientSecrets/RotateClientSecret",
            "credd.v1.ClientSecrets/ListClientSecrets",
        ],
    ),
    (
        "secrets:verify",
        &["credd.v1.ClientSecrets/VerifyClientSecret"],
    ),
    (
        "apps:read",
        &[
            "credd.v1.AppRegistrations/GetAppRegistration",
            "credd.v1.AppRegistrations/ListAppRegistrations",
            "credd.v1.AppRegistrations/CheckRedirectUri",
            "credd.v1.AppRegistrations/RenderAssociationFiles",
        ],
    ),
    (
        "apps:write",
        &[
            "credd.v1.AppRegistrations/CreateAppRegistration",
            "credd.v1.AppRegistrations/UpdateAppRegistration",
            "credd.v1.AppRegistrations/DeleteAppRegistration",
        ],
    ),
    (
        "audit:read",
        &[
            "credd.v1.Audit/ListAuditEvents",
            "credd.v1.Audit/WatchAuditEvents",
        ],
    ),
    (
        "gateway",
        &[
            "credd.v1.ClientSecrets/VerifyClientSecret",
            "credd.v1.AppRegistrations/CheckRedirectUri",
            "credd.v1.Orgs/GetOrg",
            "credd.v1.Gateway/ResolveLogin",
        ],
    ),
    (
        "admin",
        &[
            "credd.v1.CallerTokens/CreateCallerToken",
            "credd.v1.CallerTokens/GetCallerToken",
            "credd.v1.CallerTokens/ListCallerTokens",
            "credd.v1.CallerTokens/RevokeCallerToken",
        ],
    ),
];

/// Whether a token of `scope` may call `rpc` ("service/method").
fn allows(scope: Scope, rpc: &str) -> bool {
    scope == Scope::Admin
        || ALLOWED
            .iter()
            .any(|(name, rpcs)| *name == scope.as_str() && rpcs.contains(&rpc))
}

/// Every RPC of every credd service ("credd.v1.Service/Method"), read from the
/// descriptors credd serves.
pub fn every_rpc() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(credd::pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "credd.v1") {
        for service in &file.service {
            for method in &service.method {
                rpcs.push(format!("credd.v1.{}/{}", service.name(), method.name()));
            }
        }
    }
    rpcs
}

/// Calls `rpc` ("service/method") with an empty message as `token` and answers the
/// code.
pub async fn call(app: &TestApp, rpc: &str, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(app.channel_with(token));
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/{rpc}")).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    if server_streaming(rpc) {
        // A watch answers its headers at once and then follows: its code is
        // whether it started.
        return match grpc
            .server_streaming(tonic::Request::new(()), path, codec)
            .await
        {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
    }
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Whether `rpc` ("service/method") streams its answers, per the descriptors.
pub fn server_streaming(rpc: &str) -> bool {
    let set = prost_types::FileDescriptorSet::decode(credd::pb::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == "credd.v1")
        .flat_map(|f| f.service.iter())
        .flat_map(|service| {
            service
                .method
                .iter()
                .map(move |m| (format!("credd.v1.{}/{}", service.name(), m.name()), m))
        })
        .any(|(name, method)| name == rpc && method.server_streaming())
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

/// What a caller gets from an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unauthenticated,
    PermissionDenied,
    /// Past authentication and scope, the handler answered the empty request
    /// (with a result or a clean refusal of its content).
    Answered,
}

impl Outcome {
    /// The outcome a code stands for; `None` for a code no caller should ever
    /// get for an empty request (INTERNAL, UNKNOWN, UNAVAILABLE, UNIMPLEMENTED...),
    /// which the test counts as a failure rather than as "allowed".
    fn of(code: Code) -> Option<Self> {
        match code {
            Code::Unauthenticated => Some(Outcome::Unauthenticated),
            Code::PermissionDenied => Some(Outcome::PermissionDenied),
            Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange => Some(Outcome::Answered),
            _ => None,
        }
    }
}

async fn every_rpc_needs_exactly_its_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    let rpcs = every_rpc();
    let mut listed: Vec<&str> = ALLOWED
        .iter()
        .flat_map(|(_, rpcs)| *rpcs)
        .copied()
        .collect();
    let mut served: Vec<&str> = rpcs.iter().map(String::as_str).collect();
    listed.sort_unstable();
    listed.dedup();
    served.sort_unstable();
    assert_eq!(
        served, listed,
        "the RPCs credd serves are exactly those the table lists"
    );
    let scopes: Vec<&str> = ALLOWED.iter().map(|(scope, _)| *scope).collect();
    assert_eq!(
        Scope::ALL.map(Scope::as_str).to_vec(),
        scopes,
        "every scope has a line in the table"
    );

    let (store, tokens) = tokens_of(&app).await;
    // Who calls, with what token, and the scope the token holds (none: refused).
    let mut callers: Vec<(String, Option<String>, Option<Scope>)> =
        vec![("no token".into(), None, None)];
    let unknown = credd::domain::caller::generate_token();
    callers.push((
        "unknown token".into(),
        Some(unknown.reveal().to_owned()),
        None,
    ));
    let expired = create_token(
        &tokens,
        "expired",
        &[Scope::Admin],
        Some(chrono::Duration::seconds(-1)),
    )
    .await;
    callers.push(("expired token".into(), Some(expired), None));
    let revoked = create_token(&tokens, "revoked", &[Scope::Admin], None).await;
    tokens.revoke(&Actor::cli(), "revoked").await.unwrap();
    callers.push(("revoked token".into(), Some(revoked), None));
    for scope in Scope::ALL {
        let token = create_token(&tokens, &scope.as_str().replace(':', "-"), &[scope], None).await;
        callers.push((
            format!("{} token", scope.as_str()),
            Some(token),
            Some(scope),
        ));
    }
    app.authenticator.reload(&store).await.unwrap();

    let mut failures = Vec::new();
    for rpc in &rpcs {
        for (who, token, scope) in &callers {
            let expected = match scope {
                None => Outcome::Unauthenticated,
                Some(scope) if allows(*scope, rpc) => Outcome::Answered,
                Some(_) => Outcome::PermissionDenied,
            };
            let code = call(&app, rpc, token.as_deref()).await;
            if Outcome::of(code) != Some(expected) {
                failures.push(format!(
                    "{rpc} as {who}: got {code:?}, expected {expected:?}"
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
    let app = spawn_app(backend).await;
    let (store, tokens) = tokens_of(&app).await;
    let gateway = create_token(
        &tokens,
        "edge-gateway",
        &[Scope::SecretsVerify, Scope::AppsRead],
        None,
    )
    .await;
    app.authenticator.reload(&store).await.unwrap();
    let org = app.create_org().await;
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
                ..Default::default()
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
    wait_until(
        "the running server accepts a new token",
        Duration::from_secs(10),
        async || orgs.list_orgs(ListOrgsRequest::default()).await.is_ok(),
    )
    .await;
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
    wait_until(
        "the running server refuses the revoked token (UNAUTHENTICATED)",
        Duration::from_secs(5),
        async || match orgs.list_orgs(ListOrgsRequest::default()).await {
            Ok(_) => false,
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                true
            }
        },
    )
    .await;
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

/// During a rolling deploy a newer credd may store a token with a scope this
/// version does not know. That token keeps the scopes this version knows, and the
/// reload of every other token goes on — a revocation made meanwhile is enforced.
async fn a_scope_from_a_newer_version_spoils_neither_its_token_nor_any_revocation(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let (store, tokens) = tokens_of(&app).await;
    let doomed = create_token(&tokens, "doomed", &[Scope::OrgsRead], None).await;
    let newer = create_token(&tokens, "from-newer", &[Scope::OrgsRead], None).await;
    app.authenticator.reload(&store).await.unwrap();
    assert_eq!(
        call(&app, "credd.v1.Orgs/ListOrgs", Some(&doomed)).await,
        Code::Ok
    );

    app.execute_sql(
        "UPDATE caller_tokens SET scopes = 'orgs:read billing:write' WHERE name = 'from-newer'",
    )
    .await
    .unwrap();
    tokens.revoke(&Actor::cli(), "doomed").await.unwrap();
    app.authenticator
        .reload(&store)
        .await
        .expect("one unknown scope does not fail the reload");

    assert_eq!(
        call(&app, "credd.v1.Orgs/ListOrgs", Some(&doomed)).await,
        Code::Unauthenticated,
        "the revocation is enforced"
    );
    assert_eq!(
        call(&app, "credd.v1.Orgs/ListOrgs", Some(&newer)).await,
        Code::Ok,
        "the known scope still applies"
    );
    assert_eq!(
        call(&app, "credd.v1.Orgs/CreateOrg", Some(&newer)).await,
        Code::PermissionDenied,
        "the unknown scope grants nothing"
    );
    let listed = tokens.list().await.unwrap();
    let from_newer = listed.iter().find(|t| t.name == "from-newer").unwrap();
    assert_eq!(from_newer.scopes, Scopes::of([Scope::OrgsRead]));
}

/// CreateCallerToken as `token` (a channel sending it).
async fn mint(
    app: &TestApp,
    token: &str,
    name: &str,
    org_ids: &[&str],
    ttl_seconds: Option<i64>,
) -> Result<credd::pb::CreateCallerTokenResponse, tonic::Status> {
    use credd::pb::create_caller_token_request::Expiration;
    credd::pb::caller_tokens_client::CallerTokensClient::new(app.channel_with(Some(token)))
        .create_caller_token(credd::pb::CreateCallerTokenRequest {
            name: name.into(),
            scopes: vec!["admin".into()],
            org_ids: org_ids.iter().map(|id| (*id).to_owned()).collect(),
            expiration: ttl_seconds
                .map(|seconds| Expiration::Ttl(prost_types::Duration { seconds, nanos: 0 })),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The events of `action` about `target_id`, through ListAuditEvents.
async fn events_about(app: &TestApp, action: &str, target_id: &str) -> Vec<credd::pb::AuditEvent> {
    credd::pb::audit_client::AuditClient::new(app.channel_with(Some(crate::helpers::TOKEN)))
        .list_audit_events(credd::pb::ListAuditEventsRequest {
            action: action.into(),
            target_id: target_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// An org-A admin with a 60 s lifetime mints a token asking for no end: the child
/// ends when its maker does, records it as `parent_id`, and a grandchild the same;
/// revoking the maker revokes both at once, and the audit trail names each step.
async fn a_token_never_outlives_its_maker_and_goes_with_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let maker = mint(&app, crate::helpers::TOKEN, "a-admin", &[&org.id], Some(60))
        .await
        .unwrap();
    let maker_token = maker.caller_token.unwrap();
    let maker_end = maker_token.expire_time.unwrap();
    let child = mint(&app, &maker.plaintext, "a-child", &[&org.id], None)
        .await
        .unwrap();
    let child_token = child.caller_token.unwrap();
    assert_eq!(
        child_token.expire_time,
        Some(maker_end),
        "capped at the maker's end"
    );
    assert_eq!(child_token.parent_id, maker_token.id);
    let longer = mint(&app, &maker.plaintext, "a-longer", &[&org.id], Some(86_400))
        .await
        .unwrap()
        .caller_token
        .unwrap();
    assert_eq!(
        longer.expire_time,
        Some(maker_end),
        "a longer ttl is capped too"
    );
    let grandchild = mint(&app, &child.plaintext, "a-grandchild", &[&org.id], None)
        .await
        .unwrap();
    assert_eq!(
        grandchild.caller_token.as_ref().unwrap().parent_id,
        child_token.id
    );
    let created = events_about(&app, "token.create", &child_token.id).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].caller, "a-admin", "the trail names the maker");
    assert!(
        created[0].details.contains(&maker_token.id),
        "{}",
        created[0].details
    );

    let works = async |token: &str| {
        OrgsClient::new(app.channel_with(Some(token)))
            .list_orgs(ListOrgsRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    };
    assert_eq!(works(&grandchild.plaintext).await, Ok(()));
    credd::pb::caller_tokens_client::CallerTokensClient::new(
        app.channel_with(Some(crate::helpers::TOKEN)),
    )
    .revoke_caller_token(credd::pb::RevokeCallerTokenRequest {
        id: maker_token.id.clone(),
    })
    .await
    .unwrap();
    for token in [&maker.plaintext, &child.plaintext, &grandchild.plaintext] {
        assert_eq!(works(token).await, Err(Code::Unauthenticated));
    }
    let revoked = events_about(&app, "token.revoke", &maker_token.id).await;
    assert_eq!(revoked.len(), 1);
    for id in [&child_token.id, &grandchild.caller_token.unwrap().id] {
        assert!(
            revoked[0].details.contains(id.as_str()),
            "{}",
            revoked[0].details
        );
    }
}

/// Names of credd's own actors are refused, and a name is taken only among the
/// tokens of the same org set: org B's admin can name a token as org A's did (and
/// so learns nothing about A's names from ALREADY_EXISTS).
async fn token_names_are_never_credds_and_unique_per_org_set(backend: Backend) {
    let app = spawn_app(backend).await;
    for reserved in [
        "credd",
        "bootstrap",
        "cli",
        "first-start",
        "unknown",
        "Credd",
    ] {
        let status = mint(&app, crate::helpers::TOKEN, reserved, &[], None)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{reserved}");
        assert_eq!(crate::helpers::violated_fields(&status), ["name"]);
    }
    let a = app
        .create_org_with("Alpha", "https://alpha.example", "")
        .await;
    let b = app
        .create_org_with("Beta", "https://beta.example", "")
        .await;
    let a_admin = mint(&app, crate::helpers::TOKEN, "a-admin", &[&a.id], None)
        .await
        .unwrap()
        .plaintext;
    let b_admin = mint(&app, crate::helpers::TOKEN, "b-admin", &[&b.id], None)
        .await
        .unwrap()
        .plaintext;
    mint(&app, &a_admin, "deploy", &[&a.id], None)
        .await
        .unwrap();
    mint(&app, &b_admin, "deploy", &[&b.id], None)
        .await
        .expect("another org set may use the same name");
    let status = mint(&app, &a_admin, "deploy", &[&a.id], None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
}

both_backends!(
    a_token_never_outlives_its_maker_and_goes_with_it,
    token_names_are_never_credds_and_unique_per_org_set,
    a_scope_from_a_newer_version_spoils_neither_its_token_nor_any_revocation,
    every_rpc_needs_exactly_its_scope,
    a_gateway_token_verifies_and_checks_redirects_and_nothing_else,
    a_revoked_token_stops_working_within_seconds_without_a_restart,
    the_token_commands_print_a_token_once_and_never_list_it,
);

/// CREDD_BOOTSTRAP_TOKEN_EXPIRE ends the standing admin credential: before it the
/// bootstrap token works, after it (on the server's clock) it is UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_token_stops_working_at_its_expiry() {
    let clock = std::sync::Arc::new(credd::service::ManualClock::new(chrono::Utc::now()));
    let expiry = credd::service::Clock::now(clock.as_ref()) + chrono::Duration::hours(1);
    let app = crate::helpers::spawn_app_with_clock_and(Backend::Sqlite, clock.clone(), |s| {
        s.bootstrap_token_expire = Some(expiry)
    })
    .await;
    assert_eq!(
        call(&app, "credd.v1.Orgs/ListOrgs", Some(crate::helpers::TOKEN)).await,
        Code::Ok
    );
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(
        call(&app, "credd.v1.Orgs/ListOrgs", Some(crate::helpers::TOKEN)).await,
        Code::Unauthenticated
    );
}

/// RFC 9110 §11.1: the authentication scheme is case-insensitive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app(Backend::Sqlite).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let mut request = tonic::Request::new(credd::pb::ListOrgsRequest::default());
        request.metadata_mut().insert(
            "authorization",
            format!("{scheme} {}", crate::helpers::TOKEN)
                .parse()
                .unwrap(),
        );
        credd::pb::orgs_client::OrgsClient::new(app.channel.clone())
            .list_orgs(request)
            .await
            .unwrap_or_else(|status| panic!("{scheme}: {status:?}"));
    }
}

/// A token made by `credd token create` beside a running server works on the very
/// next call: an unknown well-formed token makes the server reload (at most once a
/// second) before it answers UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_beside_the_server_works_at_once() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_store, tokens) = tokens_of(&app).await;
    let token = create_token(&tokens, "fresh", &[Scope::OrgsRead], None).await;
    assert_eq!(
        call(&app, "credd.v1.Orgs/ListOrgs", Some(&token)).await,
        Code::Ok,
        "no wait for the periodic reload"
    );
    let unknown = credd::domain::caller::generate_token();
    assert_eq!(
        call(&app, "credd.v1.Orgs/ListOrgs", Some(unknown.reveal())).await,
        Code::Unauthenticated,
        "an unknown token is still refused after the reload"
    );
}
