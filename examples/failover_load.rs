//! Mixed load against credd replicas through a database failover, for
//! `tests/faults/failover.sh` (docs/RELIABILITY.md, "Failover").
//!
//! `cargo run --example failover_load -- TOKEN SECONDS ADDR [ADDR…]`
//!
//! Sets up orgs with a generated and an imported secret and verifies each once
//! (so both answer from memory), then for SECONDS runs at once: writers creating
//! orgs and rotating their secrets (every acknowledged write recorded), verifiers
//! of the known secrets ("cached"), verifiers of made-up clients ("uncached":
//! they need the database), and a readiness probe (`Health/Check ""`) per replica
//! every 100 ms. At the end it waits for writes to succeed, checks that every
//! acknowledged write is stored, and prints the figures as `key value` lines.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use credd::pb::{
    CreateOrgRequest, GetOrgRequest, ImportClientSecretRequest, ListClientSecretsRequest,
    RotateClientSecretRequest, VerifyClientSecretRequest,
    client_secrets_client::ClientSecretsClient, get_org_request::Lookup, orgs_client::OrgsClient,
};
use tonic::{
    Request,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

#[derive(Default)]
struct Figures {
    writes_ok: AtomicU64,
    writes_failed: AtomicU64,
    cached_ok: AtomicU64,
    cached_failed: AtomicU64,
    cached_wrong: AtomicU64,
    uncached_ok: AtomicU64,
    uncached_failed: AtomicU64,
    /// The uncached verifications' error codes, with counts.
    uncached_codes: Mutex<std::collections::BTreeMap<String, u64>>,
    probes_ok: AtomicU64,
    probes_failed: AtomicU64,
    /// When each acknowledged write completed, in milliseconds since the start.
    write_times: Mutex<Vec<u64>>,
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64 + 1
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [token, seconds, addrs @ ..] = args.as_slice() else {
        return Err("usage: failover_load TOKEN SECONDS ADDR [ADDR…]".into());
    };
    let run_for = Duration::from_secs(seconds.parse()?);
    let bearer = Bearer(format!("Bearer {token}").parse()?);
    let mut channels = Vec::new();
    for addr in addrs {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .timeout(Duration::from_secs(3))
            .connect_lazy();
        channels.push(channel);
    }
    let authed: Vec<Authed> = channels
        .iter()
        .map(|c| InterceptedService::new(c.clone(), bearer.clone()))
        .collect();

    // Known secrets, each verified once on every replica.
    let mut known = Vec::new();
    for i in 0..10 {
        let mut orgs = OrgsClient::new(authed[0].clone());
        let mut secrets = ClientSecretsClient::new(authed[0].clone());
        let org = orgs
            .create_org(CreateOrgRequest {
                name: format!("known {i}"),
                main_website: format!("https://known-{i}-{}.example", uuid::Uuid::new_v4()),
                custom_domain: String::new(),
            })
            .await?
            .into_inner();
        let generated = secrets
            .rotate_client_secret(RotateClientSecretRequest {
                org_id: org.id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .plaintext;
        known.push((org.client_id.clone(), generated));
        let other = orgs
            .create_org(CreateOrgRequest {
                name: format!("imported {i}"),
                main_website: format!("https://imported-{i}-{}.example", uuid::Uuid::new_v4()),
                custom_domain: String::new(),
            })
            .await?
            .into_inner();
        let imported = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .encode(credd::domain::ids::random_bytes::<32>())
        };
        secrets
            .import_client_secret(ImportClientSecretRequest {
                org_id: other.id.clone(),
                plaintext: imported.clone(),
                description: "failover drill".into(),
                activate: true,
                ..Default::default()
            })
            .await?;
        known.push((other.client_id.clone(), imported));
    }
    // Let every replica's feed bring the new orgs, then warm each verdict.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for channel in &authed {
        let mut secrets = ClientSecretsClient::new(channel.clone());
        for (client_id, secret) in &known {
            let valid = secrets
                .verify_client_secret(VerifyClientSecretRequest {
                    client_id: client_id.clone(),
                    client_secret: secret.clone(),
                })
                .await?
                .into_inner()
                .valid;
            if !valid {
                return Err(format!("setup: {client_id} does not verify").into());
            }
        }
    }
    println!("ready {}", known.len());

    let figures = Arc::new(Figures::default());
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let (channel, figures, acknowledged) = (
            authed[writer % authed.len()].clone(),
            figures.clone(),
            acknowledged.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut orgs = OrgsClient::new(channel.clone());
            let mut secrets = ClientSecretsClient::new(channel);
            let mut n = 0;
            while start.elapsed() < run_for {
                n += 1;
                let written = async {
                    let org = orgs
                        .create_org(CreateOrgRequest {
                            name: format!("drill {writer}-{n}"),
                            main_website: format!(
                                "https://d{writer}-{n}-{}.example",
                                uuid::Uuid::new_v4()
                            ),
                            custom_domain: String::new(),
                        })
                        .await?
                        .into_inner();
                    let secret = secrets
                        .rotate_client_secret(RotateClientSecretRequest {
                            org_id: org.id.clone(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .secret
                        .map(|s| s.id)
                        .unwrap_or_default();
                    Ok::<_, tonic::Status>((org.id, secret))
                }
                .await;
                match written {
                    Ok(ids) => {
                        figures.writes_ok.fetch_add(1, Ordering::Relaxed);
                        figures.write_times.lock().unwrap().push(ms(start));
                        acknowledged.lock().unwrap().push(ids);
                    }
                    Err(_) => {
                        figures.writes_failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for verifier in 0..8 {
        let (channel, figures, known) = (
            authed[verifier % authed.len()].clone(),
            figures.clone(),
            known.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut secrets = ClientSecretsClient::new(channel);
            let mut i = verifier;
            while start.elapsed() < run_for {
                i += 1;
                let (client_id, secret) = &known[i % known.len()];
                match secrets
                    .verify_client_secret(VerifyClientSecretRequest {
                        client_id: client_id.clone(),
                        client_secret: secret.clone(),
                    })
                    .await
                {
                    Ok(answer) if answer.get_ref().valid => &figures.cached_ok,
                    Ok(_) => &figures.cached_wrong,
                    Err(_) => &figures.cached_failed,
                }
                .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for verifier in 0..2 {
        let (channel, figures) = (authed[verifier % authed.len()].clone(), figures.clone());
        tasks.push(tokio::spawn(async move {
            let mut secrets = ClientSecretsClient::new(channel);
            while start.elapsed() < run_for {
                let made_up = uuid::Uuid::new_v4().simple().to_string();
                match secrets
                    .verify_client_secret(VerifyClientSecretRequest {
                        client_id: made_up,
                        client_secret: "Vx9kP2mQ7rT4wY6zA1bC3dE5fG8hJ0kLmNoPqRsTuVw".into(),
                    })
                    .await
                {
                    Ok(_) => &figures.uncached_ok,
                    Err(status) => {
                        *figures
                            .uncached_codes
                            .lock()
                            .unwrap()
                            .entry(format!("{:?}", status.code()))
                            .or_default() += 1;
                        &figures.uncached_failed
                    }
                }
                .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for channel in &channels {
        let (channel, figures) = (channel.clone(), figures.clone());
        tasks.push(tokio::spawn(async move {
            let mut health = HealthClient::new(channel);
            while start.elapsed() < run_for {
                let serving = health
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok_and(|r| r.get_ref().status == 1);
                if serving {
                    &figures.probes_ok
                } else {
                    &figures.probes_failed
                }
                .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }

    // Every acknowledged write is stored.
    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut orgs = OrgsClient::new(authed[0].clone());
    let mut secrets = ClientSecretsClient::new(authed[0].clone());
    let mut lost = 0;
    for (org_id, secret_id) in &acknowledged {
        let stored = orgs
            .get_org(GetOrgRequest {
                lookup: Some(Lookup::Id(org_id.clone())),
            })
            .await
            .is_ok();
        let listed: HashSet<String> = secrets
            .list_client_secrets(ListClientSecretsRequest {
                org_id: org_id.clone(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().secrets.into_iter().map(|s| s.id).collect())
            .unwrap_or_default();
        if !stored || !listed.contains(secret_id) {
            lost += 1;
        }
    }
    let f = &figures;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!("acknowledged_writes {}", acknowledged.len());
    println!("acknowledged_writes_lost {lost}");
    println!("failed_writes {}", get(&f.writes_failed));
    println!(
        "cached_verifies {}",
        get(&f.cached_ok) + get(&f.cached_failed) + get(&f.cached_wrong)
    );
    println!("cached_verify_errors {}", get(&f.cached_failed));
    println!("cached_verify_wrong_answers {}", get(&f.cached_wrong));
    println!(
        "uncached_verifies {}",
        get(&f.uncached_ok) + get(&f.uncached_failed)
    );
    println!("uncached_verify_errors {}", get(&f.uncached_failed));
    println!(
        "uncached_verify_error_codes {:?}",
        f.uncached_codes.lock().unwrap()
    );
    println!(
        "readiness_probes {}",
        get(&f.probes_ok) + get(&f.probes_failed)
    );
    println!("readiness_probes_failed {}", get(&f.probes_failed));
    // The outage is the longest stretch without an acknowledged write; writes
    // are back when some complete after it.
    let mut times = f.write_times.lock().unwrap().clone();
    times.sort_unstable();
    let (gap, gap_end) = times
        .windows(2)
        .map(|w| (w[1] - w[0], w[1]))
        .max()
        .unwrap_or((0, 0));
    println!("write_outage_seconds {:.1}", gap as f64 / 1000.0);
    println!(
        "writes_after_outage {}",
        times.iter().filter(|t| **t >= gap_end).count()
    );
    Ok(())
}
