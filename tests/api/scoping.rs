//! Org-scoped caller tokens: every RPC × every scope × a token limited to org A
//! or reaching every org × a request about org A, about org B (which exists but
//! the limited token does not reach) and about an org that does not exist.
//!
//! Each request is built from the descriptors credd serves: the fields that name
//! an org or something of one (`org_id`, `id`, `client_id`, `secret_id`,
//! `org_ids`, `host`, the `org` / `app_registration` of an update) are set to the
//! target's, so that an RPC the server gains is covered without a line here.

use std::collections::BTreeMap;

use credd::{
    domain::{
        caller::{Actor, Caller, Scope, Scopes},
        ids::OrgId,
    },
    pb::{
        CreateAppRegistrationRequest, Platform, ResolveLoginRequest, VerifyClientSecretRequest,
        gateway_client::GatewayClient,
    },
};
use prost::Message as _;
use tonic::{Code, codegen::http::uri::PathAndQuery};

use crate::{
    callers::{every_rpc, server_streaming, tokens_of},
    helpers::{Backend, TestApp, spawn_app},
};

/// What a request can be about.
#[derive(Debug, Clone)]
struct Target {
    org_id: String,
    client_id: String,
    secret_id: String,
    app_id: String,
    token_id: String,
}

impl Target {
    /// An org that does not exist, with things that do not exist.
    fn unknown() -> Self {
        Target {
            org_id: OrgId::generate().into_string(),
            client_id: "0123456789abcdef0123456789abcdef".into(),
            secret_id: uuid::Uuid::now_v7().to_string(),
            app_id: uuid::Uuid::now_v7().to_string(),
            token_id: uuid::Uuid::now_v7().to_string(),
        }
    }
}

