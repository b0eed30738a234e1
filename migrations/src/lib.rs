//! credd's schema, one change per file. The server runs `Migrator::up` at start and
//! `credd migrate` runs it alone. Migrations never import the live entities.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_orgs;
mod m20261122_000002_create_client_secrets;
mod m20261122_000003_create_app_registrations;
mod m20261122_000004_create_audit_events;
mod m20261122_000005_create_caller_tokens;
mod m20261122_000006_create_change_counter;
mod m20261201_000007_create_change_log;
mod m20261202_000008_add_caller_token_org_ids;
mod m20261202_000009_add_credential_lifecycle;
mod m20261202_000010_add_audit_sequence;
mod m20261204_000011_add_caller_token_parent;

/// Every migration of credd, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_orgs::Migration),
            Box::new(m20261122_000002_create_client_secrets::Migration),
            Box::new(m20261122_000003_create_app_registrations::Migration),
            Box::new(m20261122_000004_create_audit_events::Migration),
            Box::new(m20261122_000005_create_caller_tokens::Migration),
            Box::new(m20261122_000006_create_change_counter::Migration),
            Box::new(m20261201_000007_create_change_log::Migration),
            Box::new(m20261202_000008_add_caller_token_org_ids::Migration),
            Box::new(m20261202_000009_add_credential_lifecycle::Migration),
            Box::new(m20261202_000010_add_audit_sequence::Migration),
            Box::new(m20261204_000011_add_caller_token_parent::Migration),
        ]
    }
}
