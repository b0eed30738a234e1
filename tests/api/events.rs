//! WatchAuditEvents end to end (issue 14): replay then follow, in order, once,
//! across reconnects, a restart and replicas; filtered by org, scope and action;
//! a slow watcher cut off; watchers drained at shutdown; credd's own time-driven
//! events written once by several replicas.

use std::time::{Duration, Instant};

use credd::pb::{
    AuditEvent, CreateCallerTokenRequest, ListAuditEventsRequest, WatchAuditEventsRequest,
    activate_client_secret_request::Secret, audit_client::AuditClient,
    caller_tokens_client::CallerTokensClient,
};
use tonic::{Code, Streaming};

use crate::helpers::{
    Backend, TOKEN, TestApp, assert_code, assert_invalid, spawn_app, spawn_app_with, spawn_replica,
    spawn_replica_with, wait_until,
};

/// A watch of `app` by the test's admin token.
async fn watch(app: &TestApp, request: WatchAuditEventsRequest) -> Streaming<AuditEvent> {
    watch_as(app, TOKEN, request).await.expect("watch")
}

async fn watch_as(
    app: &TestApp,
    token: &str,
    request: WatchAuditEventsRequest,
) -> Result<Streaming<AuditEvent>, tonic::Status> {
    AuditClient::new(app.channel_with(Some(token)))
        .watch_audit_events(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The next event of `stream`, waiting at most `within`.
async fn next(stream: &mut Streaming<AuditEvent>, within: Duration) -> AuditEvent {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("an event, not the end")
}

/// `n` events of `stream`.
async fn take(stream: &mut Streaming<AuditEvent>, n: usize) -> Vec<AuditEvent> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next(stream, Duration::from_secs(10)).await);
    }
    events
}

