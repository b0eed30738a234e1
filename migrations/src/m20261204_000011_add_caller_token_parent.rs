//! A caller token made by another stored token records its maker (`parent_id`), so
//! that revoking the maker revokes what it made; and a token's name is unique
//! among the live tokens of its org set only, so that an org-limited admin does
//! not learn other tenants' token names from ALREADY_EXISTS.

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
                    .add_column(string_len_null(CallerTokens::ParentId, 36))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("caller_tokens_parent_id_idx")
                    .table(CallerTokens::Table)
                    .col(CallerTokens::ParentId)
                    .to_owned(),
            )
            .await?;
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "CREATE UNIQUE INDEX caller_tokens_live_org_set_name_key ON caller_tokens (org_ids, name) WHERE revoke_time IS NULL",
        )
        .await?;
        conn.execute_unprepared("DROP INDEX caller_tokens_live_name_key")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "CREATE UNIQUE INDEX caller_tokens_live_name_key ON caller_tokens (name) WHERE revoke_time IS NULL",
        )
        .await?;
        conn.execute_unprepared("DROP INDEX caller_tokens_live_org_set_name_key")
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("caller_tokens_parent_id_idx")
                    .table(CallerTokens::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(CallerTokens::Table)
                    .drop_column(CallerTokens::ParentId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum CallerTokens {
    Table,
    ParentId,
}
