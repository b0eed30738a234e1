//! SeaORM entities, one per table.

pub mod app_registrations;
pub mod client_secrets;
pub mod orgs;
