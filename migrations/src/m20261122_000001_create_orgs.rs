//! Orgs: one row per organization. A deleted org keeps its row (with `delete_time`
//! set and its custom domain released) so that its client ID is never issued again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Orgs::Table)
                    .if_not_exists()
                    .col(string_len(Orgs::Id, 36).primary_key())
                    .col(string_len(Orgs::ClientId, 64))
                    .col(string_len(Orgs::Name, 200))
                    .col(string_len(Orgs::MainWebsite, 2048))
                    .col(string_len_null(Orgs::CustomDomain, 253))
                    .col(timestamp_with_time_zone(Orgs::CreateTime))
                    .col(timestamp_with_time_zone(Orgs::UpdateTime))
                    .col(timestamp_with_time_zone_null(Orgs::DeleteTime))
                    .to_owned(),
            )
            .await?;
        // Over every row, deleted ones too: a client ID is never reissued.
        manager
            .create_index(
                Index::create()
                    .name("orgs_client_id_key")
                    .table(Orgs::Table)
                    .col(Orgs::ClientId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // NULLs are distinct on both SQLite and PostgreSQL, so orgs without a custom
        // domain do not collide; deleting an org sets its domain to NULL.
        manager
            .create_index(
                Index::create()
                    .name("orgs_custom_domain_key")
                    .table(Orgs::Table)
                    .col(Orgs::CustomDomain)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Orgs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Orgs {
    Table,
    Id,
    ClientId,
    Name,
    MainWebsite,
    CustomDomain,
    CreateTime,
    UpdateTime,
    DeleteTime,
}
