//! credd-client's ClientAuthLayer in front of a real axum service, against a real
//! credd: the answers an internal service gives its callers.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{Extension, Router, routing::get};
use credd::pb::{CreateCallerTokenRequest, caller_tokens_client::CallerTokensClient};
use credd_client::{AuthenticatedClient, ClientAuthLayer, Credd, basic::header_value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Backend, TOKEN, spawn_app, wait_until};

/// An axum service behind the layer on a random port.
async fn protected(credd: Credd) -> SocketAddr {
    async fn hello(Extension(client): Extension<AuthenticatedClient>) -> String {
        format!("org={} secret={}", client.org_id, client.secret_id)
    }
    let app = Router::new()
        .route("/hello", get(hello))
        .layer(ClientAuthLayer::new(credd));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A raw HTTP/1.1 GET with `authorization` (any bytes): the status, the headers
/// (lower-cased names) and the body.
async fn get_with(addr: SocketAddr, authorization: Option<&[u8]>) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = b"GET /hello HTTP/1.1\r\nhost: test\r\nconnection: close\r\n".to_vec();
    if let Some(value) = authorization {
        request.extend_from_slice(b"authorization: ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    // A server may close before reading all of an oversized header.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

async fn the_layer_answers_401_200_503_and_follows_revocations(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org().await;
    let (active, secret) = app.generate_and_activate(&org.id).await;
    let token = CallerTokensClient::new(app.channel_with(Some(TOKEN)))
        .create_caller_token(CreateCallerTokenRequest {
            name: "protected-api".into(),
            scopes: vec!["secrets:verify".into(), "audit:read".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    let credd = Credd::connect_lazy(&format!("http://{}", app.addr), &token).unwrap();
    let addr = protected(credd).await;
    let right = header_value(&org.client_id, &secret);

    // No credentials, wrong ones: 401 with the challenge.
    for authorization in [
        None,
        Some(header_value(&org.client_id, "wrong").into_bytes()),
    ] {
        let (status, head, _) = get_with(addr, authorization.as_deref()).await;
        assert_eq!(status, 401, "{head}");
        assert!(
            head.contains("www-authenticate: basic realm=\"credd\""),
            "{head}"
        );
    }
    // The right ones: 200, and the handler knows the client.
    let (status, _, body) = get_with(addr, Some(right.as_bytes())).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("org={} secret={}", org.id, active.id));

    // Malformed headers: refused, never a panic; the service goes on.
    let malformed: Vec<Vec<u8>> = vec![
        b"Basic !!!not-base64!!!".to_vec(),
        format!("Basic {}", base64_of(b"no-colon-here")).into_bytes(),
        format!("Basic {}", base64_of(&[0xff, 0xfe, b':', 0xc3])).into_bytes(),
        vec![b'B', b'a', b's', b'i', b'c', b' ', 0xff, 0xfe, 0x80],
        format!("Basic {}", "A".repeat(64 * 1024)).into_bytes(),
        b"Bearer abc".to_vec(),
    ];
    for value in &malformed {
        let (status, head, _) = get_with(addr, Some(value)).await;
        assert!(
            matches!(status, 400 | 401 | 431),
            "{status} for {:?}: {head}",
            String::from_utf8_lossy(&value[..value.len().min(30)])
        );
    }
    assert_eq!(get_with(addr, Some(right.as_bytes())).await.0, 200);

    // Revoked: 401 again within a second, though the verdict was cached.
    assert_eq!(get_with(addr, Some(right.as_bytes())).await.0, 200);
    app.revoke(&org.id, &active.id).await.unwrap();
    let revoked = Instant::now();
    wait_until(
        "the revoked secret is refused",
        Duration::from_secs(1),
        async || get_with(addr, Some(right.as_bytes())).await.0 == 401,
    )
    .await;
    eprintln!("refused {:?} after the revocation", revoked.elapsed());
}

async fn the_layer_answers_503_when_credd_is_unreachable(_backend: Backend) {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let credd = Credd::connect_lazy(&format!("http://{closed}"), "credd_ct_whatever")
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let addr = protected(credd).await;
    let (status, head, _) =
        get_with(addr, Some(header_value(&"0".repeat(32), "x").as_bytes())).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    // No credentials is still 401: nothing to ask credd.
    assert_eq!(get_with(addr, None).await.0, 401);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

both_backends!(
    the_layer_answers_401_200_503_and_follows_revocations,
    the_layer_answers_503_when_credd_is_unreachable,
);
