//! Settings: defaults in code, overridden by `CREDD_*` variables, overridden by flags.
//! Every bad value fails start-up with one line naming the flag, its variable and
//! the rule.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;

use crate::domain::host;

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The default of `CREDD_DATABASE_URL`: `credd.db` in the current directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://credd.db?mode=rwc";
/// The default of `CREDD_LOG`: sqlx's notices and each applied migration stay out.
pub const DEFAULT_LOG: &str = "info,tonic=warn,h2=warn,hyper=warn,sqlx=warn,sea_orm_migration=warn";

/// How credd runs. Each field is a flag and a `CREDD_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Optional TOML file of settings, keyed by the flag names with underscores
    /// (`listen = "0.0.0.0:50051"`, `verify_cache_ttl = "5m"`). Variables and flags
    /// override it.
    #[arg(long, env = "CREDD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address and port to serve gRPC on.
    #[arg(long, env = "CREDD_LISTEN", default_value = "127.0.0.1:50051", value_name = "ADDR",
          value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Database URL: `sqlite://PATH?mode=rwc` (embedded, created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`.
    #[arg(
        long,
        env = "CREDD_DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        value_name = "URL",
        hide_env_values = true,
        hide_default_value = false
    )]
    pub database_url: SecretString,

    /// What CREDD_DATABASE_URL points at: the database itself, or a pooler in
    /// transaction mode (PgBouncer `pool_mode = transaction`, RDS Proxy,
    /// Supavisor), through which credd then runs every statement in a transaction
    /// that clears its prepared statements first.
    #[arg(
        long,
        env = "CREDD_DATABASE_POOLER",
        default_value = "none",
        value_enum,
        value_name = "MODE"
    )]
    pub database_pooler: crate::store::Pooler,

    /// A direct URL of the same PostgreSQL database, for what a transaction pooler
    /// cannot carry: LISTEN (replicas learn of changes at once) and migrations
    /// (they hold a session lock). Unset behind a pooler, the change counter alone
    /// keeps replicas within a second and a pending migration is refused.
    #[arg(
        long,
        env = "CREDD_DATABASE_LISTEN_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_listen_url: Option<SecretString>,

    /// An extra admin caller token for automation and tests, at least 32 printable
    /// characters, accepted as `authorization: Bearer <token>` (until
    /// CREDD_BOOTSTRAP_TOKEN_EXPIRE, when set). Unset, the first start over a
    /// database without caller tokens creates a stored `admin` token and prints it
    /// once.
    #[arg(long, env = "CREDD_BOOTSTRAP_TOKEN", value_name = "TOKEN", hide_env_values = true,
          value_parser = parse_bootstrap_token)]
    pub bootstrap_token: Option<SecretString>,

    /// When CREDD_BOOTSTRAP_TOKEN stops being accepted (RFC 3339, such as
    /// `2026-12-31T00:00:00Z`); unset: it never expires. Set it in production, or
    /// unset the token once named tokens exist.
    #[arg(long, env = "CREDD_BOOTSTRAP_TOKEN_EXPIRE", value_name = "TIME",
          value_parser = parse_bootstrap_token_expire)]
    pub bootstrap_token_expire: Option<chrono::DateTime<chrono::Utc>>,

    /// Login host of orgs that set no custom domain.
    #[arg(long, env = "CREDD_DEFAULT_LOGIN_DOMAIN", default_value = "login.credd.local",
          value_name = "HOST", value_parser = parse_login_domain)]
    pub default_login_domain: String,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(
        long,
        env = "CREDD_LOG",
        default_value = DEFAULT_LOG,
        value_name = "FILTER"
    )]
    pub log: String,

    /// Log format.
    #[arg(long, env = "CREDD_LOG_FORMAT", default_value = "pretty", value_enum)]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint to export traces to (`http://otel-collector:4317`); traces
    /// are off when unset.
    #[arg(long, env = "CREDD_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Address to serve Prometheus metrics on, at /metrics (`0.0.0.0:9090`); off when
    /// unset.
    #[arg(long, env = "CREDD_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_metrics_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Address to serve grpc.health.v1 alone on, in plaintext, for probes that
    /// cannot speak TLS (the kubelet's gRPC probe) while the main port serves TLS
    /// (`0.0.0.0:50052`); off when unset.
    #[arg(long, env = "CREDD_HEALTH_LISTEN", value_name = "ADDR", value_parser = parse_health_listen)]
    pub health_listen: Option<SocketAddr>,

    /// PEM certificate chain to serve TLS with (needs CREDD_TLS_KEY).
    #[arg(long, env = "CREDD_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the TLS certificate.
    #[arg(long, env = "CREDD_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when set, every client must present a certificate it signed (mTLS).
    #[arg(long, env = "CREDD_TLS_CLIENT_CA", value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,

    /// argon2id memory per hash, in KiB (OWASP: 19456).
    #[arg(
        long = "argon2-m-kib",
        env = "CREDD_ARGON2_M_KIB",
        default_value_t = 19_456,
        value_name = "KIB"
    )]
    pub argon2_m_kib: u32,

    /// argon2id passes (OWASP: 2).
    #[arg(
        long = "argon2-t",
        env = "CREDD_ARGON2_T",
        default_value_t = 2,
        value_name = "N"
    )]
    pub argon2_t: u32,

    /// argon2id lanes (OWASP: 1).
    #[arg(
        long = "argon2-p",
        env = "CREDD_ARGON2_P",
        default_value_t = 1,
        value_name = "N"
    )]
    pub argon2_p: u32,

    /// Largest request message accepted, in bytes; larger is refused before the
    /// handler runs.
    #[arg(
        long,
        env = "CREDD_MAX_REQUEST_BYTES",
        default_value_t = 65_536,
        value_name = "BYTES"
    )]
    pub max_request_bytes: usize,

    /// HTTP/2 streams (concurrent RPCs) one connection may have open.
    #[arg(
        long,
        env = "CREDD_MAX_CONCURRENT_STREAMS",
        default_value_t = 256,
        value_name = "N"
    )]
    pub max_concurrent_streams: u32,

    /// Interval of HTTP/2 keepalive pings (and TCP keepalive) on idle connections.
    #[arg(long, env = "CREDD_KEEPALIVE_INTERVAL", default_value = "30s", value_name = "DURATION",
          value_parser = parse_duration_of("CREDD_KEEPALIVE_INTERVAL"))]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "CREDD_KEEPALIVE_TIMEOUT", default_value = "10s", value_name = "DURATION",
          value_parser = parse_duration_of("CREDD_KEEPALIVE_TIMEOUT"))]
    pub keepalive_timeout: Duration,

    /// Longest time one RPC may run on the server; past it the call is cancelled.
    #[arg(long, env = "CREDD_RPC_TIMEOUT", default_value = "30s", value_name = "DURATION",
          value_parser = parse_duration_of("CREDD_RPC_TIMEOUT"))]
    pub rpc_timeout: Duration,

    /// How long a successful verification is cached (`5m`; `0` disables the cache).
    #[arg(long, env = "CREDD_VERIFY_CACHE_TTL", default_value = "5m", value_name = "DURATION",
          value_parser = parse_cache_ttl)]
    pub verify_cache_ttl: Duration,

    /// Uncached (argon2) verifications per second allowed per client ID; 0 turns the
    /// throttle off.
    #[arg(long, env = "CREDD_VERIFY_THROTTLE_RATE", default_value_t = 50.0, value_name = "PER_SECOND",
          value_parser = parse_rate)]
    pub verify_throttle_rate: f64,

    /// Burst of uncached verifications a client may make before the rate applies.
    #[arg(
        long,
        env = "CREDD_VERIFY_THROTTLE_BURST",
        default_value_t = 100,
        value_name = "N"
    )]
    pub verify_throttle_burst: u32,

    /// argon2 computations that run at once (default: one per core); each owns a
    /// pre-allocated memory block.
    #[arg(long, env = "CREDD_ARGON2_WORKERS", value_name = "N")]
    pub argon2_workers: Option<usize>,

    /// Callers that may wait for an argon2 worker; past it, RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "CREDD_ARGON2_QUEUE",
        default_value_t = 1024,
        value_name = "N"
    )]
    pub argon2_queue: usize,

    /// How long SIGTERM or Ctrl-C waits for in-flight calls before exiting anyway
    /// (`10s`, `1m`).
    #[arg(long, env = "CREDD_SHUTDOWN_GRACE", default_value = "10s", value_name = "DURATION",
          value_parser = parse_shutdown_grace)]
    pub shutdown_grace: Duration,

    /// How long what is in memory (the directory of orgs, apps and secrets, cached
    /// verdicts) keeps answering after the change feed was last read, while the
    /// store cannot be reached; past it such calls answer UNAVAILABLE.
    #[arg(long, env = "CREDD_STALE_IF_ERROR", default_value = "30s", value_name = "DURATION",
          value_parser = parse_stale_if_error)]
    pub stale_if_error: Duration,

    /// How long before a secret stops verifying it counts as expiring (the
    /// `credd_secrets_expiring` metric).
    #[arg(long, env = "CREDD_EXPIRY_WARNING", default_value = "14d", value_name = "DURATION",
          value_parser = parse_duration_of("CREDD_EXPIRY_WARNING"))]
    pub expiry_warning: Duration,

    /// How often secrets past their end are stored as such (tests speed it up).
    /// Not a flag.
    #[arg(skip)]
    pub sweep_interval: Option<Duration>,

    /// How often the change counter is polled (tests slow it down to show that
    /// PostgreSQL notifications alone invalidate at once); `None`: the store's own
    /// interval. Not a flag.
    #[arg(skip)]
    pub change_poll_interval: Option<Duration>,
}