/// A fresh web app of `org_id`, its id.
async fn new_app(app: &TestApp, org_id: &str) -> String {
    app.apps
        .clone()
        .create_app_registration(CreateAppRegistrationRequest {
            org_id: org_id.into(),
            name: "web".into(),
            platform: Platform::Web.into(),
            callback_url: format!("https://www.example.net/cb/{}", uuid::Uuid::new_v4()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// An org with an active secret, a web app and a caller token limited to it.
async fn target(app: &TestApp, name: &str) -> Target {
    let org = app
        .create_org_with(name, &format!("https://{name}.example"), "")
        .await;
    let (secret, _) = app.generate_and_activate(&org.id).await;
    let app_id = new_app(app, &org.id).await;
    let (_, tokens) = tokens_of(app).await;
    let (token, _) = tokens
        .create_for(
            &Actor::cli(),
            &Caller::bootstrap(),
            &format!("{name}-token"),
            Scopes::of([Scope::OrgsRead]),
            vec![OrgId::from_stored(org.id.clone())],
            None,
        )
        .await
        .unwrap();
    Target {
        org_id: org.id,
        client_id: org.client_id,
        secret_id: secret.id,
        app_id,
        token_id: token.id.into_string(),
    }
}

/// A message's bytes, written by hand from the descriptor.
#[derive(Debug, Clone, Default, PartialEq)]
struct Raw(Vec<u8>);

impl prost::Message for Raw {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

fn put_len_delimited(out: &mut Vec<u8>, number: i32, bytes: &[u8]) {
    prost::encoding::encode_key(
        number as u32,
        prost::encoding::WireType::LengthDelimited,
        out,
    );
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The request of `rpc` ("credd.v1.Service/Method") about `target`.
fn request_about(rpc: &str, target: &Target) -> Vec<u8> {
    let set = prost_types::FileDescriptorSet::decode(credd::pb::FILE_DESCRIPTOR_SET).unwrap();
    let (service_name, method_name) = rpc.trim_start_matches("credd.v1.").split_once('/').unwrap();
    let messages: BTreeMap<String, &prost_types::DescriptorProto> = set
        .file
        .iter()
        .filter(|f| f.package() == "credd.v1")
        .flat_map(|f| f.message_type.iter())
        .map(|m| (format!(".credd.v1.{}", m.name()), m))
        .collect();
    let method = set
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .find(|s| s.name() == service_name)
        .and_then(|s| s.method.iter().find(|m| m.name() == method_name))
        .unwrap();
    let input = messages[method.input_type()];
    encode(input, service_name, target, &messages)
}

fn encode(
    message: &prost_types::DescriptorProto,
    service: &str,
    target: &Target,
    messages: &BTreeMap<String, &prost_types::DescriptorProto>,
) -> Vec<u8> {
    use prost_types::field_descriptor_proto::Type;
    let mut out = Vec::new();
    let mut oneofs_set = std::collections::HashSet::new();
    // Within a oneof, one field: the client ID before an id (GetOrg by client ID
    // is allowed to `gateway` as well as to `orgs:read`).
    let mut fields: Vec<&prost_types::FieldDescriptorProto> = message.field.iter().collect();
    fields.sort_by_key(|f| match f.name() {
        "client_id" => 0,
        "secret_id" => 1,
        _ => 2,
    });
    for field in fields {
        let value = match (field.name(), field.r#type()) {
            ("org_id" | "org_ids", Type::String) => Some(target.org_id.clone()),
            ("client_id", Type::String) => Some(target.client_id.clone()),
            ("secret_id", Type::String) => Some(target.secret_id.clone()),
            ("host", Type::String) => Some("login.credd.local".to_owned()),
            ("id", Type::String) => Some(match service {
                "Orgs" => target.org_id.clone(),
                "AppRegistrations" => target.app_id.clone(),
                "CallerTokens" => target.token_id.clone(),
                _ => continue,
            }),
            (_, Type::Message) => {
                let nested = match field.type_name() {
                    ".credd.v1.Org" | ".credd.v1.AppRegistration" => messages[field.type_name()],
                    _ => continue,
                };
                let service = if field.type_name() == ".credd.v1.Org" {
                    "Orgs"
                } else {
                    "AppRegistrations"
                };
                let mut only_id = (*nested).clone();
                only_id.field.retain(|f| f.name() == "id");
                let bytes = encode(&only_id, service, target, messages);
                put_len_delimited(&mut out, field.number(), &bytes);
                continue;
            }
            _ => None,
        };
        let Some(value) = value else { continue };
        if let Some(oneof) = field.oneof_index
            && !oneofs_set.insert(oneof)
        {
            continue;
        }
        put_len_delimited(&mut out, field.number(), value.as_bytes());
    }
    out
}

async fn call(app: &TestApp, rpc: &str, token: &str, body: Vec<u8>) -> Code {
    let mut grpc = tonic::client::Grpc::new(app.channel_with(Some(token)));
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/{rpc}")).unwrap();
    let codec = tonic_prost::ProstCodec::<Raw, ()>::default();
    if server_streaming(rpc) {
        // A watch answers its headers at once and then follows: its code is
        // whether it started.
        return match grpc
            .server_streaming(tonic::Request::new(Raw(body)), path, codec)
            .await
        {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
    }
    match grpc
        .unary(tonic::Request::new(Raw(body)), path, codec)
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// What a caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    PermissionDenied,
    /// Past scope and org, the handler answered (a result or a clean refusal of
    /// the request's content).
    Answered,
}

fn outcome(code: Code) -> Option<Outcome> {
    match code {
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

/// RPCs that answer an org out of reach as if nothing were there (`valid =
/// false`, `allowed = false`, a refusal), and lists that name no org.
const ANSWERED_AS_UNKNOWN: [&str; 5] = [
    "credd.v1.ClientSecrets/VerifyClientSecret",
    "credd.v1.AppRegistrations/CheckRedirectUri",
    "credd.v1.Gateway/ResolveLogin",
    "credd.v1.Orgs/ListOrgs",
    "credd.v1.CallerTokens/ListCallerTokens",
];

async fn every_rpc_every_scope_every_org(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = target(&app, "alpha").await;
    let b = target(&app, "beta").await;
    let unknown = Target::unknown();
    let (store, tokens) = tokens_of(&app).await;
    // For each scope: a token limited to org A, and one that reaches every org.
    let mut callers = Vec::new();
    for scope in Scope::ALL {
        for limited in [true, false] {
            let name = format!(
                "{}-{}",
                scope.as_str().replace(':', "-"),
                if limited { "a" } else { "all" }
            );
            let orgs = if limited {
                vec![OrgId::from_stored(a.org_id.clone())]
            } else {
                Vec::new()
            };
            let (_, token) = tokens
                .create_for(
                    &Actor::cli(),
                    &Caller::bootstrap(),
                    &name,
                    Scopes::of([scope]),
                    orgs,
                    None,
                )
                .await
                .unwrap();
            callers.push((scope, limited, token.reveal().to_owned()));
        }
    }
    app.authenticator.reload(&store).await.unwrap();
    let allowed = |scope: Scope, rpc: &str| {
        scope == Scope::Admin
            || credd::grpc::auth::required_scopes(&format!("/{rpc}"))
                .is_some_and(|scopes| Scopes::of([scope]).allow_any(scopes))
    };

    let mut failures = Vec::new();
    let mut cells = 0;
    // Deleting org A or B goes last: everything else is asked about live orgs.
    let mut rpcs = every_rpc();
    rpcs.sort_by_key(|rpc| rpc == "credd.v1.Orgs/DeleteOrg");
    let (mut a, mut b) = (a, b);
    for rpc in rpcs {
        for (scope, limited, token) in &callers {
            // Each deletion of an app gets a fresh one to delete.
            if rpc == "credd.v1.AppRegistrations/DeleteAppRegistration" {
                a.app_id = new_app(&app, &a.org_id).await;
                b.app_id = new_app(&app, &b.org_id).await;
            }
            for (about, which) in [(&a, "org A"), (&b, "org B"), (&unknown, "an unknown org")] {
                let expected = if !allowed(*scope, &rpc) {
                    Outcome::PermissionDenied
                } else if *limited && rpc == "credd.v1.Orgs/CreateOrg" {
                    // A token limited to orgs creates none.
                    Outcome::PermissionDenied
                } else if !*limited
                    || which == "org A"
                    || ANSWERED_AS_UNKNOWN.contains(&rpc.as_str())
                {
                    Outcome::Answered
                } else {
                    Outcome::PermissionDenied
                };
                let code = call(&app, &rpc, token, request_about(&rpc, about)).await;
                cells += 1;
                if outcome(code) != Some(expected) {
                    failures.push(format!(
                        "{rpc} as {} token{} about {which}: got {code:?}, expected {expected:?}",
                        scope.as_str(),
                        if *limited { " limited to org A" } else { "" },
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What "answered as unknown" answers: a token limited to org A cannot verify B's
/// secret, see B's redirect or resolve a login for B — the same `false` as for a
/// client that does not exist — while A's work.
async fn out_of_reach_answers_the_same_as_unknown(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app
        .create_org_with("Alpha", "https://alpha.example", "login.alpha.example")
        .await;
    let b = app
        .create_org_with("Beta", "https://beta.example", "login.beta.example")
        .await;
    let (_, a_secret) = app.generate_and_activate(&a.id).await;
    let (_, b_secret) = app.generate_and_activate(&b.id).await;
    for org in [&a, &b] {
        app.apps
            .clone()
            .create_app_registration(CreateAppRegistrationRequest {
                org_id: org.id.clone(),
                name: "web".into(),
                platform: Platform::Web.into(),
                callback_url: format!("https://www.{}/cb", org.custom_domain),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let (store, tokens) = tokens_of(&app).await;
    let (_, gateway) = tokens
        .create_for(
            &Actor::cli(),
            &Caller::bootstrap(),
            "gateway-a",
            Scopes::of([Scope::Gateway]),
            vec![OrgId::from_stored(a.id.clone())],
            None,
        )
        .await
        .unwrap();
    app.authenticator.reload(&store).await.unwrap();
    let channel = app.channel_with(Some(gateway.reveal()));
    let secrets = credd::pb::client_secrets_client::ClientSecretsClient::new(channel.clone());
    let verify = async |client_id: &str, secret: &str| {
        secrets
            .clone()
            .verify_client_secret(VerifyClientSecretRequest {
                client_id: client_id.into(),
                client_secret: secret.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .valid
    };
    assert!(verify(&a.client_id, &a_secret).await);
    assert!(!verify(&b.client_id, &b_secret).await, "B's right secret");
    let gateway = GatewayClient::new(channel);
    let resolve = async |host: &str, org: &credd::pb::Org| {
        gateway
            .clone()
            .resolve_login(ResolveLoginRequest {
                host: host.into(),
                client_id: org.client_id.clone(),
                redirect_uri: format!("https://www.{}/cb", org.custom_domain),
            })
            .await
            .unwrap()
            .into_inner()
    };
    let allowed = resolve("login.alpha.example", &a).await;
    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(allowed.org.unwrap().id, a.id);
    let refused = resolve("login.credd.local", &b).await;
    assert!(!refused.allowed);
    assert_eq!(
        refused.reason(),
        credd::pb::LoginRefusal::ClientUnknown,
        "B's client is unknown to A's token"
    );
    let refused = resolve("login.beta.example", &a).await;
    assert_eq!(
        refused.reason(),
        credd::pb::LoginRefusal::HostUnknown,
        "B's host is unknown to A's token"
    );
}

/// A token limited to one org, with `scope`, made through the store and loaded.
async fn limited_token(app: &TestApp, name: &str, scope: Scope, org_id: &str) -> String {
    let (store, tokens) = tokens_of(app).await;
    let (_, token) = tokens
        .create_for(
            &Actor::cli(),
            &Caller::bootstrap(),
            name,
            Scopes::of([scope]),
            vec![OrgId::from_stored(org_id.to_owned())],
            None,
        )
        .await
        .unwrap();
    app.authenticator.reload(&store).await.unwrap();
    token.reveal().to_owned()
}

/// ResolveLogin on the default login domain for `org`'s client and `callback`.
async fn default_domain_login(
    channel: &crate::helpers::Authed,
    org: &credd::pb::Org,
    callback: &str,
) -> credd::pb::ResolveLoginResponse {
    GatewayClient::new(channel.clone())
        .resolve_login(ResolveLoginRequest {
            host: "login.credd.local".into(),
            client_id: org.client_id.clone(),
            redirect_uri: callback.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The code GetOrg answers for `lookup`.
async fn get_org_code(
    channel: &crate::helpers::Authed,
    lookup: credd::pb::get_org_request::Lookup,
) -> Code {
    credd::pb::orgs_client::OrgsClient::new(channel.clone())
        .get_org(credd::pb::GetOrgRequest {
            lookup: Some(lookup),
        })
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

/// The paths that answer from memory, × {generated, imported secret} × {cache
/// cold, warmed by a caller that reaches every org} × {a token limited to org A,
/// the bootstrap token} × {org A, org B}: a verdict, a login or an org is given
/// only to a caller that reaches its org, however warm memory is.
async fn memory_answers_only_within_reach(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut failures = Vec::new();
    for imported in [false, true] {
        for warm in [false, true] {
            let kind = if imported { "imported" } else { "generated" };
            let mut orgs = Vec::new();
            for name in ["alpha", "beta"] {
                let org = app
                    .create_org_with(name, &format!("https://{name}.example"), "")
                    .await;
                let (_, secret) = if imported {
                    app.import_and_activate(&org.id).await
                } else {
                    app.generate_and_activate(&org.id).await
                };
                let callback = format!("https://www.{name}.example/cb");
                app.apps
                    .clone()
                    .create_app_registration(CreateAppRegistrationRequest {
                        org_id: org.id.clone(),
                        name: "web".into(),
                        platform: Platform::Web.into(),
                        callback_url: callback.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                orgs.push((org, secret, callback));
            }
            let limited = limited_token(
                &app,
                &format!("gw-{kind}-{warm}"),
                Scope::Gateway,
                &orgs[0].0.id,
            )
            .await;
            let callers = [
                ("limited to A", app.channel_with(Some(&limited))),
                ("every org", app.channel_with(Some(crate::helpers::TOKEN))),
            ];
            if warm {
                for (org, secret, callback) in &orgs {
                    assert!(app.verify(&org.client_id, secret).await.unwrap());
                    let everyone = app.channel_with(Some(crate::helpers::TOKEN));
                    assert!(default_domain_login(&everyone, org, callback).await.allowed);
                }
            }
            for (who, channel) in &callers {
                for (which, (org, secret, callback)) in ["A", "B"].iter().zip(&orgs) {
                    let expect = *who == "every org" || *which == "A";
                    let cell = format!(
                        "{kind}, {}, caller {who}, org {which}",
                        if warm { "warm" } else { "cold" }
                    );
                    let verdict =
                        credd::pb::client_secrets_client::ClientSecretsClient::new(channel.clone())
                            .verify_client_secret(VerifyClientSecretRequest {
                                client_id: org.client_id.clone(),
                                client_secret: secret.clone(),
                            })
                            .await
                            .unwrap()
                            .into_inner();
                    if verdict.valid != expect || (!expect && !verdict.org_id.is_empty()) {
                        failures.push(format!("VerifyClientSecret {cell}: {verdict:?}"));
                    }
                    let login = default_domain_login(channel, org, callback).await;
                    if login.allowed != expect || (!expect && login.org.is_some()) {
                        failures.push(format!("ResolveLogin {cell}: {login:?}"));
                    }
                    let check = credd::pb::app_registrations_client::AppRegistrationsClient::new(
                        channel.clone(),
                    )
                    .check_redirect_uri(credd::pb::CheckRedirectUriRequest {
                        client_id: org.client_id.clone(),
                        redirect_uri: callback.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                    if check.allowed != expect {
                        failures.push(format!("CheckRedirectUri {cell}: {check:?}"));
                    }
                    let code = get_org_code(
                        channel,
                        credd::pb::get_org_request::Lookup::ClientId(org.client_id.clone()),
                    )
                    .await;
                    let want = if expect {
                        Code::Ok
                    } else {
                        Code::PermissionDenied
                    };
                    if code != want {
                        failures.push(format!("GetOrg by client_id {cell}: {code:?}"));
                    }
                    // The gateway scope looks orgs up by client ID or domain only:
                    // by id it is refused even for its own org.
                    if *who == "limited to A" {
                        let code = get_org_code(
                            channel,
                            credd::pb::get_org_request::Lookup::Id(org.id.clone()),
                        )
                        .await;
                        if code != Code::PermissionDenied {
                            failures.push(format!("GetOrg by id as gateway {cell}: {code:?}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "answered out of reach:\n{}",
        failures.join("\n")
    );
}

/// A token limited to org A sends wrong secrets for org C's client until its
/// throttle answers RESOURCE_EXHAUSTED; C's own bucket is untouched, so C's
/// rightful (cold, never verified) secret still verifies for its own gateway.
async fn a_tenant_cannot_spend_another_tenants_throttle(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |s| {
        s.verify_throttle_rate = 0.001;
        s.verify_throttle_burst = 3;
        s.verify_cache_ttl = std::time::Duration::ZERO;
    })
    .await;
    let a = app
        .create_org_with("Alpha", "https://alpha.example", "")
        .await;
    let c = app
        .create_org_with("Gamma", "https://gamma.example", "")
        .await;
    let (_, c_secret) = app.import_and_activate(&c.id).await;
    let outsider = limited_token(&app, "verify-a", Scope::SecretsVerify, &a.id).await;
    let mut secrets = credd::pb::client_secrets_client::ClientSecretsClient::new(
        app.channel_with(Some(&outsider)),
    );
    let mut exhausted = 0;
    for _ in 0..10 {
        match secrets
            .verify_client_secret(VerifyClientSecretRequest {
                client_id: c.client_id.clone(),
                client_secret: crate::helpers::wrong_import_of(&c_secret),
            })
            .await
        {
            Ok(answer) => assert!(!answer.into_inner().valid),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                exhausted += 1;
            }
        }
    }
    assert!(exhausted >= 7, "the outsider is throttled: {exhausted}");
    let c_gateway = limited_token(&app, "verify-c", Scope::SecretsVerify, &c.id).await;
    let valid = credd::pb::client_secrets_client::ClientSecretsClient::new(
        app.channel_with(Some(&c_gateway)),
    )
    .verify_client_secret(VerifyClientSecretRequest {
        client_id: c.client_id.clone(),
        client_secret: c_secret.clone(),
    })
    .await
    .expect("C's bucket is C's: not throttled by another tenant")
    .into_inner()
    .valid;
    assert!(valid);
}

both_backends!(
    every_rpc_every_scope_every_org,
    out_of_reach_answers_the_same_as_unknown,
    memory_answers_only_within_reach,
    a_tenant_cannot_spend_another_tenants_throttle
);

through_pgbouncer!(
    every_rpc_every_scope_every_org: false,
);
