//! Org-scoped caller tokens: the orgs a token reaches, space-separated ids; empty
//! (every existing token) reaches every org.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CallerTokens::Table)
                    .add_column(text(CallerTokens::OrgIds).default(""))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CallerTokens::Table)
                    .drop_column(CallerTokens::OrgIds)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum CallerTokens {
    Table,
    OrgIds,
}
