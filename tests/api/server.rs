//! The server around the services: caller tokens, health, reflection, shutdown.

use credd::pb::{ListOrgsRequest, orgs_client::OrgsClient};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

use crate::{
    callers::{call, every_rpc},
    helpers::{Backend, TOKEN, assert_code, spawn_app},
};

const CREDD_SERVICES: [&str; 4] = [
    "credd.v1.Orgs",
    "credd.v1.ClientSecrets",
    "credd.v1.AppRegistrations",
    "credd.v1.Audit",
];

async fn every_credd_rpc_needs_a_valid_bearer_token(backend: Backend) {
    let app = spawn_app(backend).await;
    for token in [
        None,
        Some("wrong-token-0123456789abcdef0123456789"),
        Some(&TOKEN[1..]),
    ] {
        for rpc in every_rpc() {
            assert_eq!(
                call(&app, &rpc, token).await,
                Code::Unauthenticated,
                "{rpc} with {token:?}"
            );
        }
    }
    // A raw header without the Bearer scheme is refused too.
    let mut request = tonic::Request::new(ListOrgsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", TOKEN.parse().unwrap());
    assert_code(
        OrgsClient::new(app.channel.clone())
            .list_orgs(request)
            .await,
        Code::Unauthenticated,
    );

    // The right token passes.
    OrgsClient::new(app.channel_with(Some(TOKEN)))
        .list_orgs(ListOrgsRequest::default())
        .await
        .unwrap();
}

async fn health_reports_serving_for_every_service_without_a_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in std::iter::once("").chain(CREDD_SERVICES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|err| panic!("health of {service:?}: {err:?}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    assert_code(
        health
            .check(HealthCheckRequest {
                service: "credd.v1.Nope".into(),
            })
            .await,
        Code::NotFound,
    );
}

async fn reflection_lists_every_service_over_v1_and_v1alpha(backend: Backend) {
    let app = spawn_app(backend).await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in CREDD_SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(
            names.iter().any(|n| n == expected),
            "v1 reflection lacks {expected}: {names:?}"
        );
    }

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "credd.v1.ClientSecrets".into(),
            ),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

async fn stopping_the_server_ends_run_until_cleanly(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.orgs
        .list_orgs(ListOrgsRequest::default())
        .await
        .unwrap();
    app.stop().await.expect("a clean stop");
    assert!(
        OrgsClient::new(app.channel_with(Some(TOKEN)))
            .list_orgs(ListOrgsRequest::default())
            .await
            .is_err(),
        "the server no longer answers"
    );
}

both_backends!(
    every_credd_rpc_needs_a_valid_bearer_token,
    health_reports_serving_for_every_service_without_a_token,
    reflection_lists_every_service_over_v1_and_v1alpha,
    stopping_the_server_ends_run_until_cleanly,
);
