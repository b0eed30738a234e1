//! The `credd` command: parse the command line, then hand over to the library.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use credd::{
    App, Settings, app,
    config::{self, StoreSettings},
    domain::caller::{Actor, Scopes},
    telemetry,
};

/// credd owns OAuth client credentials: orgs and their client IDs, client secrets,
/// and the apps that log in through them. It serves gRPC (with reflection and
/// health) to gateways, internal services and administrators.
///
/// Every flag can also be set with the environment variable shown beside it.
/// `credd` alone serves, taking the flags below; `credd <COMMAND> --help` shows
/// the (fewer) flags of each other command.
#[derive(Debug, Parser)]
#[command(
    name = "credd",
    version,
    propagate_version = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run pending migrations, then serve gRPC (the default).
    Serve(Settings),
    /// Run pending migrations and exit.
    Migrate(StoreSettings),
    /// Manage caller tokens, directly on CREDD_DATABASE_URL.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        store: StoreSettings,
    },
    /// Report which database, address, TLS state and tokens credd would use, and
    /// whether the schema is current; changes nothing. Exits 1 when something would
    /// keep credd from serving.
    Doctor(Settings),
}

/// What to run, with its settings.
enum Run {
    Serve,
    Migrate,
    Token(TokenCommand),
    Doctor,
}

