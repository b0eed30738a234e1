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

/// A second client of the same pool shares credd's one server connection
/// (`credd_witness` has `pool_size=1` in scripts/pgbouncer.sh). It prepares a
/// statement of its own; after credd's writes and reads through the pool the
/// witness's statement still runs, and the server connection holds no statement
/// credd named (`sqlx_s_*`): credd leaves the pool as it found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credd_leaves_the_pools_server_connections_as_it_found_them() {
    use std::str::FromStr as _;

    use sea_orm::sqlx::{self, Connection as _, Row as _};
    let Some(backend @ Backend::PgBouncer { .. }) = Backend::pgbouncer(true) else {
        return eprintln!("CREDD_TEST_PGBOUNCER_URL is not set: PgBouncer run skipped");
    };
    let Backend::PgBouncer { pooler_url, .. } = &backend else {
        unreachable!()
    };
    let admin = std::env::var("CREDD_TEST_DATABASE_URL").unwrap();
    let mut server = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql("DROP DATABASE IF EXISTS credd_witness WITH (FORCE)")
        .execute(&mut server)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE DATABASE credd_witness")
        .execute(&mut server)
        .await
        .unwrap();
    let direct = replace_database(&admin, "credd_witness");
    // PgBouncer refuses sqlx's extra_float_digits start-up parameter.
    let options =
        sqlx::postgres::PgConnectOptions::from_str(&replace_database(pooler_url, "credd_witness"))
            .unwrap()
            .extra_float_digits(None)
            .statement_cache_capacity(0);
    let mut witness = sqlx::PgConnection::connect_with(&options).await.unwrap();
    // The simple protocol throughout: the witness names only its own statement.
    sqlx::raw_sql("PREPARE witness AS SELECT 'still here'::text")
        .execute(&mut witness)
        .await
        .unwrap();

    let app = crate::helpers::spawn_on(
        backend.clone(),
        TestDb::Shared,
        direct.clone(),
        |_| {},
        std::sync::Arc::new(credd::service::SystemClock),
    )
    .await;
    let org = app.create_org().await;
    let (_, secret) = app.generate_and_activate(&org.id).await;
    assert!(app.verify(&org.client_id, &secret).await.unwrap());
    app.list_secrets(&org.id).await;

    let answer = sqlx::raw_sql("EXECUTE witness")
        .fetch_one(&mut witness)
        .await
        .expect("the witness's statement survives credd's traffic");
    assert_eq!(answer.get::<String, _>(0), "still here");
    let names: Vec<String> = sqlx::raw_sql("SELECT name FROM pg_prepared_statements ORDER BY name")
        .fetch_all(&mut witness)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    assert_eq!(
        names,
        ["witness"],
        "credd left statements on the server connection"
    );
    drop(app);
    witness.close().await.unwrap();
    let _ = sqlx::raw_sql("DROP DATABASE IF EXISTS credd_witness WITH (FORCE)")
        .execute(&mut server)
        .await;
}
