//! The `credd` binary as an operator runs it.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use credd::pb::{ListOrgsRequest, orgs_client::OrgsClient};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Backend, Clients, TestDb, bearer, free_port, wait_until};

const VARIABLES: [&str; 25] = [
    "CREDD_CONFIG",
    "CREDD_OTLP_ENDPOINT",
    "CREDD_METRICS_LISTEN",
    "CREDD_MAX_REQUEST_BYTES",
    "CREDD_MAX_CONCURRENT_STREAMS",
    "CREDD_KEEPALIVE_INTERVAL",
    "CREDD_KEEPALIVE_TIMEOUT",
    "CREDD_RPC_TIMEOUT",
    "CREDD_TLS_CERT",
    "CREDD_TLS_KEY",
    "CREDD_TLS_CLIENT_CA",
    "CREDD_ARGON2_M_KIB",
    "CREDD_ARGON2_T",
    "CREDD_ARGON2_P",
    "CREDD_LISTEN",
    "CREDD_DATABASE_URL",
    "CREDD_BOOTSTRAP_TOKEN",
    "CREDD_DEFAULT_LOGIN_DOMAIN",
    "CREDD_LOG",
    "CREDD_LOG_FORMAT",
    "CREDD_SHUTDOWN_GRACE",
    "CREDD_DATABASE_POOLER",
    "CREDD_DATABASE_LISTEN_URL",
    "CREDD_ARGON2_QUEUE",
    "CREDD_HEALTH_LISTEN",
];

fn credd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_credd"));
    for variable in VARIABLES {
        command.env_remove(variable);
    }
    command.env("CREDD_LOG", "warn");
    command
}

/// `credd` in `dir`, on README's default database there (`./credd.db`).
fn credd_in(dir: &std::path::Path) -> Command {
    let mut command = credd();
    command
        .current_dir(dir)
        .env("CREDD_DATABASE_URL", "sqlite://credd.db?mode=rwc");
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run credd")
}

/// Asserts a start-up failure: non-zero exit and one line on stderr mentioning `needle`.
#[track_caller]
fn assert_fails_with_one_line(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected failure, got {:?}\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(
        lines[0].contains(needle),
        "expected {needle:?} in {:?}",
        lines[0]
    );
}

#[test]
fn a_missing_flag_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(credd()
        .env(
            "CREDD_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display()),
        )
        .args(["token", "create", "--scope", "admin"]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--name"),
        "the missing flag is named: {stderr}"
    );
    assert!(
        !stderr.contains("For more information"),
        "no usage noise: {stderr}"
    );
}

/// `credd token …` run from another directory must not create a new empty SQLite
/// file the server never reads: it refuses, naming the path and the variable, and
/// every token command says which database it uses.
#[test]
fn token_commands_never_create_a_sqlite_file_and_say_which_database() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        run(credd_in(dir.path()).args(["token", "create", "--name", "ci", "--scope", "admin"]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = dir.path().join("credd.db");
    assert!(stderr.contains(&expected.display().to_string()), "{stderr}");
    assert!(stderr.contains("CREDD_DATABASE_URL"), "{stderr}");
    assert!(!expected.exists(), "no stray database file was created");

    // Once the database exists (migrate creates it), the command works and says so.
    assert!(run(credd_in(dir.path()).arg("migrate")).status.success());
    let output = run(credd_in(dir.path()).args(["token", "list"]));
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("database SQLite {}", expected.display())),
        "{stderr}"
    );
}

