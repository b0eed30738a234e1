//! credd: a gRPC service that owns OAuth client credentials.
//!
//! The binary (`src/main.rs`) only parses the command line; everything else lives in
//! this library so that the integration tests start the very same server.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod pb;
pub mod service;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use config::Settings;
pub use error::Error;
