//! `credd-bench`: a load generator for a running credd.
//!
//! It opens several HTTP/2 connections, drives one RPC at a given concurrency for a
//! given time, and prints requests/s, p50/p90/p99/max latency and errors, as a
//! table and as one JSON line. Set-up (orgs, secrets) uses the admin token.
//!
//! ```sh
//! cargo run --release --bin credd-bench -- --addr 127.0.0.1:50051 --token "$CREDD_TOKEN" \
//!     --rpc verify-cached --concurrency 64 --duration 10s
//! ```

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use credd::pb::{
    ActivateClientSecretRequest, CreateOrgRequest, GenerateClientSecretRequest,
    ImportClientSecretRequest, ListOrgsRequest, VerifyClientSecretRequest,
    activate_client_secret_request::Secret, client_secrets_client::ClientSecretsClient,
    orgs_client::OrgsClient,
};
use secrecy::ExposeSecret as _;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Which RPC to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rpc {
    /// grpc.health.v1.Health/Check: the cost of a trivial RPC.
    Health,
    /// VerifyClientSecret with the right secret: cache hits after the first.
    VerifyCached,
    /// VerifyClientSecret with a distinct well-formed wrong generated secret every
    /// time: a digest compared in memory, never cached.
    VerifyCold,
    /// VerifyClientSecret with a distinct well-formed wrong imported secret every
    /// time: one argon2 verification each, never cached.
    VerifyImported,
    /// GenerateClientSecret.
    Generate,
    /// ListOrgs (50 per page).
    List,
    /// Rotation: activate a new secret on --addr and time until --addr-b refuses
    /// the previous one (--rounds times).
    Rotation,
    /// Set up one org with a custom domain, a web app, an active generated and an
    /// active imported secret (on another org), and write h2load request bodies
    /// (gRPC frames) for each login-path call to --out, then exit.
    Frames,
}

