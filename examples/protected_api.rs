//! An axum service protected by credd-client's `ClientAuthLayer`: every request
//! must carry OAuth client credentials (HTTP Basic) that credd verifies.
//!
//! ```sh
//! CREDD_ENDPOINT=http://127.0.0.1:50051 CREDD_TOKEN=<secrets:verify + audit:read> \
//!   cargo run --example protected_api            # listens on 127.0.0.1:8080 (LISTEN)
//! curl -u "$CLIENT_ID:$SECRET" http://127.0.0.1:8080/hello
//! ```

use axum::{Extension, Router, routing::get};
use credd_client::{AuthenticatedClient, ClientAuthLayer, Credd};

async fn hello(Extension(client): Extension<AuthenticatedClient>) -> String {
    format!(
        "hello, client {} of org {}\n",
        client.client_id, client.org_id
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("CREDD_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("CREDD_TOKEN").map_err(|_| "set CREDD_TOKEN")?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());

    let credd = Credd::connect_lazy(&endpoint, &token)?;
    let app = Router::new()
        .route("/hello", get(hello))
        .layer(ClientAuthLayer::new(credd));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("protected_api listening on http://{listen}");
    axum::serve(listener, app).await?;
    Ok(())
}
