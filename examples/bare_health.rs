//! The baseline for credd's per-RPC cost: tonic and tonic-health, the same
//! versions credd uses, and nothing else (no auth, tracing, metrics or store).
//! `scripts/bench.sh` loads it and credd alike and prints the ratios.
//!
//! ```sh
//! cargo run --release --example bare_health -- 127.0.0.1:50061
//! ```

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50061".into())
        .parse()?;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    println!("bare tonic-health serving on {addr}");
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_shutdown(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