/// `credd doctor` says which database, address, TLS state and tokens credd would
/// use and whether the schema is current, changes nothing, and fails when
/// something would keep credd from serving.
#[test]
fn doctor_reports_what_credd_would_use_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let doctor = || {
        run(credd_in(dir.path())
            .env("CREDD_LISTEN", "127.0.0.1:50051")
            .arg("doctor"))
    };
    let output = doctor();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "no database yet: {report}");
    assert!(report.contains("FAIL schema"), "{report}");
    assert!(report.contains(&dir.path().join("credd.db").display().to_string()));
    assert!(
        !dir.path().join("credd.db").exists(),
        "doctor creates nothing"
    );

    assert!(run(credd_in(dir.path()).arg("migrate")).status.success());
    let output = doctor();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    for line in [
        "ok   listen           127.0.0.1:50051",
        "ok   TLS              off (plaintext on a loopback address)",
        "ok   bootstrap token  not set",
        "ok   schema           current",
        "ok   caller tokens    none yet",
    ] {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }
}

#[test]
fn help_never_shows_a_secret_from_the_environment() {
    const TOKEN: &str = "credd_ct_secret-value-in-the-environment";
    for binary in [
        env!("CARGO_BIN_EXE_credd"),
        env!("CARGO_BIN_EXE_credd-bench"),
    ] {
        let output = Command::new(binary)
            .arg("--help")
            .env("CREDD_TOKEN", TOKEN)
            .env("CREDD_BOOTSTRAP_TOKEN", TOKEN)
            .env("CREDD_DATABASE_URL", format!("postgres://u:{TOKEN}@h/db"))
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("--"), "{binary} printed its help");
        assert!(
            !help.contains(TOKEN),
            "{binary} --help shows an env value:\n{help}"
        );
    }
}

#[test]
fn logs_to_a_file_or_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(credd()
        .env(
            "CREDD_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display()),
        )
        .env("CREDD_LOG", "info")
        .env("CREDD_LOG_FORMAT", "pretty")
        .arg("migrate"));
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("migrations are up to date"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in a piped log: {stderr:?}"
    );
}

#[test]
fn help_explains_every_flag_and_its_variable() {
    let output = run(credd().arg("--help"));
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in VARIABLES {
        assert!(
            help.contains(variable),
            "--help does not mention {variable}:\n{help}"
        );
    }
    for word in [
        "serve",
        "migrate",
        "--listen",
        "--database-url",
        "--bootstrap-token",
    ] {
        assert!(help.contains(word), "--help does not mention {word}");
    }
}

#[test]
fn a_taken_port_fails_start_with_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = run(credd()
        .env("CREDD_LISTEN", taken.local_addr().unwrap().to_string())
        .env(
            "CREDD_DATABASE_URL",
            format!("sqlite://{}/c.db?mode=rwc", dir.path().display()),
        ));
    assert_fails_with_one_line(&output, "CREDD_LISTEN");
}

#[test]
fn bad_settings_fail_start_naming_the_variable() {
    let output = run(credd().env("CREDD_DATABASE_URL", "mysql://root@localhost/credd"));
    assert_fails_with_one_line(&output, "CREDD_DATABASE_URL");
    let output = run(credd().env("CREDD_LISTEN", "not-an-address"));
    assert_fails_with_one_line(&output, "CREDD_LISTEN");
    let output = run(credd().env("CREDD_BOOTSTRAP_TOKEN", "short"));
    assert_fails_with_one_line(&output, "CREDD_BOOTSTRAP_TOKEN");
    let output = run(credd().env("CREDD_DEFAULT_LOGIN_DOMAIN", "not a domain"));
    assert_fails_with_one_line(&output, "CREDD_DEFAULT_LOGIN_DOMAIN");
    let output = run(credd().env("CREDD_SHUTDOWN_GRACE", "soon"));
    assert_fails_with_one_line(&output, "CREDD_SHUTDOWN_GRACE");
}

