//! credd's integration tests: one binary (link time on 2 cores), one module per area.
//! Every test starts the real server on a random port over a fresh database and
//! calls it with the generated tonic clients.

#[macro_use]
mod helpers;

mod alerts;
mod app_registrations;
mod audit;
mod callers;
mod cli;
mod client_layer;
mod client_secrets;
mod crash;
mod directory;
mod events;
mod gateway;
mod grpcurl;
mod lifecycle;
mod operations;
mod orgs;
mod pooler;
mod protocol;
mod readme;
mod scoping;
mod server;
mod structure;
mod timing;
mod tls;
mod traces;
mod verify_at_scale;