impl Cli {
    /// The command to run (serve when none is named) and the settings it runs with.
    fn into_run(self) -> (Run, Settings) {
        match self.command {
            None => (Run::Serve, self.settings),
            Some(Command::Serve(settings)) => (Run::Serve, settings),
            Some(Command::Doctor(settings)) => (Run::Doctor, settings),
            Some(Command::Migrate(store)) => (Run::Migrate, store.into_settings()),
            Some(Command::Token { command, store }) => (Run::Token(command), store.into_settings()),
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a caller token and print it once, alone on the last line of stdout.
    Create {
        /// The token's name, shown in the audit trail (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// A scope: orgs:read, orgs:write, secrets:read, secrets:write,
        /// secrets:verify, apps:read, apps:write, audit:read, gateway or admin.
        /// Repeat for several.
        #[arg(long = "scope", required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Limit the token to this org (its id). Repeat for several; none: every
        /// org.
        #[arg(long = "org", value_name = "ORG_ID")]
        orgs: Vec<String>,
        /// Make the token stop working after this long (`90d`, `12h`).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List caller tokens (never their values).
    List,
    /// Revoke the live token with this name; running servers refuse it within seconds.
    Revoke {
        /// The token's name.
        name: String,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut command = Cli::command();
    if let Some(path) = config::config_path(&args) {
        command = match config::apply_config_file(command, &path) {
            Ok(command) => command,
            Err(err) => {
                eprintln!("credd: {err}");
                return ExitCode::from(2);
            }
        };
    }
    let parsed = command
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let (run, settings) = match parsed {
        Ok(cli) => cli.into_run(),
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // The whole of clap's message (a missing flag is on its second line),
            // without the usage and --help hints that follow the first blank line.
            let text = err.to_string();
            let message: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).collect();
            eprintln!(
                "credd: {}",
                message.join("\n").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("credd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter talks gRPC through tonic, so it is built inside the runtime.
    let telemetry = match runtime.block_on(async { telemetry::init(&settings) }) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("credd: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match run {
            Run::Serve => serve(settings).await,
            Run::Migrate => app::migrate(&settings).await.map(|()| {
                tracing::info!(
                    database = %credd::store::describe_url(
                        secrecy::ExposeSecret::expose_secret(&settings.database_url)
                    ),
                    "migrations are up to date"
                );
            }),
            Run::Token(command) => token(&settings, command).await,
            Run::Doctor => {
                let findings = app::doctor(&settings).await;
                for finding in &findings {
                    println!(
                        "{} {:<16} {}",
                        if finding.ok { "ok  " } else { "FAIL" },
                        finding.what,
                        finding.found
                    );
                }
                if findings.iter().all(|f| f.ok) {
                    Ok(())
                } else {
                    Err(app::StartError::Config(
                        "credd doctor found a problem (the FAIL lines above)".into(),
                    ))
                }
            }
        }
    });
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("credd: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), app::StartError> {
    // An expired bootstrap token is no way in: the first-start token is made then.
    let bootstrap_set = settings.bootstrap_token.is_some()
        && settings
            .bootstrap_token_expire
            .is_none_or(|expiry| expiry > chrono::Utc::now());
    let mut app = App::build(settings).await?;
    // With no bootstrap token, a store that never had a caller token gets an admin
    // token, printed once to stdout and never logged.
    if !bootstrap_set && let Some(token) = app.first_admin_token().await? {
        app.print_when_serving(format!(
            "credd: created the first caller token, `admin` (scope admin). It is shown only now; \
             `credd token create` makes named ones, then `credd token revoke admin` retires this one \
             (it stays in the container's log otherwise):\nexport CREDD_TOKEN={}",
            token.reveal()
        ));
    }
    app.run_until(shutdown_signal()).await
}

async fn token(settings: &Settings, command: TokenCommand) -> Result<(), app::StartError> {
    let tokens = app::token_service(settings).await?;
    let actor = Actor::cli();
    match command {
        TokenCommand::Create {
            name,
            scopes,
            orgs,
            expires_in,
        } => {
            let scopes = Scopes::parse_names(&scopes.join(" "))
                .map_err(|v| app::StartError::Config(format!("--scope: {}", v.reason)))?;
            let expires_in = expires_in
                .map(chrono::Duration::from_std)
                .transpose()
                .map_err(|_| app::StartError::Config("--expires-in is too long".into()))?;
            let orgs = orgs
                .iter()
                .map(|id| {
                    credd::domain::ids::OrgId::parse("--org", id)
                        .map_err(|v| app::StartError::Config(format!("--org: {}", v.reason)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let expire_time = expires_in.map(|d| chrono::Utc::now() + d);
            // The command line is break-glass: it acts as an admin of every org.
            let (meta, token) = tokens
                .create_for(
                    &actor,
                    &credd::domain::caller::Caller::bootstrap(),
                    &name,
                    scopes,
                    orgs,
                    expire_time,
                )
                .await
                .map_err(app::StartError::store)?;
            eprintln!(
                "created caller token `{}` with scopes `{}`{}{}; it is shown only now:",
                meta.name,
                meta.scopes.to_names(),
                meta.orgs
                    .orgs()
                    .map(|_| format!(" for orgs {}", meta.orgs.to_stored()))
                    .unwrap_or_default(),
                meta.expire_time
                    .map(|t| format!(", expiring {}", t.to_rfc3339()))
                    .unwrap_or_default()
            );
            println!("{}", token.reveal());
        }
        TokenCommand::List => {
            let list = tokens.list().await.map_err(app::StartError::store)?;
            println!(
                "{:<24} {:<40} {:<6} {:<25} {:<25} {:<25} ORGS",
                "NAME", "SCOPES", "HINT", "CREATED", "EXPIRES", "REVOKED"
            );
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "-".to_owned(),
                    |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                )
            };
            for t in list {
                println!(
                    "{:<24} {:<40} {:<6} {:<25} {:<25} {:<25} {}",
                    t.name,
                    t.scopes.to_names(),
                    t.hint,
                    time(Some(t.create_time)),
                    time(t.expire_time),
                    time(t.revoke_time),
                    t.orgs
                        .orgs()
                        .map_or_else(|| "all".to_owned(), |_| t.orgs.to_stored())
                );
            }
        }
        TokenCommand::Revoke { name } => {
            tokens
                .revoke(&actor, &name)
                .await
                .map_err(app::StartError::store)?;
            eprintln!(
                "revoked caller token `{name}`; running servers refuse it within a few seconds"
            );
        }
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