#[test]
fn an_unreachable_database_fails_start_with_one_clear_line() {
    let closed_port = free_port();
    let started = Instant::now();
    let output = run(credd()
        .env("CREDD_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "CREDD_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{closed_port}/credd"),
        ));
    assert_fails_with_one_line(&output, "CREDD_DATABASE_URL");
    assert!(started.elapsed() < Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("postgres@"),
        "the URL's credentials stay out of the message: {stderr}"
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary serving on a free port with its JSON log written to a file,
/// and clients that authenticate with `token` (the bootstrap token).
struct LoggedServer {
    server: Server,
    path: std::path::PathBuf,
    channel: Channel,
    clients: Clients,
    _dir: tempfile::TempDir,
}

impl LoggedServer {
    async fn start(url: &str, token: &str, filter: &str, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credd.log");
        let port = free_port();
        let mut command = credd();
        command
            .env("CREDD_DATABASE_URL", url)
            .env("CREDD_LISTEN", format!("127.0.0.1:{port}"))
            .env("CREDD_BOOTSTRAP_TOKEN", token)
            .env("CREDD_LOG", filter)
            .env("CREDD_LOG_FORMAT", "json")
            .env("CREDD_ARGON2_M_KIB", "64")
            .env("CREDD_ARGON2_T", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&path).unwrap());
        for (key, value) in extra {
            command.env(key, value);
        }
        let server = Server(command.spawn().unwrap());
        let channel = wait_until_serving(port).await;
        let clients = Clients::new(channel.clone(), Some(token));
        Self {
            server,
            path,
            channel,
            clients,
            _dir: dir,
        }
    }
}

async fn wait_until_serving(port: u16) -> Channel {
    let mut serving = None;
    wait_until(
        "credd starts serving",
        Duration::from_secs(30),
        async || {
            if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
            {
                let mut health = HealthClient::new(channel.clone());
                if health.check(HealthCheckRequest::default()).await.is_ok() {
                    serving = Some(channel);
                }
            }
            serving.is_some()
        },
    )
    .await;
    serving.unwrap()
}

async fn migrate_then_serve_with_a_generated_token_and_stop_on_sigterm(backend: Backend) {
    let (_db, url) = TestDb::create(&backend).await;
    let output = run(credd().arg("migrate").env("CREDD_DATABASE_URL", &url));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let port = free_port();
    let mut server = Server(
        credd()
            .arg("serve")
            .env("CREDD_DATABASE_URL", &url)
            .env("CREDD_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let channel = wait_until_serving(port).await;

    // The generated token is printed once, as a line an operator can paste.
    let stdout = server.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut previous = Vec::new();
    let token = loop {
        let line = lines.next().expect("a token line").unwrap();
        if let Some(token) = line.strip_prefix("export CREDD_TOKEN=") {
            break token.to_owned();
        }
        previous.push(line);
    };
    // Set off from anything around it by a blank line before and after.
    assert_eq!(previous.len(), 2, "{previous:?}");
    assert_eq!(previous[0], "");
    assert_eq!(lines.next().unwrap().unwrap(), "");
    let mut orgs = OrgsClient::with_interceptor(channel.clone(), bearer(Some(&token)));
    orgs.list_orgs(ListOrgsRequest::default())
        .await
        .expect("the printed token works");
    let mut wrong =
        OrgsClient::with_interceptor(channel, bearer(Some("another-token-0123456789abcdef0123")));
    assert!(wrong.list_orgs(ListOrgsRequest::default()).await.is_err());

    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exit = None;
    wait_until(
        "credd stops on SIGTERM",
        Duration::from_secs(20),
        async || {
            exit = server.0.try_wait().unwrap();
            exit.is_some()
        },
    )
    .await;
    let exit = exit.unwrap();
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}");

    // A second start prints no token: the first one is stored and still works.
    let mut again = Server(
        credd()
            .env("CREDD_DATABASE_URL", &url)
            .env("CREDD_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let channel = wait_until_serving(port).await;
    OrgsClient::with_interceptor(channel, bearer(Some(&token)))
        .list_orgs(ListOrgsRequest::default())
        .await
        .expect("the first token survives a restart");
    let _ = Command::new("kill")
        .args(["-TERM", &again.0.id().to_string()])
        .status();
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut again.0.stdout.take().unwrap(), &mut printed).unwrap();
    assert!(
        !printed.contains("CREDD_TOKEN"),
        "a token is printed only on the first start: {printed}"
    );
}

#[test]
fn the_first_start_token_is_on_stderr_too_after_json_logs_as_plain_lines() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server(
        credd_in(dir.path())
            .env("CREDD_LISTEN", format!("127.0.0.1:{port}"))
            .env("CREDD_LOG", "info")
            .env("CREDD_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(server.0.stderr.take().unwrap()).lines();
    let mut previous = Vec::new();
    loop {
        let line = lines.next().expect("the token on stderr").unwrap();
        if line.starts_with("export CREDD_TOKEN=credd_ct_") {
            break;
        }
        previous.push(line);
    }
    // After every start-up log line (the last is "credd serving"), set off by blank
    // lines, and not wrapped in JSON.
    let notice = previous.len() - 1;
    assert_eq!(previous[notice - 1], "", "{previous:#?}");
    assert!(previous[notice].starts_with("credd: created the first caller token"));
    assert!(
        previous[..notice - 1]
            .iter()
            .all(|line| line.starts_with('{')),
        "{previous:#?}"
    );
    assert!(
        previous[notice - 2].contains("credd serving"),
        "{previous:#?}"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "");
}

#[test]
fn server_flags_belong_to_serve_and_token_commands_show_only_theirs() {
    let token_help = run(credd().args(["token", "create", "--help"]));
    let token_help = String::from_utf8_lossy(&token_help.stdout);
    assert!(token_help.contains("--database-url"), "{token_help}");
    for server_flag in [
        "--listen",
        "--argon2-m-kib",
        "--tls-cert",
        "--shutdown-grace",
    ] {
        assert!(
            !token_help.contains(server_flag),
            "`credd token create --help` shows {server_flag}:\n{token_help}"
        );
    }
    let serve_help = run(credd().args(["serve", "--help"]));
    let serve_help = String::from_utf8_lossy(&serve_help.stdout);
    assert!(serve_help.contains("--argon2-m-kib"), "{serve_help}");
    // A server flag given to a token command is refused, naming it, instead of
    // being silently ignored.
    let dir = tempfile::tempdir().unwrap();
    let output = run(credd_in(dir.path()).args(["token", "list", "--listen", "0.0.0.0:1"]));
    assert_fails_with_one_line(&output, "--listen");
    // The database flag works after the token subcommand too.
    let output = run(credd_in(dir.path()).args([
        "token",
        "list",
        "--database-url",
        "sqlite://elsewhere.db",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("elsewhere.db"), "{stderr}");
}

async fn no_secret_or_token_reaches_the_logs_even_at_trace(backend: Backend) {
    use credd::pb::{
        ImportClientSecretRequest, VerifyClientSecretRequest,
        activate_client_secret_request::Secret,
    };
    const TOKEN: &str = "log-test-token-0123456789abcdef0123456789";
    const IMPORTED: &str = "Vx9kP2mQ7rT4wY6zA1bC3dE5fG8hJ0kLmNoPqRsTuVw";

    let (_db, url) = TestDb::create(&backend).await;
    let log = LoggedServer::start(&url, TOKEN, "trace", &[]).await;
    let log_path = log.path.clone();
    let clients = log.clients.clone();
    let mut secrets = clients.secrets.clone();

    let org = clients.create_org().await;
    let mut plaintexts = vec![IMPORTED.to_owned()];
    for _ in 0..2 {
        let generated = clients.generate_secret(&org.id).await;
        clients
            .activate(&org.id, Secret::Plaintext(generated.plaintext.clone()), 60)
            .await
            .unwrap();
        plaintexts.push(generated.plaintext);
    }
    secrets
        .import_client_secret(ImportClientSecretRequest {
            org_id: org.id.clone(),
            plaintext: IMPORTED.into(),
            description: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    clients
        .activate(&org.id, Secret::Plaintext(IMPORTED.into()), 0)
        .await
        .unwrap();
    for secret in plaintexts.iter().chain([&format!("{}x", plaintexts[1])]) {
        secrets
            .verify_client_secret(VerifyClientSecretRequest {
                client_id: org.client_id.clone(),
                client_secret: secret.clone(),
            })
            .await
            .unwrap();
    }
    // A secret sent in the client_id field (a swapped Basic-auth pair) is not logged.
    secrets
        .verify_client_secret(VerifyClientSecretRequest {
            client_id: plaintexts[1].clone(),
            client_secret: org.client_id.clone(),
        })
        .await
        .unwrap();
    // A failed import of a weak value must not echo it either.
    let weak = "weak-but-recognisable-value";
    assert!(
        secrets
            .import_client_secret(ImportClientSecretRequest {
                org_id: org.id.clone(),
                plaintext: weak.into(),
                description: String::new(),
                ..Default::default()
            })
            .await
            .is_err()
    );

    // A caller token made by the command line, at trace too, then used.
    let created = credd()
        .args([
            "token",
            "create",
            "--name",
            "logged",
            "--scope",
            "orgs:read",
        ])
        .env("CREDD_DATABASE_URL", &url)
        .env("CREDD_LOG", "trace")
        .output()
        .unwrap();
    assert!(created.status.success());
    let caller_token = String::from_utf8(created.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let mut as_caller =
        OrgsClient::with_interceptor(log.channel.clone(), bearer(Some(&caller_token)));
    wait_until(
        "the running server accepts the new caller token",
        Duration::from_secs(10),
        async || {
            as_caller
                .list_orgs(ListOrgsRequest::default())
                .await
                .is_ok()
        },
    )
    .await;

    drop(log.server);
    let logs =
        std::fs::read_to_string(&log_path).unwrap() + &String::from_utf8_lossy(&created.stderr);
    assert!(
        logs.contains("client secret refused"),
        "the logs were captured:\n{logs}"
    );
    assert!(logs.contains("client secret activated") && logs.contains("caller token created"));
    for secret in plaintexts
        .iter()
        .map(String::as_str)
        .chain([TOKEN, weak, caller_token.as_str()])
    {
        // The random middle of each secret: no prefix or hint can match by chance.
        let needle = &secret[secret.len() / 4..secret.len() * 3 / 4];
        assert!(!logs.contains(needle), "a secret reached the logs");
    }
}

/// A flood of wrong secrets is a few summing-up lines per org, not a line per
/// request: the first refusal of each org (and of unknown or malformed clients) is
/// logged at once, the rest counted into one line per interval and at shutdown.
async fn a_flood_of_refused_verifications_is_a_few_log_lines_with_counts(backend: Backend) {
    use credd::pb::VerifyClientSecretRequest;
    const TOKEN: &str = "log-flood-token-0123456789abcdef0123456789";

    let (_db, url) = TestDb::create(&backend).await;
    let mut log =
        LoggedServer::start(&url, TOKEN, "info", &[("CREDD_VERIFY_THROTTLE_RATE", "0")]).await;
    let log_path = log.path.clone();
    let clients = log.clients.clone();
    let org = clients.create_org().await;
    let (_, secret) = clients.generate_and_activate(&org.id).await;
    let mut secrets = clients.secrets.clone();
    let mut verify = async |client_id: String, client_secret: String| {
        let answer = secrets
            .verify_client_secret(VerifyClientSecretRequest {
                client_id,
                client_secret,
            })
            .await
            .unwrap();
        assert!(!answer.into_inner().valid);
    };
    for _ in 0..200 {
        verify(
            org.client_id.clone(),
            crate::helpers::wrong_version_of(&secret),
        )
        .await;
    }
    for i in 0..50 {
        verify(
            format!("{i:032x}"),
            crate::helpers::wrong_version_of(&secret),
        )
        .await;
    }
    for _ in 0..50 {
        verify(secret.clone(), org.client_id.clone()).await;
    }
    let mut apps = clients.apps.clone();
    for i in 0..20 {
        let check = apps
            .check_redirect_uri(credd::pb::CheckRedirectUriRequest {
                client_id: org.client_id.clone(),
                redirect_uri: format!("https://www.example.net/not-registered/{i}"),
            })
            .await
            .unwrap();
        assert!(!check.into_inner().allowed);
    }
    let status = Command::new("kill")
        .args(["-TERM", &log.server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(
        "credd stops on SIGTERM",
        Duration::from_secs(20),
        async || log.server.0.try_wait().unwrap().is_some(),
    )
    .await;

    let log = std::fs::read_to_string(&log_path).unwrap();
    let refusals: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("client secret refused"))
        })
        .collect();
    let counted = |pick: &dyn Fn(&serde_json::Value) -> bool| -> u64 {
        refusals
            .iter()
            .filter(|line| pick(line))
            .map(|line| line["fields"]["count"].as_u64().unwrap())
            .sum()
    };
    assert!(
        refusals.len() <= 9,
        "at most a first line and a couple of sums per org and bucket, got {}:\n{log}",
        refusals.len()
    );
    assert_eq!(
        counted(&|l| l["fields"]["org_id"] == org.id.as_str()),
        200,
        "{log}"
    );
    assert_eq!(
        counted(&|l| l["fields"]["message"] == "client secret refused: no such client"),
        50
    );
    assert_eq!(
        counted(&|l| l["fields"]["client_id"] == "(malformed, not logged)"),
        50
    );
    assert!(
        !log.contains(&secret),
        "the secret sent as client_id is not logged"
    );
    let redirects: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "redirect URIs refused: not registered")
        .collect();
    assert!(
        (1..=3).contains(&redirects.len()),
        "a first line and sums, not a line per refusal: {}",
        redirects.len()
    );
    assert_eq!(
        redirects
            .iter()
            .map(|line| line["fields"]["count"].as_u64().unwrap())
            .sum::<u64>(),
        20
    );
}

/// With the default log filter, migrating a fresh database prints one line: no
/// notices of the database driver, no line per applied migration.
/// The value of the metric sample named `name` (no labels) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `/metrics` of the server whose metrics listen on `port`.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: credd\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

/// SIGTERM with 64 cold verifications in flight (imported secrets: argon2 each,
/// queued on two workers): health turns NOT_SERVING while they still run, every
/// one of them completes `valid`, and the process exits 0 within the grace.
async fn sigterm_with_64_in_flight_completes_every_accepted_call(backend: Backend) {
    const IN_FLIGHT: usize = 64;
    let (_db, url) = TestDb::create(&backend).await;
    let (port, metrics_port) = (free_port(), free_port());
    let grace = Duration::from_secs(20);
    let mut server = Server(
        credd()
            .arg("serve")
            .env("CREDD_DATABASE_URL", &url)
            .env("CREDD_LISTEN", format!("127.0.0.1:{port}"))
            .env("CREDD_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("CREDD_BOOTSTRAP_TOKEN", crate::helpers::TOKEN)
            .env("CREDD_SHUTDOWN_GRACE", format!("{}s", grace.as_secs()))
            // Each verification costs some 60 ms of argon2 in this (unoptimised)
            // build, so the 64 take a few seconds on two workers: long enough to
            // signal amid them.
            .env("CREDD_ARGON2_M_KIB", "2048")
            .env("CREDD_ARGON2_T", "1")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let channel = wait_until_serving(port).await;
    let clients = Clients::new(channel.clone(), Some(crate::helpers::TOKEN));
    let mut orgs = Vec::new();
    for _ in 0..IN_FLIGHT {
        let org = clients.create_org().await;
        let (_, plaintext) = clients.import_and_activate(&org.id).await;
        orgs.push((org.client_id, plaintext));
    }

    let mut health = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.message().await.unwrap().unwrap().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let completed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls: Vec<_> = orgs
        .into_iter()
        .map(|(client_id, plaintext)| {
            let (clients, completed) = (clients.clone(), completed.clone());
            tokio::spawn(async move {
                let verdict = clients.verify(&client_id, &plaintext).await;
                completed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                verdict
            })
        })
        .collect();
    // Every call is inside credd: running on a worker or waiting for one.
    wait_until(
        "64 verifications in flight",
        Duration::from_secs(20),
        async || {
            let text = scrape(metrics_port).await;
            let inside =
                sample(&text, "credd_argon2_in_flight") + sample(&text, "credd_argon2_waiting");
            inside as usize + completed.load(std::sync::atomic::Ordering::SeqCst) >= IN_FLIGHT
        },
    )
    .await;
    let done_before_signal = completed.load(std::sync::atomic::Ordering::SeqCst);

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let not_serving = tokio::time::timeout(Duration::from_secs(5), health.message())
        .await
        .expect("a health update after SIGTERM")
        .unwrap()
        .unwrap();
    assert_eq!(
        not_serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
    let done_at_not_serving = completed.load(std::sync::atomic::Ordering::SeqCst);
    // Having said so, the watch ends rather than hold the drain open.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), health.message())
            .await
            .expect("the watch ends")
            .expect("cleanly")
            .is_none()
    );
    assert!(
        done_at_not_serving < IN_FLIGHT,
        "NOT_SERVING came first, while calls were still running"
    );

    let mut failed = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(true) => {}
            other => failed.push(format!("{other:?}")),
        }
    }
    let drained = signalled.elapsed();
    let mut exit = None;
    wait_until("credd exits after the drain", grace, async || {
        exit = server.0.try_wait().unwrap();
        exit.is_some()
    })
    .await;
    let exited = signalled.elapsed();
    let exit = exit.unwrap();
    eprintln!(
        "drain: {IN_FLIGHT} in flight ({done_before_signal} done before SIGTERM, \
         {done_at_not_serving} when NOT_SERVING arrived), {} failed, last answer {drained:.2?} \
         and exit {exited:.2?} after SIGTERM",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "every accepted call completes: {failed:?}"
    );
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}");
    assert!(
        exited < grace,
        "exit within CREDD_SHUTDOWN_GRACE ({exited:?})"
    );
}

async fn migrating_prints_one_line_by_default(backend: Backend) {
    let (_db, url) = TestDb::create(&backend).await;
    let output = run(credd()
        .env_remove("CREDD_LOG")
        .env("CREDD_DATABASE_URL", &url)
        .arg("migrate"));
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("migrations are up to date"), "{stderr}");
}

both_backends!(
    migrating_prints_one_line_by_default,
    a_flood_of_refused_verifications_is_a_few_log_lines_with_counts,
    migrate_then_serve_with_a_generated_token_and_stop_on_sigterm,
    sigterm_with_64_in_flight_completes_every_accepted_call,
    no_secret_or_token_reaches_the_logs_even_at_trace,
    a_config_file_sits_under_the_variables,
);

#[test]
fn an_unknown_key_in_the_config_file_fails_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credd.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\ncolour = \"blue\"\n").unwrap();
    let output = run(credd().arg("--config").arg(&path));
    assert_fails_with_one_line(&output, "unknown setting `colour`");
}

async fn a_config_file_sits_under_the_variables(backend: Backend) {
    let (_db, url) = TestDb::create(&backend).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credd.toml");
    let port = free_port();
    let token = "config-file-token-0123456789abcdef0123";
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{url}\"\nbootstrap_token = \"{token}\"\n\
             default_login_domain = \"from.file.example\"\nargon2_m_kib = 64\n"
        ),
    )
    .unwrap();
    let _server = Server(
        credd()
            .args(["serve", "--config"])
            .arg(&path)
            .env("CREDD_DEFAULT_LOGIN_DOMAIN", "from.env.example")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The file chose the port and the token; the variable beat the file's domain.
    let org = Clients::new(wait_until_serving(port).await, Some(token))
        .create_org()
        .await;
    assert_eq!(org.login_domain, "from.env.example");
}