/// The settings of the commands that only open the database (`migrate`, `token`):
/// the same flags and variables as [`Settings`]'s, and no server flags in their
/// `--help`. Global within their command, so `credd token list --database-url …`
/// works as well as `credd token --database-url … list`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreSettings {
    /// Optional TOML file of settings (see `credd --help`); only `database_url`,
    /// `log` and `log_format` matter here.
    #[arg(long, env = "CREDD_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// Database URL: `sqlite://PATH?mode=rwc` or `postgres://USER:PASSWORD@HOST:PORT/DB`.
    #[arg(
        long,
        env = "CREDD_DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: SecretString,

    /// What CREDD_DATABASE_URL points at: the database itself, or a pooler in
    /// transaction mode (PgBouncer `pool_mode = transaction`, RDS Proxy,
    /// Supavisor), through which credd then runs every statement in a transaction
    /// that clears its prepared statements first.
    #[arg(
        long,
        env = "CREDD_DATABASE_POOLER",
        default_value = "none",
        value_enum,
        value_name = "MODE",
        global = true
    )]
    pub database_pooler: crate::store::Pooler,

    /// A direct URL of the same PostgreSQL database, for what a transaction pooler
    /// cannot carry: LISTEN (replicas learn of changes at once) and migrations
    /// (they hold a session lock). Unset behind a pooler, the change counter alone
    /// keeps replicas within a second and a pending migration is refused.
    #[arg(
        long,
        env = "CREDD_DATABASE_LISTEN_URL",
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    pub database_listen_url: Option<SecretString>,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "CREDD_LOG", default_value = DEFAULT_LOG, value_name = "FILTER", global = true)]
    pub log: String,

    /// Log format.
    #[arg(
        long,
        env = "CREDD_LOG_FORMAT",
        default_value = "pretty",
        value_enum,
        global = true
    )]
    pub log_format: LogFormat,
}

