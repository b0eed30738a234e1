//! The `credd` command: parse the command line, then hand over to the library.

use std::process::ExitCode;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use clap::{Parser, Subcommand};
use credd::{App, Settings, app, domain::ids, telemetry};

/// credd owns OAuth client credentials: orgs and their client IDs, client secrets,
/// and the apps that log in through them. It serves gRPC (with reflection and
/// health) to gateways, internal services and administrators.
///
/// Every flag can also be set with the environment variable shown beside it.
#[derive(Debug, Parser)]
#[command(name = "credd", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run pending migrations, then serve gRPC (the default).
    Serve,
    /// Run pending migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // One line naming the flag and its variable; clap's usage hint follows.
            let text = err.to_string();
            eprintln!(
                "credd: {}",
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    if let Err(err) = telemetry::init(&cli.settings) {
        eprintln!("credd: {err}");
        return ExitCode::from(2);
    }
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
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(cli.settings).await,
            Command::Migrate => app::migrate(&cli.settings).await.map(|()| {
                tracing::info!("migrations are up to date");
            }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("credd: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(mut settings: Settings) -> Result<(), app::StartError> {
    let generated = settings.bootstrap_token.is_none().then(|| {
        let token = URL_SAFE_NO_PAD.encode(ids::random_bytes::<32>());
        settings.bootstrap_token = Some(token.clone().into());
        token
    });
    let app = App::build(settings).await?;
    if let Some(token) = generated {
        // Printed once, to stdout, never logged.
        println!(
            "credd: CREDD_BOOTSTRAP_TOKEN is not set, so this run accepts this generated admin token \
             (set CREDD_BOOTSTRAP_TOKEN to a value of at least 32 characters to choose a fixed one):"
        );
        println!("export CREDD_TOKEN={token}");
    }
    app.run_until(shutdown_signal()).await
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
