//! The alert rules and the dashboard against a real Prometheus scraping a real
//! credd: the failed-verification alert fires for the org under attack and then
//! resolves, and every query of the rules and of the dashboard evaluates and names
//! only metrics credd exports.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{Backend, spawn_app_with, wait_until, wrong_version_of};

/// The prometheus binary, or `None` when it is not installed and not required.
/// CI sets `CREDD_REQUIRE_PROMETHEUS=1` (and installs Debian's `prometheus`).
fn prometheus_installed() -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CREDD_REQUIRE_PROMETHEUS").is_none(),
            "prometheus is required but not installed: apt-get install prometheus"
        );
        eprintln!("prometheus not installed: test skipped (apt-get install prometheus)");
    }
    found
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rules with their windows and `for:` shortened to seconds, so that an alert
/// fires and resolves within a test; the expressions are otherwise the shipped ones.
fn rules_in_seconds(rules: &str) -> String {
    let mut out = String::new();
    for line in rules.lines() {
        let mut line = line.to_owned();
        for minutes in ["1", "2", "5", "10", "15"] {
            line = line.replace(&format!("[{minutes}m]"), "[10s]");
            line = line.replace(&format!("for: {minutes}m"), "for: 1s");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

async fn start_prometheus(target: SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string("deploy/prometheus/alerts.yaml").unwrap();
    std::fs::write(dir.path().join("alerts.yaml"), rules_in_seconds(&rules)).unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - alerts.yaml\n\
             scrape_configs:\n  - job_name: credd\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prometheus = Prometheus {
        child,
        addr,
        _dir: dir,
    };
    wait_until("Prometheus is ready", Duration::from_secs(30), async || {
        get(addr, "/-/ready")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    prometheus
}

/// A GET over HTTP/1.0: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

async fn api(prometheus: &Prometheus, path: &str) -> serde_json::Value {
    let (_, body) = get(prometheus.addr, path)
        .await
        .expect("Prometheus answers");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON from {path}: {body}"))
}

/// The alerts Prometheus has for `name` and `org_id`, with their state.
async fn alert_states(prometheus: &Prometheus, name: &str, org_id: &str) -> Vec<String> {
    let answer = api(prometheus, "/api/v1/alerts").await;
    answer["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == name && a["labels"]["org_id"] == org_id)
        .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn the_failed_verification_alert_fires_for_the_attacked_org_and_resolves(backend: Backend) {
    if !prometheus_installed() {
        return;
    }
    let app = spawn_app_with(backend, |s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics = app.metrics_addr.expect("metrics enabled");
    let prometheus = start_prometheus(metrics).await;
    let attacked = app.create_org().await;
    let (_, secret) = app.generate_and_activate(&attacked.id).await;
    let calm = app.create_org().await;
    let (_, calm_secret) = app.generate_and_activate(&calm.id).await;

    // A burst of wrong secrets for one org, about 20 a second, until Prometheus
    // says the alert fires (the shortened rule: more than 1/s over 10 s).
    let burst = async {
        loop {
            for _ in 0..4 {
                assert!(
                    !app.verifies(&attacked.client_id, &wrong_version_of(&secret))
                        .await
                );
            }
            assert!(app.verifies(&calm.client_id, &calm_secret).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let firing = async {
        wait_until(
            "CreddVerifyFailuresSpike fires",
            Duration::from_secs(60),
            async || {
                alert_states(&prometheus, "CreddVerifyFailuresSpike", &attacked.id)
                    .await
                    .iter()
                    .any(|s| s == "firing")
            },
        )
        .await
    };
    tokio::select! {
        _ = firing => {}
        () = burst => unreachable!(),
    }
    assert!(
        alert_states(&prometheus, "CreddVerifyFailuresSpike", &calm.id)
            .await
            .is_empty(),
        "the calm org raises no alert"
    );
    // The burst stopped: the rate falls to zero and the alert resolves.
    wait_until(
        "CreddVerifyFailuresSpike resolves",
        Duration::from_secs(60),
        async || {
            alert_states(&prometheus, "CreddVerifyFailuresSpike", &attacked.id)
                .await
                .is_empty()
        },
    )
    .await;

    // A secret that ends within CREDD_EXPIRY_WARNING: the gauge per org appears
    // (an org with nothing expiring has no series).
    let expiring = app.create_org().await;
    let generated = app
        .generate_secret_with(
            &expiring.id,
            Some(credd::pb::generate_client_secret_request::Expiration::Ttl(
                prost_types::Duration {
                    seconds: 86_400,
                    nanos: 0,
                },
            )),
        )
        .await
        .unwrap();
    app.activate(
        &expiring.id,
        credd::pb::activate_client_secret_request::Secret::SecretId(generated.secret.unwrap().id),
        0,
    )
    .await
    .unwrap();
    let series = format!("credd_secrets_expiring{{org_id=\"{}\"}} 1", expiring.id);
    wait_until(
        "the expiring gauge counts the secret",
        Duration::from_secs(30),
        async || {
            get(metrics, "/metrics")
                .await
                .is_some_and(|(_, body)| body.contains(&series))
        },
    )
    .await;

    // Refused RPCs, for the dashboard's panel of non-OK codes: asking for an org
    // that does not exist is NOT_FOUND. Waited for until Prometheus has scraped
    // them twice (a rate needs two samples).
    let refused = || {
        let mut orgs = app.orgs.clone();
        async move {
            let missing = orgs
                .get_org(credd::pb::GetOrgRequest {
                    lookup: Some(credd::pb::get_org_request::Lookup::Id(
                        credd::domain::ids::OrgId::generate().into_string(),
                    )),
                })
                .await;
            assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
        }
    };
    let non_ok = url::form_urlencoded::byte_serialize(
        br#"sum(rate(credd_rpc_requests_total{code!="OK"}[1m])) > 0"#,
    )
    .collect::<String>();
    wait_until(
        "Prometheus has a rate of refused RPCs",
        Duration::from_secs(30),
        async || {
            refused().await;
            let answer = api(&prometheus, &format!("/api/v1/query?query={non_ok}")).await;
            answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    )
    .await;

    // Every query of the rules (as shipped) and of the dashboard evaluates, and
    // names only metrics credd exports.
    let exported = get(metrics, "/metrics").await.unwrap().1;
    let rules: rules_file::Rules = rules_file::read("deploy/prometheus/alerts.yaml");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/credd.json").unwrap())
            .unwrap();
    let mut queries: Vec<(String, bool)> = rules.exprs.into_iter().map(|q| (q, false)).collect();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*"),
                true,
            ));
        }
    }
    assert!(
        queries.len() > 20,
        "the rules and the dashboard hold queries"
    );
    // An alert's expression is empty while it does not fire; a dashboard query
    // that answers nothing after this traffic draws an empty panel (a typo in a
    // label or a metric name still "evaluates").
    let mut empty_panels = Vec::new();
    for (query, from_dashboard) in &queries {
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let answer = api(&prometheus, &format!("/api/v1/query?query={encoded}")).await;
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        for name in metric_names(query) {
            assert!(
                exported.contains(&name),
                "{query} names {name}, which credd does not export"
            );
        }
        let result = &answer["data"]["result"];
        let empty = result.as_array().is_some_and(Vec::is_empty) || result.is_null();
        if *from_dashboard && empty {
            empty_panels.push(query.clone());
        }
    }
    assert!(
        empty_panels.is_empty(),
        "dashboard queries that answer nothing:\n{}",
        empty_panels.join("\n")
    );
}

/// The `credd_…` metric names in a query.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("credd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The few fields of a rules file the test needs, read without a YAML crate: the
/// `expr:` of each rule (one line, or a `|` block).
mod rules_file {
    pub struct Rules {
        pub exprs: Vec<String>,
    }

    pub fn read(path: &str) -> Rules {
        let text = std::fs::read_to_string(path).unwrap();
        let mut exprs = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let Some((indent, value)) = line.split_once("expr:") else {
                continue;
            };
            let value = value.trim();
            if value == "|" {
                let mut block = String::new();
                while let Some(next) = lines.peek() {
                    if next.len() - next.trim_start().len() <= indent.len() {
                        break;
                    }
                    block.push_str(next.trim());
                    block.push(' ');
                    lines.next();
                }
                exprs.push(block);
            } else {
                exprs.push(value.to_owned());
            }
        }
        Rules { exprs }
    }
}

both_backends!(the_failed_verification_alert_fires_for_the_attacked_org_and_resolves);