impl StoreSettings {
    /// These values, with every server setting at its declared default.
    pub fn into_settings(self) -> Settings {
        use secrecy::ExposeSecret as _;
        let mut settings = Settings::with_database(self.database_url.expose_secret());
        settings.config = self.config;
        settings.database_pooler = self.database_pooler;
        settings.database_listen_url = self.database_listen_url;
        settings.log = self.log;
        settings.log_format = self.log_format;
        settings
    }
}

impl Settings {
    /// Settings for a server on `database_url` with every other value at the
    /// default its flag declares (the flags are the one source of the defaults;
    /// the environment is not read).
    pub fn with_database(database_url: &str) -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Defaults::command()
            .mut_args(|arg| arg.env(None::<&str>))
            .try_get_matches_from(["credd", "--database-url", database_url]);
        #[allow(clippy::expect_used)] // every default parses: `defaults_parse` proves it
        let matches = matches.expect("the declared defaults parse");
        #[allow(clippy::expect_used)]
        Defaults::from_arg_matches(&matches)
            .expect("the declared defaults parse")
            .settings
    }
}

/// The settings alone, to read the declared defaults from.
#[derive(clap::Parser)]
struct Defaults {
    #[command(flatten)]
    settings: Settings,
}

/// The settings file named by `--config PATH` / `--config=PATH` in `args`, or by
/// `CREDD_CONFIG`.
pub fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("CREDD_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Makes the values of the TOML file at `path` the defaults of `command`'s
/// settings (and of its subcommands' that have them), under the `CREDD_*`
/// variables and the flags, which still override them. A key that no command
/// knows, or a value that is not a string, number or boolean, fails with a line
/// naming it.
pub fn apply_config_file(
    command: clap::Command,
    path: &std::path::Path,
) -> Result<clap::Command, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("CREDD_CONFIG: cannot read {}: {err}", path.display()))?;
    apply_config_text(command, &text, &path.display().to_string())
}

/// [`apply_config_file`] on the file's `text`; `origin` names the file in errors.
pub fn apply_config_text(
    mut command: clap::Command,
    text: &str,
    origin: &str,
) -> Result<clap::Command, String> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|err| format!("CREDD_CONFIG: {origin} is not valid TOML: {err}"))?;
    for (key, value) in table {
        if key == "config" || !knows(&command, &key) {
            return Err(format!("CREDD_CONFIG: unknown setting `{key}` in {origin}"));
        }
        let value = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(format!(
                    "CREDD_CONFIG: `{key}` must be a string, number or boolean"
                ));
            }
        };
        command = with_default(command, &key, &value);
    }
    Ok(command)
}

