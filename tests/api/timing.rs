//! Timing over gRPC, from this process to the credd binary: an unknown client ID
//! and a known client with a wrong, well-formed secret take the same time
//! (Welch's t-test over interleaved samples), so that the answer's latency does
//! not tell which client IDs exist.

use std::time::Instant;

use credd::pb::VerifyClientSecretRequest;
use secrecy::ExposeSecret as _;

use crate::helpers::{Backend, Clients, TOKEN, TestDb, connect_when_up, credd_serve, free_port};

const SAMPLES: usize = 2_000;
const WARM_UP: usize = 200;
/// The usual bound of timing-leak tests (dudect): beyond it, a leak is likely.
const T_BOUND: f64 = 4.5;

/// Welch's t statistic of two samples.
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    let ((na, ma, va), (nb, mb, vb)) = (stats(a), stats(b));
    (ma - mb) / (va / na + vb / nb).sqrt()
}

fn median(x: &[f64]) -> f64 {
    let mut sorted = x.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

async fn unknown_and_known_clients_with_wrong_secrets_take_the_same_time(backend: Backend) {
    let (_db, url) = TestDb::create(&backend).await;
    let port = free_port();
    let mut server = credd_serve(&url, port)
        // Every sample does the whole verification.
        .env("CREDD_VERIFY_CACHE_TTL", "0")
        .env("CREDD_VERIFY_THROTTLE_RATE", "0")
        .spawn()
        .unwrap();
    let channel = connect_when_up(port).await;
    let clients = Clients::new(channel, Some(TOKEN));
    let org = clients.create_org().await;
    let (secret, _) = clients.generate_and_activate(&org.id).await;
    let secret_id = credd::domain::ids::SecretId::parse("secret_id", &secret.id).unwrap();

    // Both present a well-formed secret naming the org's real secret: for the
    // known client it is found and compared; for the unknown one nothing is.
    let unknown_client = "0123456789abcdef0123456789abcdef".to_owned();
    let sample = async |client_id: &str| {
        let request = VerifyClientSecretRequest {
            client_id: client_id.to_owned(),
            client_secret: credd::domain::secret::generate_for(&secret_id)
                .expose_secret()
                .to_owned(),
        };
        let started = Instant::now();
        let verdict = clients
            .secrets
            .clone()
            .verify_client_secret(request)
            .await
            .unwrap()
            .into_inner();
        let took = started.elapsed().as_secs_f64() * 1e6;
        assert!(!verdict.valid);
        took
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..WARM_UP + SAMPLES {
        // Interleaved, in an order that alternates, so that drift hits both.
        let (k, u) = if i % 2 == 0 {
            let k = sample(&org.client_id).await;
            (k, sample(&unknown_client).await)
        } else {
            let u = sample(&unknown_client).await;
            (sample(&org.client_id).await, u)
        };
        if i >= WARM_UP {
            known.push(k);
            unknown.push(u);
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let t = welch_t(&known, &unknown);
    eprintln!(
        "timing: {SAMPLES} interleaved samples each, known client + wrong secret median \
         {:.1} µs, unknown client median {:.1} µs, Welch's t = {t:.2} (bound ±{T_BOUND})",
        median(&known),
        median(&unknown)
    );
    assert!(
        t.abs() < T_BOUND,
        "an unknown client is distinguishable in time: t = {t:.2}"
    );
}

both_backends!(unknown_and_known_clients_with_wrong_secrets_take_the_same_time);
