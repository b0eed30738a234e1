//! Traces reach an OpenTelemetry collector: an in-process OTLP receiver stands in
//! for one, and the real credd binary exports to it.

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use credd::pb::VerifyClientSecretRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

use crate::helpers::{
    Backend, Clients, TestDb, connect_when_up, credd_serve, free_port, wait_until,
};

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

const TOKEN: &str = "trace-test-token-0123456789abcdef0123456789";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

async fn a_verify_span_joins_the_callers_trace_and_carries_no_secret(backend: Backend) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let (_db, url) = TestDb::create(&backend).await;
    let port = free_port();
    let mut server = credd_serve(&url, port)
        .env("CREDD_BOOTSTRAP_TOKEN", TOKEN)
        .env("CREDD_OTLP_ENDPOINT", format!("http://{otlp_addr}"))
        .env("CREDD_LOG", "info")
        .env("CREDD_ARGON2_M_KIB", "64")
        .env("CREDD_ARGON2_T", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let channel = connect_when_up(port).await;
    let clients = Clients::new(channel, Some(TOKEN));
    let org = clients.create_org().await;
    // Imported: stored with argon2, so the verify shows the argon2 spans (a
    // generated secret is a digest compared in memory, with no child span).
    let (_, plaintext) = clients.import_and_activate(&org.id).await;
    let mut request = tonic::Request::new(VerifyClientSecretRequest {
        client_id: org.client_id.clone(),
        client_secret: plaintext.clone(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_ID}-01").parse().unwrap(),
    );
    assert!(
        clients
            .secrets
            .clone()
            .verify_client_secret(request)
            .await
            .unwrap()
            .into_inner()
            .valid
    );

    // SIGTERM flushes the batch exporter.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    wait_until(
        "credd stops on SIGTERM",
        Duration::from_secs(20),
        async || server.try_wait().unwrap().is_some(),
    )
    .await;

    let exports = receiver.0.lock().unwrap().clone();
    let resources: Vec<_> = exports
        .iter()
        .flat_map(|e| e.resource_spans.iter())
        .collect();
    assert!(!resources.is_empty(), "no spans were exported");
    let service_name = resources[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .map(|kv| format!("{:?}", kv.value));
    assert!(service_name.unwrap_or_default().contains("\"credd\""));
    let spans: Vec<_> = resources
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .collect();

    let verify = spans
        .iter()
        .find(|s| s.trace_id == hex(TRACE_ID) && s.parent_span_id == hex(PARENT_ID))
        .unwrap_or_else(|| {
            panic!(
                "no span joined the caller's trace: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(verify.name, "credd.v1.ClientSecrets/VerifyClientSecret");
    let attribute = |key: &str| {
        verify
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| format!("{:?}", kv.value))
    };
    assert!(
        attribute("caller")
            .unwrap_or_default()
            .contains("bootstrap"),
        "{:?}",
        verify.attributes
    );
    assert!(attribute("org_id").unwrap_or_default().contains(&org.id));
    assert!(attribute("rpc.grpc.status_code").is_some());
    let children: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == hex(TRACE_ID) && s.parent_span_id == verify.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("argon2")),
        "argon2 wait and work are child spans: {names:?}"
    );
    let activate = spans
        .iter()
        .find(|s| s.name == "credd.v1.ClientSecrets/ActivateClientSecret")
        .expect("the activation's span");
    assert!(
        spans
            .iter()
            .any(|s| s.parent_span_id == activate.span_id && s.name.starts_with("store.")),
        "store queries are child spans of the RPC that makes them"
    );

    let everything = format!("{exports:?}");
    for secret in [plaintext.as_str(), TOKEN] {
        assert!(
            !everything.contains(&secret[secret.len() / 4..secret.len() * 3 / 4]),
            "a secret reached an exported span"
        );
    }
}

both_backends!(a_verify_span_joins_the_callers_trace_and_carries_no_secret);
