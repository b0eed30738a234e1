//! Hostile bytes at the protocol level against the credd binary: garbage instead
//! of HTTP/2, random frames after the preface, malformed gRPC messages (bad
//! length prefixes, compression flags, truncation, non-protobuf payloads, too
//! large) and oversized metadata. The process never panics or exits, each bad
//! call gets an error rather than an answer, and a right call still verifies.

use std::{io::Read as _, process::Stdio, time::Duration};

use bytes::Bytes;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{Backend, Clients, TOKEN, TestDb, connect_when_up, credd_serve, free_port};

/// A small deterministic generator (xorshift), so that a failing run repeats.
struct Bytes64(u64);

impl Bytes64 {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One gRPC call with `body` as its raw request bytes: the HTTP status and the
/// `grpc-status` (from headers or trailers), or `None` when the stream was reset.
async fn raw_call(
    addr: &str,
    path: &str,
    extra: Option<(&str, String)>,
    body: Vec<u8>,
) -> Option<(u16, Option<String>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (client, connection) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(connection);
    let mut client = client.ready().await.ok()?;
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some((name, value)) = extra {
        request = request.header(name, value);
    }
    let (response, mut stream) = client.send_request(request.body(()).unwrap(), false).ok()?;
    let _ = stream.send_data(Bytes::from(body), true);
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer or a reset, never a hang")
        .ok()?;
    let status = response.status().as_u16();
    let mut grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        if chunk.is_err() {
            return Some((status, grpc_status));
        }
    }
    if let Ok(Some(trailers)) = body.trailers().await
        && let Some(value) = trailers.get("grpc-status")
    {
        grpc_status = Some(value.to_str().unwrap_or("?").to_owned());
    }
    Some((status, grpc_status))
}

fn frame(flag: u8, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

async fn hostile_bytes_never_crash_the_server(backend: Backend) {
    let (_db, url) = TestDb::create(&backend).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = credd_serve(&url, port)
        .env("CREDD_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let channel = connect_when_up(port).await;
    let clients = Clients::new(channel, Some(TOKEN));
    let org = clients.create_org().await;
    let (_, plaintext) = clients.generate_and_activate(&org.id).await;
    let mut random = Bytes64(0x9e37_79b9_7f4a_7c15);

    // Not HTTP/2 at all, and random frames after a valid preface.
    for round in 0..300 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if round % 2 == 1 {
            tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
        }
        let len = 1 + (random.next() % 512) as usize;
        let _ = tcp.write_all(&random.fill(len)).await;
        let _ = tcp.shutdown().await;
    }

    // Malformed gRPC messages to a real method.
    let verify = "/credd.v1.ClientSecrets/VerifyClientSecret";
    let bodies = [
        frame(0, 1_000, b"short"),                    // declares more than it sends
        frame(1, 4, b"abcd"),                         // compressed, with no grpc-encoding
        frame(7, 4, b"abcd"),                         // an undefined flag
        frame(0, u32::MAX, b""),                      // a length past any limit
        vec![0, 0],                                   // a truncated prefix
        frame(0, 8, &[0xff; 8]),                      // not protobuf
        frame(0, 5, &[0x0a, 0x80, 0x80, 0x80, 0x80]), // a varint running off the end
        frame(0, 2 * 1024 * 1024, &vec![0x0a; 2 * 1024 * 1024]), // over the size limit
    ];
    let mut answers = Vec::new();
    for body in bodies {
        let answer = raw_call(&addr, verify, None, body.clone()).await;
        if let Some((_, Some(status))) = &answer {
            assert_ne!(status, "0", "a malformed message is never answered OK");
        }
        answers.push(answer);
    }
    eprintln!("protocol: malformed messages answered (HTTP status, grpc-status): {answers:?}");
    for _ in 0..200 {
        let len = (random.next() % 64) as usize;
        let body = random.fill(len);
        let _ = raw_call(&addr, verify, None, body).await;
    }

    // Oversized metadata: 64 KiB and 1 MiB headers.
    for size in [64 * 1024, 1024 * 1024] {
        let answer = raw_call(
            &addr,
            verify,
            Some(("x-padding", "a".repeat(size))),
            frame(0, 0, b""),
        )
        .await;
        eprintln!("protocol: a {size}-byte header answered {answer:?}");
        if let Some((_, Some(status))) = answer {
            assert_ne!(status, "0", "a {size}-byte header is not served");
        }
    }

    // Still up, still right.
    assert!(clients.verify(&org.client_id, &plaintext).await.unwrap());
    assert!(!clients.verify(&org.client_id, "wrong").await.unwrap());
    assert!(
        server.try_wait().unwrap().is_none(),
        "credd is still running"
    );
    let _ = server.kill();
    let _ = server.wait();
    let mut log = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(!log.contains("panicked"), "no panic: {log}");
}

both_backends!(hostile_bytes_never_crash_the_server);
