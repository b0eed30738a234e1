//! SeaORM entities, one per table.

pub mod client_secrets;
pub mod orgs;
