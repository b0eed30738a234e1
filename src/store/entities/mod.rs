//! SeaORM entities, one per table.

pub mod app_registrations;
pub mod audit_events;
pub mod caller_tokens;
pub mod change_log;
pub mod client_secrets;
pub mod orgs;
