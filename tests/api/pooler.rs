//! credd behind a transaction-pooling PgBouncer: what it refuses at start, and how
//! it migrates. The representative RPC set runs through PgBouncer from each area's
//! module (`through_pgbouncer!`).

use credd::{app::App, store::Pooler};

use crate::helpers::{Backend, TestDb, replace_database, test_settings};

/// The pooler's URL of `db_url`'s database.
fn through(pooler_url: &str, db_url: &str) -> String {
    let name = url::Url::parse(db_url).unwrap().path()[1..].to_owned();
    replace_database(pooler_url, &name)
}

/// The start-up error of a server with `settings`.
async fn start_error(settings: credd::config::Settings) -> String {
    match App::build(settings).await {
        Ok(_) => panic!("the server started"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_schema_behind_a_pooler_without_a_direct_url_is_refused_naming_the_fix() {
    let Some(Backend::PgBouncer { pooler_url, .. }) = Backend::pgbouncer(true) else {
        return eprintln!("CREDD_TEST_PGBOUNCER_URL is not set: PgBouncer run skipped");
    };
    let (_db, direct) = TestDb::create(&Backend::postgres().unwrap()).await;
    let mut settings = test_settings(&through(&pooler_url, &direct));
    settings.database_pooler = Pooler::Transaction;
    let error = start_error(settings.clone()).await;
    assert!(
        error.contains("migration(s) pending")
            && error.contains("CREDD_DATABASE_LISTEN_URL")
            && error.contains("credd migrate"),
        "{error}"
    );

    // With the direct URL the same start migrates over it and serves.
    settings.database_listen_url = Some(direct.as_str().into());
    let app = App::build(settings.clone()).await.expect("starts");
    drop(app);
    // And now that the schema is current, the pooler alone is enough.
    settings.database_listen_url = None;
    App::build(settings)
        .await
        .expect("starts on a current schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_not_declared_is_named_in_the_start_error() {
    let Some(Backend::PgBouncer { pooler_url, .. }) = Backend::pgbouncer(true) else {
        return eprintln!("CREDD_TEST_PGBOUNCER_URL is not set: PgBouncer run skipped");
    };
    let (_db, direct) = TestDb::create(&Backend::postgres().unwrap()).await;
    let error = start_error(test_settings(&through(&pooler_url, &direct))).await;
    assert!(
        error.contains("CREDD_DATABASE_POOLER=transaction"),
        "{error}"
    );
}

#[tokio::test]
async fn a_transaction_pooler_over_sqlite_is_refused() {
    let (_db, url) = TestDb::create(&Backend::Sqlite).await;
    let mut settings = test_settings(&url);
    settings.database_pooler = Pooler::Transaction;
    let error = start_error(settings).await;
    assert!(
        error.contains("CREDD_DATABASE_POOLER=transaction") && error.contains("SQLite"),
        "{error}"
    );
}
