//! The bare baseline (`bare_health`) made slower on purpose: tonic and a
//! Health/Check that spends a fixed amount of CPU before it answers SERVING.
//! It shows what a given cost per call does to the p99 of the same load with
//! nothing of credd's in it, which is how docs/BENCHMARKS.md reads credd's p99.
//!
//! ```sh
//! cargo run --release --example bare_busy -- 127.0.0.1:50063 3000   # 3 µs per call
//! ```

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_server::{Health, HealthServer},
};

/// Answers every Check SERVING after spinning for its duration.
struct Busy(Duration);

#[tonic::async_trait]
impl Health for Busy {
    async fn check(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let started = Instant::now();
        while started.elapsed() < self.0 {
            std::hint::spin_loop();
        }
        Ok(tonic::Response::new(HealthCheckResponse {
            status: ServingStatus::Serving.into(),
        }))
    }

    type WatchStream =
        tokio_stream::wrappers::ReceiverStream<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("only Check is served"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:50063".into())
        .parse()?;
    let nanos: u64 = args.next().unwrap_or_else(|| "0".into()).parse()?;
    println!("bare tonic Health/Check, {nanos} ns of CPU per call, on {addr}");
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(Busy(Duration::from_nanos(nanos))))
        .serve_with_shutdown(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
