//! The commands beside `serve`: `credd token …`'s store, `credd doctor` and
//! `credd migrate` — each on the database of the settings, none serving.

use super::*;

/// The caller token use cases on the (migrated) database of `settings`.
pub async fn token_service(settings: &Settings) -> Result<TokenService, StartError> {
    let url = settings.database_url.expose_secret();
    eprintln!("credd: database {}", crate::store::describe_url(url));
    // Only `serve` and `migrate` create a SQLite file: a token made in a new empty
    // file (a relative path run from another directory) would be one the server
    // never reads.
    if let Some(file) = crate::store::sqlite_file(url)
        && !file.exists()
    {
        return Err(StartError::Config(format!(
            "no database at {} (CREDD_DATABASE_URL): `credd token` never creates one; point \
             CREDD_DATABASE_URL at the server's database (a relative path is relative to the \
             current directory), or run `credd migrate` there first",
            file.display()
        )));
    }
    let store = Store::connect_with(url, reach(settings)).await?;
    store.migrate().await?;
    Ok(TokenService::new(store, Arc::new(SystemClock)))
}

/// One finding of `credd doctor`.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What was checked.
    pub what: &'static str,
    /// What was found.
    pub found: String,
    /// Whether that is fine for serving.
    pub ok: bool,
}

/// What `credd doctor` reports: the settings that decide where credd runs and what
/// it can reach, checked without changing anything (no migration, no new file).
pub async fn doctor(settings: &Settings) -> Vec<Finding> {
    let finding = |what, found: String, ok| Finding { what, found, ok };
    let url = settings.database_url.expose_secret();
    let mut findings = vec![
        finding("database", crate::store::describe_url(url), true),
        finding("listen", settings.listen.to_string(), true),
    ];
    findings.push(match tls::tls_config(settings) {
        Ok(Some(_)) => finding(
            "TLS",
            if settings.tls_client_ca.is_some() {
                "on, with client certificates (mTLS)".to_owned()
            } else {
                "on".to_owned()
            },
            true,
        ),
        Ok(None) if settings.listen.ip().is_loopback() => {
            finding("TLS", "off (plaintext on a loopback address)".into(), true)
        }
        Ok(None) => finding(
            "TLS",
            "off, on a non-loopback address: set CREDD_TLS_CERT and CREDD_TLS_KEY".into(),
            false,
        ),
        Err(err) => finding("TLS", err.to_string(), false),
    });
    findings.push(finding(
        "bootstrap token",
        match (&settings.bootstrap_token, settings.bootstrap_token_expire) {
            (None, _) => "not set".to_owned(),
            (Some(_), None) => "set, never expires (CREDD_BOOTSTRAP_TOKEN_EXPIRE)".to_owned(),
            (Some(_), Some(expiry)) if expiry <= chrono::Utc::now() => {
                format!("set, expired at {}", expiry.to_rfc3339())
            }
            (Some(_), Some(expiry)) => format!("set, expires at {}", expiry.to_rfc3339()),
        },
        true,
    ));
    if let Some(file) = crate::store::sqlite_file(url)
        && !file.exists()
    {
        findings.push(finding(
            "schema",
            format!(
                "no database file at {} yet: `credd serve` or `credd migrate` creates it",
                file.display()
            ),
            false,
        ));
        return findings;
    }
    let store = match Store::connect_with(url, reach(settings)).await {
        Ok(store) => store,
        Err(err) => {
            findings.push(finding("connection", err.to_string(), false));
            return findings;
        }
    };
    findings.push(match store.pending_migrations().await {
        Ok(0) => finding("schema", "current".into(), true),
        Ok(n) => finding(
            "schema",
            format!("{n} migrations pending: `credd migrate` (or `credd serve`) runs them"),
            false,
        ),
        Err(err) => finding("schema", err.to_string(), false),
    });
    findings.push(match store.live_tokens().await {
        Ok(live) if live.is_empty() && settings.bootstrap_token.is_none() => finding(
            "caller tokens",
            "none yet: the first `credd serve` creates an admin token and prints it".into(),
            true,
        ),
        Ok(live) => finding(
            "caller tokens",
            format!("{} live (`credd token list`)", live.len()),
            true,
        ),
        Err(err) => finding("caller tokens", err.to_string(), false),
    });
    store.close().await;
    findings
}

/// Runs the migrations of the database in `settings` and nothing else.
pub async fn migrate(settings: &Settings) -> Result<(), StartError> {
    let store = Store::connect_with(settings.database_url.expose_secret(), reach(settings)).await?;
    store.migrate().await?;
    store.close().await;
    Ok(())
}
