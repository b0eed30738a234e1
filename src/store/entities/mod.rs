//! SeaORM entities, one per table.

pub mod orgs;