#[derive(Debug, Parser)]
#[command(name = "credd-bench", about = "Load generator for credd")]
struct Args {
    /// credd's address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// An admin caller token (set-up and calls).
    #[arg(long, env = "CREDD_TOKEN", hide_env_values = true)]
    token: String,
    /// The RPC to drive.
    #[arg(long, value_enum)]
    rpc: Rpc,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to drive it (`10s`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// HTTP/2 connections to spread the calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Orgs to create for verify-cold (each with an active secret).
    #[arg(long, default_value_t = 64)]
    orgs: usize,
    /// PID of the credd process, to sample its resident memory during the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Second replica, for --rpc rotation.
    #[arg(long)]
    addr_b: Option<String>,
    /// Rotations to time, for --rpc rotation.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Directory to write the request bodies to, for --rpc frames.
    #[arg(long, default_value = "bench-frames")]
    out: std::path::PathBuf,
}

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// One org with an active secret.
#[derive(Clone)]
struct Client {
    client_id: String,
    secret: String,
    secret_id: String,
    org_id: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let bearer = Bearer(format!("Bearer {}", args.token).parse()?);
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{}", args.addr))?
                .connect()
                .await?,
        );
    }
    let authed =
        |i: usize| InterceptedService::new(channels[i % channels.len()].clone(), bearer.clone());

    if args.rpc == Rpc::Rotation {
        return rotation(&args, authed(0), bearer.clone()).await;
    }
    if args.rpc == Rpc::Frames {
        return frames(&args.out, authed(0)).await;
    }
    let clients = match args.rpc {
        Rpc::VerifyCold => set_up(authed(0), args.orgs.max(1)).await?,
        Rpc::VerifyImported => set_up_imported(authed(0), args.orgs.max(1)).await?,
        Rpc::VerifyCached | Rpc::Generate => set_up(authed(0), 1).await?,
        Rpc::Health | Rpc::List | Rpc::Rotation | Rpc::Frames => Vec::new(),
    };
    let clients = Arc::new(clients);

    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    if let Some(pid) = args.server_pid {
        let (stop, peak) = (stop.clone(), peak_rss.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let channel = channels[worker % channels.len()].clone();
        let (bearer, clients, rpc) = (bearer.clone(), clients.clone(), args.rpc);
        workers.push(tokio::spawn(async move {
            let mut health = HealthClient::new(channel.clone());
            let mut secrets =
                ClientSecretsClient::new(InterceptedService::new(channel.clone(), bearer.clone()));
            let mut orgs = OrgsClient::new(InterceptedService::new(channel, bearer));
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = worker;
            while Instant::now() < deadline {
                n += 1;
                let t = Instant::now();
                let result: Result<(), tonic::Status> = match rpc {
                    Rpc::Health => health.check(HealthCheckRequest::default()).await.map(drop),
                    Rpc::VerifyCached => {
                        let c = &clients[0];
                        secrets
                            .verify_client_secret(VerifyClientSecretRequest {
                                client_id: c.client_id.clone(),
                                client_secret: c.secret.clone(),
                            })
                            .await
                            .and_then(|r| {
                                if r.into_inner().valid {
                                    Ok(())
                                } else {
                                    Err(tonic::Status::internal("right secret refused"))
                                }
                            })
                    }
                    Rpc::VerifyCold => {
                        let c = &clients[n % clients.len()];
                        let secret_id =
                            credd::domain::ids::SecretId::parse("secret_id", &c.secret_id)
                                .map_err(|_| tonic::Status::internal("bad id"))?;
                        let wrong = credd::domain::secret::generate_for(&secret_id);
                        secrets
                            .verify_client_secret(VerifyClientSecretRequest {
                                client_id: c.client_id.clone(),
                                client_secret: wrong.expose_secret().to_owned(),
                            })
                            .await
                            .and_then(|r| {
                                if r.into_inner().valid {
                                    Err(tonic::Status::internal("wrong secret accepted"))
                                } else {
                                    Ok(())
                                }
                            })
                    }
                    Rpc::VerifyImported => {
                        let c = &clients[n % clients.len()];
                        // Another random secret with the right one's hint: checked
                        // against its argon2 hash.
                        let wrong =
                            format!("{}{}", base64_random(30), &c.secret[c.secret.len() - 4..]);
                        secrets
                            .verify_client_secret(VerifyClientSecretRequest {
                                client_id: c.client_id.clone(),
                                client_secret: wrong,
                            })
                            .await
                            .and_then(|r| {
                                if r.into_inner().valid {
                                    Err(tonic::Status::internal("wrong secret accepted"))
                                } else {
                                    Ok(())
                                }
                            })
                    }
                    Rpc::Generate => secrets
                        .generate_client_secret(GenerateClientSecretRequest {
                            org_id: clients[0].org_id.clone(),
                            description: String::new(),
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    Rpc::List => orgs
                        .list_orgs(ListOrgsRequest {
                            page_size: 50,
                            page_token: String::new(),
                        })
                        .await
                        .map(drop),
                    Rpc::Rotation | Rpc::Frames => Ok(()),
                };
                match result {
                    Ok(()) => latencies.push(t.elapsed().as_micros() as u32),
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
            }
            Ok::<_, tonic::Status>((latencies, errors))
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        let (l, e) = worker.await??;
        latencies.extend(l);
        for (code, count) in e {
            *errors.entry(code).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[i]) / 1000.0
    };
    let ok = latencies.len() as u64;
    let error_count: u64 = errors.values().sum();
    let peak_mib = peak_rss.load(Ordering::Relaxed) as f64 / 1024.0;
    let name = format!("{:?}", args.rpc).to_lowercase();
    println!(
        "{:<14} {:>6} {:>5} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "rpc",
        "conc",
        "conns",
        "ok",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "peak MiB"
    );
    println!(
        "{:<14} {:>6} {:>5} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1}",
        name,
        args.concurrency,
        channels.len(),
        ok,
        error_count,
        ok as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
        peak_mib
    );
    if !errors.is_empty() {
        println!("errors by code: {errors:?}");
    }
    println!(
        "{}",
        serde_json::json!({
            "rpc": name,
            "concurrency": args.concurrency,
            "connections": channels.len(),
            "seconds": elapsed,
            "ok": ok,
            "errors": error_count,
            "errors_by_code": errors,
            "rps": ok as f64 / elapsed,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
            "peak_rss_mib": peak_mib,
        })
    );
    Ok(())
}

/// Creates `n` orgs, each with an active generated secret.
async fn set_up(channel: Authed, n: usize) -> Result<Vec<Client>, BoxError> {
    let mut orgs = OrgsClient::new(channel.clone());
    let mut secrets = ClientSecretsClient::new(channel);
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let org = orgs
            .create_org(CreateOrgRequest {
                name: format!("bench {i}"),
                main_website: "https://bench.example".into(),
                custom_domain: String::new(),
            })
            .await?
            .into_inner();
        let (secret_id, secret) = new_active_secret(&mut secrets, &org.id).await?;
        clients.push(Client {
            client_id: org.client_id,
            secret,
            secret_id,
            org_id: org.id,
        });
    }
    Ok(clients)
}

/// Creates `n` orgs, each with an active imported secret.
async fn set_up_imported(channel: Authed, n: usize) -> Result<Vec<Client>, BoxError> {
    let mut orgs = OrgsClient::new(channel.clone());
    let mut secrets = ClientSecretsClient::new(channel);
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let org = orgs
            .create_org(CreateOrgRequest {
                name: format!("bench imported {i}"),
                main_website: "https://bench.example".into(),
                custom_domain: String::new(),
            })
            .await?
            .into_inner();
        let (secret_id, secret) = new_active_import(&mut secrets, &org.id).await?;
        clients.push(Client {
            client_id: org.client_id,
            secret,
            secret_id,
            org_id: org.id,
        });
    }
    Ok(clients)
}

/// `bytes` random bytes in base64 (an importable secret for 24 or more).
fn base64_random(bytes: usize) -> String {
    use base64::Engine as _;
    let mut random = vec![0u8; bytes];
    for chunk in random.chunks_mut(32) {
        let fresh = credd::domain::ids::random_bytes::<32>();
        chunk.copy_from_slice(&fresh[..chunk.len()]);
    }
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(random)
}

async fn new_active_import(
    secrets: &mut ClientSecretsClient<Authed>,
    org_id: &str,
) -> Result<(String, String), BoxError> {
    let plaintext = base64_random(32);
    let imported = secrets
        .import_client_secret(ImportClientSecretRequest {
            org_id: org_id.into(),
            plaintext: plaintext.clone(),
            description: String::new(),
            ..Default::default()
        })
        .await?
        .into_inner();
    secrets
        .activate_client_secret(ActivateClientSecretRequest {
            org_id: org_id.into(),
            secret: Some(Secret::SecretId(imported.id.clone())),
            grace_period: None,
        })
        .await?;
    Ok((imported.id, plaintext))
}

/// Writes `message` as one gRPC frame (uncompressed flag, length, bytes) to
/// `dir/name`, for h2load's `-d`.
fn write_frame(
    dir: &std::path::Path,
    name: &str,
    message: &impl prost::Message,
) -> std::io::Result<()> {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    std::fs::write(dir.join(name), frame)
}

/// The login-path fixtures and their request bodies (see [`Rpc::Frames`]).
async fn frames(out: &std::path::Path, channel: Authed) -> Result<(), BoxError> {
    use credd::pb::{
        CheckRedirectUriRequest, CreateAppRegistrationRequest, GetOrgRequest, Platform,
        app_registrations_client::AppRegistrationsClient, get_org_request::Lookup,
    };
    std::fs::create_dir_all(out)?;
    let mut orgs = OrgsClient::new(channel.clone());
    let mut secrets = ClientSecretsClient::new(channel.clone());
    let mut apps = AppRegistrationsClient::new(channel.clone());
    let domain = format!(
        "login-{}.bench.example",
        &base64_random(6).to_lowercase().replace(['+', '/'], "x")
    );
    let org = orgs
        .create_org(CreateOrgRequest {
            name: "bench login".into(),
            main_website: "https://bench.example".into(),
            custom_domain: domain.clone(),
        })
        .await?
        .into_inner();
    let callback = "https://www.bench.example/oauth/callback";
    apps.create_app_registration(CreateAppRegistrationRequest {
        org_id: org.id.clone(),
        name: "bench web".into(),
        platform: Platform::Web.into(),
        callback_url: callback.into(),
        ..Default::default()
    })
    .await?;
    let (_, generated) = new_active_secret(&mut secrets, &org.id).await?;
    let imported_org = set_up_imported(channel, 1).await?.remove(0);
    write_frame(out, "health.bin", &HealthCheckRequest::default())?;
    write_frame(
        out,
        "verify_generated.bin",
        &VerifyClientSecretRequest {
            client_id: org.client_id.clone(),
            client_secret: generated,
        },
    )?;
    write_frame(
        out,
        "verify_imported.bin",
        &VerifyClientSecretRequest {
            client_id: imported_org.client_id,
            client_secret: imported_org.secret,
        },
    )?;
    let domain_for_login = domain.clone();
    write_frame(
        out,
        "get_org_by_domain.bin",
        &GetOrgRequest {
            lookup: Some(Lookup::CustomDomain(domain)),
        },
    )?;
    write_frame(
        out,
        "get_org_by_client_id.bin",
        &GetOrgRequest {
            lookup: Some(Lookup::ClientId(org.client_id.clone())),
        },
    )?;
    write_frame(
        out,
        "check_redirect.bin",
        &CheckRedirectUriRequest {
            client_id: org.client_id.clone(),
            redirect_uri: callback.into(),
        },
    )?;
    write_frame(
        out,
        "resolve_login.bin",
        &credd::pb::ResolveLoginRequest {
            host: domain_for_login,
            client_id: org.client_id,
            redirect_uri: callback.into(),
        },
    )?;
    println!("request bodies written to {}", out.display());
    Ok(())
}

async fn new_active_secret(
    secrets: &mut ClientSecretsClient<Authed>,
    org_id: &str,
) -> Result<(String, String), BoxError> {
    let generated = secrets
        .generate_client_secret(GenerateClientSecretRequest {
            org_id: org_id.into(),
            description: String::new(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = generated.secret.map(|s| s.id).unwrap_or_default();
    secrets
        .activate_client_secret(ActivateClientSecretRequest {
            org_id: org_id.into(),
            secret: Some(Secret::SecretId(id.clone())),
            grace_period: None,
        })
        .await?;
    Ok((id, generated.plaintext))
}

/// Activates a new secret on A, then times until B refuses the previous one.
async fn rotation(args: &Args, a: Authed, bearer: Bearer) -> Result<(), BoxError> {
    let addr_b = args
        .addr_b
        .as_ref()
        .ok_or("--rpc rotation needs --addr-b")?;
    let b = InterceptedService::new(
        Channel::from_shared(format!("http://{addr_b}"))?
            .connect()
            .await?,
        bearer,
    );
    let mut secrets_a = ClientSecretsClient::new(a.clone());
    let mut secrets_b = ClientSecretsClient::new(b);
    let client = set_up(a, 1).await?.remove(0);
    let mut old = client.secret.clone();
    let mut delays = Vec::new();
    for _ in 0..args.rounds {
        let verify = |secret: &str| VerifyClientSecretRequest {
            client_id: client.client_id.clone(),
            client_secret: secret.to_owned(),
        };
        // B has the current secret cached.
        for _ in 0..2 {
            if !secrets_b
                .verify_client_secret(verify(&old))
                .await?
                .into_inner()
                .valid
            {
                return Err("B refused the current secret".into());
            }
        }
        let (_, new) = new_active_secret(&mut secrets_a, &client.org_id).await?;
        let activated = Instant::now();
        while secrets_b
            .verify_client_secret(verify(&old))
            .await?
            .into_inner()
            .valid
        {
            if activated.elapsed() > Duration::from_secs(10) {
                return Err("B still accepted the old secret after 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        delays.push(activated.elapsed().as_secs_f64() * 1000.0);
        old = new;
    }
    delays.sort_by(f64::total_cmp);
    let within = delays.iter().filter(|d| **d <= 1000.0).count();
    println!(
        "rotations {}, refused on B within 1 s: {within}, p50 {:.1} ms, max {:.1} ms",
        delays.len(),
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    println!(
        "{}",
        serde_json::json!({"rpc": "rotation", "rounds": delays.len(), "within_1s": within, "p50_ms": delays[delays.len() / 2], "max_ms": delays[delays.len() - 1]})
    );
    Ok(())
}

/// The resident set of process `pid`, KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