/// Every event of the trail, oldest first (one replica writes in id order).
async fn trail(app: &TestApp) -> Vec<AuditEvent> {
    let mut events = app
        .audit
        .clone()
        .list_audit_events(ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    events.reverse();
    events
}

fn ids(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

async fn a_watch_replays_after_its_cursor_then_follows_live(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let (active, _) = app.generate_and_activate(&org.id).await;
    app.revoke(&org.id, &active.id).await.unwrap();
    let before = trail(&app).await;
    assert_eq!(before.len(), 4, "create, generate, activate, revoke");

    // From now on: nothing of the past.
    let mut from_now = watch(&app, WatchAuditEventsRequest::default()).await;
    // After the first event: the three after it, in order, then live.
    let mut replay = watch(
        &app,
        WatchAuditEventsRequest {
            after: before[0].id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&take(&mut replay, 3).await), ids(&before[1..]));

    let second = app.create_org().await;
    app.generate_secret(&second.id).await;
    let live = &trail(&app).await[4..];
    assert_eq!(ids(&take(&mut replay, 2).await), ids(live));
    assert_eq!(ids(&take(&mut from_now, 2).await), ids(live));
    assert_eq!(live[0].action, "org.create");
    assert_eq!(live[1].action, "secret.generate");
    assert_eq!(live[1].org_id, second.id);

    // Bad cursors name the field.
    for after in ["not-an-id", "01a23835-6fed-7610-96b1-f8545188bab2"] {
        assert_invalid(
            watch_as(
                &app,
                TOKEN,
                WatchAuditEventsRequest {
                    after: after.into(),
                    ..Default::default()
                },
            )
            .await,
            "after",
        );
    }
    assert_invalid(
        watch_as(
            &app,
            TOKEN,
            WatchAuditEventsRequest {
                actions: vec![String::new()],
                ..Default::default()
            },
        )
        .await,
        "actions",
    );
}

async fn a_watcher_resumes_across_a_restart_without_gaps_or_duplicates(backend: Backend) {
    let mut first = spawn_app(backend).await;
    let org = first.create_org().await;
    for _ in 0..3 {
        first.generate_and_activate(&org.id).await;
    }
    let start = trail(&first).await[0].id.clone();
    let mut stream = watch(
        &first,
        WatchAuditEventsRequest {
            after: start.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut seen = take(&mut stream, 4).await;

    // SIGTERM: the watch ends UNAVAILABLE, naming where to resume, and the server
    // stops without waiting for its grace.
    let stopping = Instant::now();
    first.stop().await.expect("a clean stop");
    let stopped_in = stopping.elapsed();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the end in time")
        {
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("the watch ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    let last = seen.last().unwrap().id.clone();
    assert!(
        end.message().contains(&last),
        "the end names the last event sent: {end:?}"
    );
    assert!(
        stopped_in < Duration::from_secs(5),
        "a watcher does not hold up the drain: {stopped_in:?}"
    );

    // Another server on the same database, more writes, and a resume.
    let second = spawn_replica(&first).await;
    for _ in 0..2 {
        second.generate_and_activate(&org.id).await;
    }
    let mut resumed = watch(
        &second,
        WatchAuditEventsRequest {
            after: last,
            ..Default::default()
        },
    )
    .await;
    let everything = trail(&second).await;
    let rest = everything.len() - 1 - seen.len();
    seen.extend(take(&mut resumed, rest).await);
    assert_eq!(
        ids(&seen),
        ids(&everything[1..]),
        "each event once, in order"
    );
    // Nothing more comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(600), resumed.message())
            .await
            .is_err(),
        "no duplicate after the resume"
    );
}

async fn a_write_on_one_replica_reaches_watchers_on_another(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_replica(&a).await;
    let mut stream = watch(&b, WatchAuditEventsRequest::default()).await;
    let org = a.create_org().await;
    next(&mut stream, Duration::from_secs(5)).await;
    let mut delays = Vec::new();
    for _ in 0..50 {
        let generated = a.generate_secret(&org.id).await;
        // The promise: committed on A (the RPC has answered), seen on B within 1 s.
        let written = Instant::now();
        let event = next(&mut stream, Duration::from_secs(1)).await;
        delays.push(written.elapsed());
        assert_eq!(event.target_id, generated.secret.unwrap().id);
        // Stay under the pending cap.
        a.revoke(&org.id, &event.target_id).await.unwrap();
        let revoked = next(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(revoked.action, "secret.revoke");
    }
    delays.sort();
    eprintln!(
        "cross-replica delivery over 50 writes: p50 {:?}, max {:?}",
        delays[25], delays[49]
    );
}

async fn watchers_see_only_their_orgs_and_actions(backend: Backend) {
    let app = spawn_app(backend).await;
    let (shop, other) = (app.create_org().await, app.create_org().await);
    let team = CallerTokensClient::new(app.channel_with(Some(TOKEN)))
        .create_caller_token(CreateCallerTokenRequest {
            name: "shop-audit".into(),
            scopes: vec!["audit:read".into()],
            org_ids: vec![shop.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    let mut scoped = watch_as(&app, &team, WatchAuditEventsRequest::default())
        .await
        .unwrap();
    let mut revokes = watch(
        &app,
        WatchAuditEventsRequest {
            org_id: "-".into(),
            actions: vec!["secret.revoke".into()],
            ..Default::default()
        },
    )
    .await;
    // Another org, and a token (no org): neither reaches the team's watcher.
    app.generate_and_activate(&other.id).await;
    CallerTokensClient::new(app.channel_with(Some(TOKEN)))
        .create_caller_token(CreateCallerTokenRequest {
            name: "unrelated".into(),
            scopes: vec!["orgs:read".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let (active, _) = app.generate_and_activate(&shop.id).await;
    app.revoke(&shop.id, &active.id).await.unwrap();
    let seen = take(&mut scoped, 3).await;
    assert!(seen.iter().all(|e| e.org_id == shop.id), "{seen:?}");
    let actions: Vec<&str> = seen.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["secret.generate", "secret.activate", "secret.revoke"]
    );
    let revoke = next(&mut revokes, Duration::from_secs(5)).await;
    assert_eq!(
        (revoke.action.as_str(), revoke.target_id.as_str()),
        ("secret.revoke", active.id.as_str())
    );

    // The team cannot watch another org, whether it exists or not; a token
    // without audit:read cannot watch at all.
    assert_code(
        watch_as(
            &app,
            &team,
            WatchAuditEventsRequest {
                org_id: other.id.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::PermissionDenied,
    );
    let reader = CallerTokensClient::new(app.channel_with(Some(TOKEN)))
        .create_caller_token(CreateCallerTokenRequest {
            name: "reader".into(),
            scopes: vec!["orgs:read".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_code(
        watch_as(&app, &reader, WatchAuditEventsRequest::default()).await,
        Code::PermissionDenied,
    );
}

async fn a_watcher_that_does_not_read_is_cut_off(backend: Backend) {
    use prost::Message as _;
    let app = spawn_app(backend).await;
    app.create_org().await;
    // A raw HTTP/2 client that keeps its 64 KiB stream window and does not read
    // (tonic's client would take in megabytes): credd can send only that much.
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/credd.v1.Audit/WatchAuditEvents",
        app.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", format!("Bearer {TOKEN}"))
    .body(())
    .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    let message = WatchAuditEventsRequest::default().encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    body.send_data(bytes::Bytes::from(framed), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();

    let (label, now) = match app.backend {
        Backend::Sqlite => (
            "printf('bulk-%05d', i)",
            "(SELECT time FROM audit_events LIMIT 1)",
        ),
        Backend::Postgres(_) | Backend::PgBouncer { .. } => {
            ("'bulk-' || lpad(i::text, 5, '0')", "now()")
        }
    };
    app.execute_sql(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) \
         INSERT INTO audit_events (id, time, caller, action, org_id, target_id, outcome, request_id, details, seq) \
         SELECT {label}, {now}, 'test', 'test.bulk', NULL, 'x', 'ok', 'r', '', \
                (SELECT value FROM audit_counter) + i FROM n"
    ))
    .await
    .expect("bulk events");
    app.execute_sql("UPDATE audit_counter SET value = value + 12000")
        .await
        .unwrap();
    // Give the tail time to send them all past this watcher.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Now read (releasing the window) until the trailers.
    let mut received = 0usize;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.data())
        .await
        .expect("data in time")
    {
        let chunk = chunk.unwrap();
        received += chunk.len();
        stream.flow_control().release_capacity(chunk.len()).unwrap();
    }
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(
        trailers["grpc-status"], "8",
        "RESOURCE_EXHAUSTED: {trailers:?}"
    );
    let message = trailers["grpc-message"].to_str().unwrap();
    assert!(
        message.contains("reconnect%20with%20after") || message.contains("reconnect with after"),
        "{message}"
    );
    assert!(
        received < 12_000 * 100,
        "cut off, not buffered: {received} bytes"
    );
    // The server goes on serving watchers.
    let mut again = watch(&app, WatchAuditEventsRequest::default()).await;
    app.create_org().await;
    assert_eq!(
        next(&mut again, Duration::from_secs(5)).await.action,
        "org.create"
    );
}

async fn an_expiring_secret_is_announced_once_by_two_replicas(backend: Backend) {
    let first = spawn_app_with(backend, |s| {
        s.sweep_interval = Some(Duration::from_millis(50))
    })
    .await;
    let second = spawn_replica_with(&first, |s| {
        s.sweep_interval = Some(Duration::from_millis(50))
    })
    .await;
    let mut expiring = watch(
        &second,
        WatchAuditEventsRequest {
            actions: vec!["secret.expiring".into()],
            ..Default::default()
        },
    )
    .await;
    let org = first.create_org().await;
    // A day to live: within the default 14-day warning at once.
    let generated = first
        .generate_secret_with(
            &org.id,
            Some(credd::pb::generate_client_secret_request::Expiration::Ttl(
                prost_types::Duration {
                    seconds: 86_400,
                    nanos: 0,
                },
            )),
        )
        .await
        .unwrap();
    let id = generated.secret.unwrap().id;
    first
        .activate(&org.id, Secret::SecretId(id.clone()), 0)
        .await
        .unwrap();
    let event = next(&mut expiring, Duration::from_secs(10)).await;
    assert_eq!(
        (event.target_id.as_str(), event.caller.as_str()),
        (id.as_str(), "credd")
    );
    let details: serde_json::Value = serde_json::from_str(&event.details).unwrap();
    assert!(details["expire_time"].is_string(), "{details}");
    // Both replicas sweep many more times: still one event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = || async {
        first
            .audit
            .clone()
            .list_audit_events(ListAuditEventsRequest {
                action: "secret.expiring".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .len()
    };
    assert_eq!(count().await, 1);
    wait_until("nothing more", Duration::from_secs(1), async || {
        tokio::time::timeout(Duration::from_millis(100), expiring.message())
            .await
            .is_err()
    })
    .await;
}

/// One caller follows at most 8 watches on a server: the 9th is
/// RESOURCE_EXHAUSTED before anything is read, another caller is unaffected,
/// and a watch whose client went away gives its slot back.
async fn watches_are_bounded_per_caller(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut open = Vec::new();
    for _ in 0..credd::service::events::MAX_WATCHES_PER_CALLER {
        open.push(watch(&app, WatchAuditEventsRequest::default()).await);
    }
    let refused = watch_as(&app, TOKEN, WatchAuditEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let (store, tokens) = crate::callers::tokens_of(&app).await;
    let (_, other) = tokens
        .create(
            &credd::domain::caller::Actor::cli(),
            "auditor",
            credd::domain::caller::Scopes::of([credd::domain::caller::Scope::AuditRead]),
            None,
        )
        .await
        .unwrap();
    app.authenticator.reload(&store).await.unwrap();
    watch_as(&app, other.reveal(), WatchAuditEventsRequest::default())
        .await
        .expect("another caller has its own bound");
    drop(open.pop());
    wait_until(
        "a dropped watch gives its slot back",
        Duration::from_secs(5),
        async || {
            watch_as(&app, TOKEN, WatchAuditEventsRequest::default())
                .await
                .is_ok()
        },
    )
    .await;
}

both_backends!(
    watches_are_bounded_per_caller,
    a_watch_replays_after_its_cursor_then_follows_live,
    a_watcher_resumes_across_a_restart_without_gaps_or_duplicates,
    a_write_on_one_replica_reaches_watchers_on_another,
    watchers_see_only_their_orgs_and_actions,
    a_watcher_that_does_not_read_is_cut_off,
    an_expiring_secret_is_announced_once_by_two_replicas,
);

through_pgbouncer!(
    a_write_on_one_replica_reaches_watchers_on_another: true,
    a_watcher_resumes_across_a_restart_without_gaps_or_duplicates: false,
);
