//! kill -9 amid a stream of writes over SQLite, twenty times: the file stays
//! sound, every acknowledged write is there, and credd starts again on it.

use std::{
    collections::HashSet,
    process::Child,
    sync::{Arc, Mutex},
    time::Duration,
};

use credd::pb::{CreateOrgRequest, RotateClientSecretRequest};
use sea_orm::{ConnectionTrait as _, Database, Statement};

use crate::helpers::{Backend, Clients, TOKEN, TestDb, connect_when_up, credd_serve, free_port};

const ROUNDS: usize = 20;
const WRITERS: usize = 6;

/// Writes acknowledged by credd: org ids and secret ids.
#[derive(Default)]
struct Acknowledged {
    orgs: Vec<String>,
    secrets: Vec<String>,
}

fn start(url: &str, port: u16) -> Child {
    credd_serve(url, port).spawn().expect("start credd")
}

/// Creates orgs and rotates their secrets until the server goes away.
async fn write(clients: Clients, writer: usize, acknowledged: Arc<Mutex<Acknowledged>>) {
    for n in 0.. {
        let Ok(org) = clients
            .orgs
            .clone()
            .create_org(CreateOrgRequest {
                name: format!("crash {writer}-{n}"),
                main_website: format!("https://w{writer}-{n}-{}.example", uuid::Uuid::new_v4()),
                custom_domain: String::new(),
            })
            .await
        else {
            return;
        };
        let org = org.into_inner();
        acknowledged.lock().unwrap().orgs.push(org.id.clone());
        for _ in 0..2 {
            let Ok(rotated) = clients
                .secrets
                .clone()
                .rotate_client_secret(RotateClientSecretRequest {
                    org_id: org.id.clone(),
                    ..Default::default()
                })
                .await
            else {
                return;
            };
            let secret = rotated.into_inner().secret.expect("the new secret");
            acknowledged.lock().unwrap().secrets.push(secret.id);
        }
    }
}

/// Every value of the first column of `sql`'s rows.
async fn column(db: &sea_orm::DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_amid_writes_loses_no_acknowledged_write_and_leaves_a_sound_file() {
    let (_db, url) = TestDb::create(&Backend::Sqlite).await;
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    for round in 0..ROUNDS {
        let port = free_port();
        let mut server = start(&url, port);
        let clients = Clients::new(connect_when_up(port).await, Some(TOKEN));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| tokio::spawn(write(clients.clone(), writer, acknowledged.clone())))
            .collect();
        // A different moment in the stream each round.
        tokio::time::sleep(Duration::from_millis(150 + (round as u64 * 37) % 400)).await;
        server.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
        server.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }

        let db = Database::connect(url.as_str()).await.unwrap();
        assert_eq!(
            column(&db, "PRAGMA integrity_check").await,
            ["ok"],
            "round {round}: the file is sound"
        );
        let orgs: HashSet<String> = column(&db, "SELECT id FROM orgs")
            .await
            .into_iter()
            .collect();
        let secrets: HashSet<String> = column(&db, "SELECT id FROM client_secrets")
            .await
            .into_iter()
            .collect();
        let doubled = column(
            &db,
            "SELECT org_id FROM client_secrets WHERE state = 'ACTIVE' \
             GROUP BY org_id HAVING count(*) > 1",
        )
        .await;
        db.close().await.unwrap();
        let acknowledged = acknowledged.lock().unwrap();
        let lost_orgs = acknowledged
            .orgs
            .iter()
            .filter(|id| !orgs.contains(*id))
            .count();
        let lost_secrets = acknowledged
            .secrets
            .iter()
            .filter(|id| !secrets.contains(*id))
            .count();
        assert_eq!(
            (lost_orgs, lost_secrets),
            (0, 0),
            "round {round}: every acknowledged write is stored"
        );
        assert!(
            doubled.is_empty(),
            "round {round}: one ACTIVE secret per org: {doubled:?}"
        );
    }
    // And credd starts on what the last kill left, and reads it.
    let port = free_port();
    let mut server = start(&url, port);
    let clients = Clients::new(connect_when_up(port).await, Some(TOKEN));
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    let mut read = 0;
    for id in &acknowledged.orgs {
        clients
            .orgs
            .clone()
            .get_org(credd::pb::GetOrgRequest {
                lookup: Some(credd::pb::get_org_request::Lookup::Id(id.clone())),
            })
            .await
            .expect("an acknowledged org is served after the restart");
        read += 1;
    }
    let _ = server.kill();
    let _ = server.wait();
    eprintln!(
        "crash: {ROUNDS} kill -9 rounds, {} orgs and {} rotations acknowledged, 0 lost, \
         integrity_check ok every round, all {read} orgs served after the last restart",
        acknowledged.orgs.len(),
        acknowledged.secrets.len()
    );
}
