//! Client secrets: metadata and the argon2id PHC hash, never the secret. A partial
//! unique index lets the store itself refuse a second ACTIVE secret for an org.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClientSecrets::Table)
                    .if_not_exists()
                    .col(string_len(ClientSecrets::Id, 36).primary_key())
                    .col(string_len(ClientSecrets::OrgId, 36))
                    .col(string_len(ClientSecrets::State, 16))
                    .col(string_len(ClientSecrets::Description, 200))
                    .col(string_len(ClientSecrets::Hint, 8))
                    .col(boolean(ClientSecrets::Imported))
                    .col(text(ClientSecrets::Phc))
                    .col(timestamp_with_time_zone(ClientSecrets::CreateTime))
                    .col(timestamp_with_time_zone_null(ClientSecrets::ActivateTime))
                    .col(timestamp_with_time_zone_null(ClientSecrets::ExpireTime))
                    .col(timestamp_with_time_zone_null(ClientSecrets::RevokeTime))
                    .col(timestamp_with_time_zone_null(ClientSecrets::LastUsedTime))
                    .foreign_key(
                        ForeignKey::create()
                            .name("client_secrets_org_id_fkey")
                            .from(ClientSecrets::Table, ClientSecrets::OrgId)
                            .to(Orgs::Table, Orgs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("client_secrets_org_id_state_idx")
                    .table(ClientSecrets::Table)
                    .col(ClientSecrets::OrgId)
                    .col(ClientSecrets::State)
                    .to_owned(),
            )
            .await?;
        // The same statement on SQLite and PostgreSQL: at most one ACTIVE per org.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX client_secrets_one_active_per_org \
                 ON client_secrets (org_id) WHERE state = 'ACTIVE'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ClientSecrets::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ClientSecrets {
    Table,
    Id,
    OrgId,
    State,
    Description,
    Hint,
    Imported,
    Phc,
    CreateTime,
    ActivateTime,
    ExpireTime,
    RevokeTime,
    LastUsedTime,
}

#[derive(DeriveIden)]
enum Orgs {
    Table,
    Id,
}
