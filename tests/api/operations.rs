//! Operating credd: metrics, truthful health, graceful shutdown, limits.

use std::time::{Duration, Instant};

use credd::pb::{
    CreateOrgRequest, ImportClientSecretRequest, ListOrgsRequest, Org, VerifyClientSecretRequest,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Backend, TestApp, assert_code, spawn_app_with, wait_until};

/// An org with an active imported (argon2-stored) secret, and the secret.
async fn org_with_active_secret(app: &TestApp) -> (Org, String) {
    let org = app.create_org().await;
    let (_, plaintext) = app.import_and_activate(&org.id).await;
    (org, plaintext)
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: credd\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text
}

/// The value of the sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_count_rpcs_verifications_and_argon2(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let addr = app.metrics_addr.expect("metrics enabled");
    let before = scrape(addr).await;
    let (org, secret) = org_with_active_secret(&app).await;
    assert!(app.verify(&org.client_id, &secret).await.unwrap());
    assert!(!app.verify(&org.client_id, "not-a-secret").await.unwrap());
    app.orgs
        .list_orgs(ListOrgsRequest {
            page_size: 5000,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    let after = scrape(addr).await;

    let moved = |prefix: &str| sample(&after, prefix) > sample(&before, prefix);
    assert!(
        moved(
            r#"credd_rpc_requests_total{method="/credd.v1.ClientSecrets/VerifyClientSecret",code="OK"}"#
        ),
        "{after}"
    );
    assert!(
        moved(
            r#"credd_rpc_requests_total{method="/credd.v1.Orgs/ListOrgs",code="INVALID_ARGUMENT"}"#
        ),
        "{after}"
    );
    assert!(moved(
        r#"credd_rpc_duration_seconds_count{method="/credd.v1.ClientSecrets/VerifyClientSecret"}"#
    ));
    assert!(moved(r#"credd_verify_outcomes_total{outcome="valid"}"#));
    assert!(
        moved(r#"credd_verify_outcomes_total{outcome="bad_characters"}"#),
        "{after}"
    );
    assert!(moved("credd_argon2_queue_wait_seconds_count"));
    assert!(sample(&after, "credd_process_resident_memory_bytes") > 1e6);
    // One registry per process: other test servers stopping meanwhile move the
    // serving gauge, so only its presence is this server's.
    assert!(after.contains("credd_serving"));
    assert!(after.contains("credd_db_pool_connections"));
}

/// Requests to thousands of made-up paths, with and without a token, leave one
/// `unknown` label behind: no label set per path, so neither the /metrics page
/// nor memory grows with what callers send.
async fn made_up_paths_do_not_grow_the_metrics(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let addr = app.metrics_addr.expect("metrics enabled");
    let before = scrape(addr).await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    for i in 0..2000 {
        let path = if i % 2 == 0 {
            format!("/credd.v1.Orgs/Made{i}Up")
        } else {
            format!("/no.Such{i}/Thing")
        };
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                path.parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("no such RPC");
        assert!(
            matches!(status.code(), Code::Unauthenticated | Code::Unimplemented),
            "{status:?}"
        );
    }
    let after = scrape(addr).await;
    assert!(!after.contains("Made1"), "a made-up path became a label");
    assert!(!after.contains("no.Such"), "a made-up path became a label");
    assert!(
        sample(
            &after,
            r#"credd_rpc_requests_total{method="unknown",code="UNAUTHENTICATED"}"#
        ) >= 1000.0,
        "{after}"
    );
    // Other tests share the process's registry and may add a few known methods;
    // 2000 per-path label sets would add well over a megabyte.
    assert!(
        after.len() < before.len() + 64 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
}

async fn a_call_in_flight_finishes_when_the_server_stops(backend: Backend) {
    // Costly hashes keep a verification in flight long enough to stop the server under it.
    let mut app = spawn_app_with(backend, |s| {
        s.argon2_m_kib = 32 * 1024;
        s.argon2_t = 3;
    })
    .await;
    let (org, secret) = org_with_active_secret(&app).await;
    let mut client = app.secrets.clone();
    let hashes = app.verifier.hasher().computations();
    let call = tokio::spawn(async move {
        client
            .verify_client_secret(VerifyClientSecretRequest {
                client_id: org.client_id,
                client_secret: secret,
            })
            .await
    });
    let hasher = app.verifier.hasher().clone();
    wait_until(
        "the verification's argon2 work starts",
        Duration::from_secs(10),
        async || hasher.computations() > hashes,
    )
    .await;
    assert!(
        !call.is_finished(),
        "the verification must still be in flight when the server stops"
    );
    app.stop().await.expect("a clean stop");
    let answer = call.await.unwrap().expect("the in-flight call completes");
    assert!(answer.into_inner().valid);
}

async fn on_shutdown_health_turns_not_serving_first(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| s.shutdown_grace = Duration::from_secs(2)).await;
    let mut watch = HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    // The first thing the open watch hears is NOT_SERVING; then it ends, so that
    // it does not hold the stop for the grace.
    let stopping = tokio::spawn(async move { app.stop().await });
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a status update");
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
    assert!(watch.message().await.unwrap().is_none(), "the watch ends");
    stopping
        .await
        .unwrap()
        .expect("a clean stop after the grace");
}

async fn requests_over_the_size_limit_are_refused_before_the_handler(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_request_bytes = 4096).await;
    let (org, _) = org_with_active_secret(&app).await;
    let status = app
        .verify(&org.client_id, &"a".repeat(8192))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(
        !app.verify(&org.client_id, &"a".repeat(3000)).await.unwrap(),
        "under the limit it reaches the handler"
    );
}

async fn an_rpc_past_the_server_timeout_is_cancelled(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| {
        s.argon2_m_kib = 64 * 1024;
        s.argon2_t = 4;
        s.rpc_timeout = Duration::from_millis(5);
    })
    .await;
    // Creating an org is quick; importing a secret hashes it with argon2, which
    // takes longer.
    let org = app
        .orgs
        .create_org(CreateOrgRequest {
            name: "A".into(),
            main_website: "https://a.example".into(),
            custom_domain: String::new(),
        })
        .await;
    let status = match org {
        Ok(org) => app
            .secrets
            .import_client_secret(ImportClientSecretRequest {
                org_id: org.into_inner().id,
                plaintext: "Vx9kP2mQ7rT4wY6zA1bC3dE5fG8hJ0kLmNoPqRsTuVw".into(),
                description: String::new(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        Err(status) => status,
    };
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
}

async fn one_connection_holds_at_most_the_configured_streams(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_concurrent_streams = 1).await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let addr = app.addr;
    let request = move || {
        http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    };
    let empty_message = || bytes::Bytes::from_static(&[0, 0, 0, 0, 0]);
    // One whole call first, so the server's SETTINGS (the limit) have arrived.
    let mut client = client.ready().await.unwrap();
    let (warmup, mut body) = client.send_request(request(), false).unwrap();
    body.send_data(empty_message(), true).unwrap();
    warmup.await.unwrap();

    // The first stream stays open: no end of stream yet.
    let mut client = client.ready().await.unwrap();
    let (first, mut first_body) = client.send_request(request(), false).unwrap();
    let second_client = client.clone();
    let second = tokio::spawn(async move {
        let mut ready = second_client.ready().await?;
        let (response, mut body) = ready.send_request(request(), false)?;
        body.send_data(empty_message(), true)?;
        response.await
    });
    // Deliberately elapsed time, not a wait for a condition: the check is that
    // nothing happens, so the second stream is given 300 ms to (wrongly) run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second stream must wait while the first holds the only slot"
    );
    // Closing the first frees the slot and the second goes through.
    first_body.send_data(empty_message(), true).unwrap();
    first.await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second stream ran");
    assert!(answered.unwrap().is_ok());
}

async fn a_connection_that_ignores_keepalive_pings_is_closed(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.keepalive_interval = Duration::from_millis(200);
        s.keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame; after that this client reads
    // but never answers, so pings go unacknowledged.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept a silent connection open for 10 s"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

both_backends!(
    metrics_count_rpcs_verifications_and_argon2,
    made_up_paths_do_not_grow_the_metrics,
    a_call_in_flight_finishes_when_the_server_stops,
    on_shutdown_health_turns_not_serving_first,
    requests_over_the_size_limit_are_refused_before_the_handler,
    an_rpc_past_the_server_timeout_is_cancelled,
    one_connection_holds_at_most_the_configured_streams,
    a_connection_that_ignores_keepalive_pings_is_closed,
);

/// A TCP proxy of the test's own between credd and PostgreSQL, which the test can cut.
struct Proxy {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (open2, generation2) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !open2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = generation2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            open,
            generation,
        }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn health_of(app: &TestApp) -> Option<ServingStatus> {
    health_of_service(app, "").await
}

async fn health_of_service(app: &TestApp, service: &str) -> Option<ServingStatus> {
    let mut health = HealthClient::new(app.channel.clone());
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        health.check(HealthCheckRequest {
            service: service.into(),
        }),
    )
    .await;
    answer.ok()?.ok().map(|r| r.into_inner().status())
}

async fn wait_for_health(app: &TestApp, wanted: ServingStatus, within: Duration) {
    wait_for_service_health(app, "", wanted, within).await;
}

async fn wait_for_service_health(
    app: &TestApp,
    service: &str,
    wanted: ServingStatus,
    within: Duration,
) {
    wait_until(
        &format!("health of {service:?} turns {wanted:?}"),
        within,
        async || health_of_service(app, service).await == Some(wanted),
    )
    .await;
}

/// PostgreSQL only: the database is cut mid-run and restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_tells_the_truth_when_the_database_is_cut_and_restored() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("CREDD_TEST_DATABASE_URL is not set: PostgreSQL proxy test skipped");
        return;
    };
    let Backend::Postgres(admin_url) = &backend else {
        unreachable!()
    };
    let upstream = {
        let url = url::Url::parse(admin_url).unwrap();
        let host = url
            .host_str()
            .unwrap_or("127.0.0.1")
            .replace("localhost", "127.0.0.1");
        format!("{host}:{}", url.port().unwrap_or(5432))
            .parse()
            .unwrap()
    };
    let proxy = Proxy::start(upstream).await;
    let proxy_addr = proxy.addr;
    let app = spawn_app_with(backend.clone(), |settings| {
        let url = secrecy::ExposeSecret::expose_secret(&settings.database_url).to_owned();
        let mut url = url::Url::parse(&url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(proxy_addr.port())).unwrap();
        settings.database_url = url.to_string().into();
        settings.stale_if_error = Duration::from_secs(8);
    })
    .await;
    let (org, secret) = org_with_active_secret(&app).await;
    let other = app.create_org().await;
    let (_, generated) = app.generate_and_activate(&other.id).await;
    assert!(app.verify(&org.client_id, &secret).await.unwrap());
    wait_for_health(&app, ServingStatus::Serving, Duration::from_secs(5)).await;

    proxy.cut();
    // Every credd service tells the truth: the store is gone.
    for service in ["credd.v1.ClientSecrets", "credd.v1.Orgs"] {
        wait_for_service_health(
            &app,
            service,
            ServingStatus::NotServing,
            Duration::from_secs(10),
        )
        .await;
    }
    // Readiness stays SERVING while memory can answer: a shared database's
    // outage must not take every replica out of its Service at once.
    assert_eq!(health_of(&app).await, Some(ServingStatus::Serving));
    assert!(
        app.verify(&org.client_id, &secret).await.unwrap(),
        "a cached verdict answers from memory"
    );
    // A generated secret's digest is in memory: right and wrong are both certain.
    assert!(app.verify(&other.client_id, &generated).await.unwrap());
    assert!(
        !app.verify(
            &other.client_id,
            &crate::helpers::wrong_version_of(&generated)
        )
        .await
        .unwrap()
    );
    // What memory does not hold may have been made meanwhile: no "false".
    let (unknown, _) = credd::domain::secret::generate();
    let unknown =
        secrecy::ExposeSecret::expose_secret(&credd::domain::secret::generate_for(&unknown))
            .to_owned();
    for candidate in [
        unknown.as_str(),
        "Vx9kP2mQ7rT4wY6zA1bC3dE5fG8hJ0kLmNoPqRsTuVw",
    ] {
        assert_code(
            app.verify(&org.client_id, candidate).await,
            Code::Unavailable,
        );
    }
    // Past CREDD_STALE_IF_ERROR nothing answers from memory, and readiness says so.
    wait_for_health(&app, ServingStatus::NotServing, Duration::from_secs(15)).await;
    assert_code(app.verify(&org.client_id, &secret).await, Code::Unavailable);
    assert_code(
        app.verify(&other.client_id, &generated).await,
        Code::Unavailable,
    );
    let liveness = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        liveness,
        ServingStatus::Serving,
        "a database outage must not fail liveness"
    );

    proxy.restore();
    wait_for_health(&app, ServingStatus::Serving, Duration::from_secs(15)).await;
    assert!(
        app.verdict_once_past(
            Code::Unavailable,
            Duration::from_secs(15),
            &org.client_id,
            &secret
        )
        .await,
        "the right secret verifies again"
    );
    assert!(
        !app.verify(
            &org.client_id,
            "Vx9kP2mQ7rT4wY6zA1bC3dE5fG8hJ0kLmNoPqRsTuVw"
        )
        .await
        .unwrap()
    );
}
