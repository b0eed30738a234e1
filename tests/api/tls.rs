//! TLS and mTLS with certificates generated at run time (rcgen).

use std::path::PathBuf;

use credd::pb::{ListOrgsRequest, orgs_client::OrgsClient};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Backend, TOKEN, TestApp, bearer, spawn_app_with};

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client: (String, String),
    stranger: (String, String),
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let ca = new_ca("credd test CA");
    let other = new_ca("some other CA");
    let server = leaf(&ca, &["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), &server.0).unwrap();
    std::fs::write(dir.path().join("server.key"), &server.1).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        client: leaf(&ca, &["gateway"]),
        stranger: leaf(&other, &["gateway"]),
        dir,
    }
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

async fn tls_channel(
    app: &TestApp,
    pki: &Pki,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", app.addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn healthy(channel: Result<Channel, tonic::transport::Error>) -> bool {
    match channel {
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    }
}

async fn a_tls_client_works_and_plaintext_does_not(backend: Backend) {
    let pki = pki();
    let app = spawn_app_with(backend, |s| {
        s.tls_cert = Some(pki.path("server.pem"));
        s.tls_key = Some(pki.path("server.key"));
    })
    .await;
    let channel = tls_channel(&app, &pki, None).await.expect("TLS handshake");
    assert!(healthy(Ok(channel.clone())).await);
    OrgsClient::with_interceptor(channel, bearer(Some(TOKEN)))
        .list_orgs(ListOrgsRequest::default())
        .await
        .unwrap();
    assert!(
        !healthy(Ok(app.channel.clone())).await,
        "plaintext is refused by a TLS server"
    );
}

/// With TLS (and mTLS) on the main port, a plaintext port serving health alone
/// lets the kubelet's gRPC probes (plaintext only) see the truth; it serves no
/// credd RPC, and it turns NOT_SERVING on shutdown like the main port.
async fn the_plaintext_health_port_answers_probes_and_nothing_else(backend: Backend) {
    let pki = pki();
    let mut app = spawn_app_with(backend, |s| {
        s.tls_cert = Some(pki.path("server.pem"));
        s.tls_key = Some(pki.path("server.key"));
        s.tls_client_ca = Some(pki.path("ca.pem"));
        s.health_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = app.health_addr.expect("health port enabled");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = |service: &str| {
        let mut health = HealthClient::new(channel.clone());
        let request = HealthCheckRequest {
            service: service.into(),
        };
        async move { health.check(request).await.map(|r| r.into_inner().status()) }
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(status("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(status("liveness").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        status("credd.v1.ClientSecrets").await.unwrap(),
        ServingStatus::Serving
    );
    let code = OrgsClient::with_interceptor(channel.clone(), bearer(Some(TOKEN)))
        .list_orgs(ListOrgsRequest::default())
        .await
        .unwrap_err()
        .code();
    assert_eq!(
        code,
        tonic::Code::Unimplemented,
        "no credd RPC on the health port"
    );

    // A watch on the health port hears NOT_SERVING when shutdown begins.
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let stopping = tokio::spawn(async move { app.stop().await });
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    stopping.await.unwrap().unwrap();
}

async fn mtls_refuses_clients_without_a_certificate_from_the_ca(backend: Backend) {
    let pki = pki();
    let app = spawn_app_with(backend, |s| {
        s.tls_cert = Some(pki.path("server.pem"));
        s.tls_key = Some(pki.path("server.key"));
        s.tls_client_ca = Some(pki.path("ca.pem"));
    })
    .await;
    assert!(
        healthy(tls_channel(&app, &pki, Some(&pki.client)).await).await,
        "a certificate from the CA is accepted"
    );
    assert!(
        !healthy(tls_channel(&app, &pki, None).await).await,
        "no client certificate is refused"
    );
    assert!(
        !healthy(tls_channel(&app, &pki, Some(&pki.stranger)).await).await,
        "another CA's certificate is refused"
    );
}

#[test]
fn bad_tls_settings_fail_start_naming_the_variable() {
    let pki = pki();
    let run = |vars: &[(&str, PathBuf)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_credd"));
        command.env("CREDD_LOG", "warn").env(
            "CREDD_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", pki.path("c.db").display()),
        );
        command.env("CREDD_LISTEN", "127.0.0.1:0");
        for (k, v) in vars {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&[("CREDD_TLS_CERT", pki.path("server.pem"))]).contains("CREDD_TLS_KEY"));
    assert!(
        run(&[
            ("CREDD_TLS_CERT", pki.path("server.pem")),
            ("CREDD_TLS_KEY", pki.path("missing.key"))
        ])
        .contains("CREDD_TLS_KEY")
    );
    assert!(
        run(&[
            ("CREDD_TLS_CERT", pki.path("ca.pem")),
            ("CREDD_TLS_KEY", pki.path("ca.pem"))
        ])
        .contains("CREDD_TLS")
    );
}

both_backends!(
    a_tls_client_works_and_plaintext_does_not,
    the_plaintext_health_port_answers_probes_and_nothing_else,
    mtls_refuses_clients_without_a_certificate_from_the_ca
);