/// Whether `command` or one of its subcommands has the argument `id`.
fn knows(command: &clap::Command, id: &str) -> bool {
    command.get_arguments().any(|arg| arg.get_id() == id)
        || command.get_subcommands().any(|sub| knows(sub, id))
}

/// `command` with `value` as the default of argument `id` wherever it is declared.
fn with_default(mut command: clap::Command, id: &str, value: &str) -> clap::Command {
    if command.get_arguments().any(|arg| arg.get_id() == id) {
        let value = value.to_owned();
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| with_default(sub, id, value));
    }
    command
}

fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| "CREDD_LISTEN must be an IP address and port such as 127.0.0.1:50051".into())
}

fn parse_metrics_listen(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        "CREDD_METRICS_LISTEN must be an IP address and port such as 0.0.0.0:9090".into()
    })
}

fn parse_health_listen(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        "CREDD_HEALTH_LISTEN must be an IP address and port such as 0.0.0.0:50052".into()
    })
}

fn parse_bootstrap_token(value: &str) -> Result<SecretString, String> {
    if value.len() < 32 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "CREDD_BOOTSTRAP_TOKEN must be at least 32 printable characters without spaces".into(),
        );
    }
    Ok(value.into())
}

fn parse_bootstrap_token_expire(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|time| time.to_utc())
        .map_err(|_| {
            "CREDD_BOOTSTRAP_TOKEN_EXPIRE must be an RFC 3339 time such as 2026-12-31T00:00:00Z"
                .into()
        })
}

fn parse_login_domain(value: &str) -> Result<String, String> {
    host::parse_dns_host("CREDD_DEFAULT_LOGIN_DOMAIN", value)
        .map_err(|v| format!("{} {}", v.field, v.reason))
}

/// A parser of positive durations (`10s`, `1m`) whose error names `variable`.
fn parse_duration_of(variable: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |value| match humantime::parse_duration(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!(
            "{variable} must be a positive duration such as 10s or 1m"
        )),
    }
}

fn parse_cache_ttl(value: &str) -> Result<Duration, String> {
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value).map_err(|_| {
        "CREDD_VERIFY_CACHE_TTL must be a duration such as 5m, or 0 to disable the cache".into()
    })
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate >= 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(
            "CREDD_VERIFY_THROTTLE_RATE must be a number of verifications per second, 0 or more"
                .into(),
        ),
    }
}

fn parse_stale_if_error(value: &str) -> Result<Duration, String> {
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value).map_err(|_| {
        "CREDD_STALE_IF_ERROR must be a duration such as 30s, or 0 to answer nothing from memory during an outage".into()
    })
}

fn parse_shutdown_grace(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|_| "CREDD_SHUTDOWN_GRACE must be a duration such as 10s or 1m".into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn defaults_parse() {
        let settings = Settings::with_database("sqlite::memory:");
        assert_eq!(settings.listen, SocketAddr::from(([127, 0, 0, 1], 50051)));
        assert_eq!(settings.default_login_domain, "login.credd.local");
        assert_eq!(settings.argon2_m_kib, 19_456);
        assert_eq!(settings.verify_cache_ttl, Duration::from_secs(300));
        assert_eq!(settings.shutdown_grace, Duration::from_secs(10));
        assert_eq!(settings.bootstrap_token.map(|_| ()), None);
    }

    /// README's settings table, as `--flag` -> (variable, default column).
    fn readme_table() -> HashMap<String, (String, String)> {
        include_str!("../README.md")
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let flag = cells.get(1)?.strip_prefix("`--")?.strip_suffix('`')?;
                let variable = cells.get(2)?.trim_matches('`');
                let default = cells.get(3)?;
                Some((
                    flag.to_owned(),
                    (variable.to_owned(), (*default).to_owned()),
                ))
            })
            .collect()
    }

    #[test]
    fn readme_lists_every_flag_with_its_variable_and_declared_default() {
        let table = readme_table();
        let command = Defaults::command();
        let mut flags = 0;
        for arg in command.get_arguments() {
            let Some(flag) = arg.get_long() else { continue };
            flags += 1;
            let (variable, default) = table
                .get(flag)
                .unwrap_or_else(|| panic!("README's settings table lacks --{flag}"));
            let declared_variable = arg.get_env().map(|v| v.to_string_lossy().into_owned());
            assert_eq!(Some(variable.clone()), declared_variable, "--{flag}");
            match arg.get_default_values() {
                [value] => assert_eq!(
                    default.trim_matches('`'),
                    value.to_string_lossy(),
                    "README's default of --{flag}"
                ),
                _ => assert!(
                    !default.starts_with('`'),
                    "--{flag} declares no default, README shows {default}"
                ),
            }
        }
        assert_eq!(flags, table.len(), "README lists flags credd does not have");
    }
}
