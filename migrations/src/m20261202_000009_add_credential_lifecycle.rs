//! The credential lifecycle: each secret's lifetime end (fixed when it is issued,
//! by its ttl or the org's policy then) and the end of its wait for activation;
//! each org's credential policy as JSON (empty: the defaults).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [ClientSecrets::LifetimeEnd, ClientSecrets::PendingExpireTime] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ClientSecrets::Table)
                        .add_column(timestamp_with_time_zone_null(column))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Orgs::Table)
                    .add_column(text(Orgs::CredentialPolicy).default(""))
                    .to_owned(),
            )
            .await?;
        // The sweeper's reads: current secrets by when they end.
        manager
            .create_index(
                Index::create()
                    .name("client_secrets_state_expire_time_idx")
                    .table(ClientSecrets::Table)
                    .col(ClientSecrets::State)
                    .col(ClientSecrets::ExpireTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("client_secrets_state_expire_time_idx")
                    .table(ClientSecrets::Table)
                    .to_owned(),
            )
            .await?;
        for column in [ClientSecrets::LifetimeEnd, ClientSecrets::PendingExpireTime] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ClientSecrets::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Orgs::Table)
                    .drop_column(Orgs::CredentialPolicy)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ClientSecrets {
    Table,
    LifetimeEnd,
    PendingExpireTime,
    State,
    ExpireTime,
}

#[derive(DeriveIden)]
enum Orgs {
    Table,
    CredentialPolicy,
}
