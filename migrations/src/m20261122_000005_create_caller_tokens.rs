//! Caller tokens: who may call credd, with which scopes. Only the SHA-256 digest of
//! a token is stored.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CallerTokens::Table)
                    .if_not_exists()
                    .col(string_len(CallerTokens::Id, 36).primary_key())
                    .col(string_len(CallerTokens::Name, 100))
                    .col(string_len(CallerTokens::Digest, 64))
                    .col(string_len(CallerTokens::Scopes, 200))
                    .col(string_len(CallerTokens::Hint, 8))
                    .col(timestamp_with_time_zone(CallerTokens::CreateTime))
                    .col(timestamp_with_time_zone_null(CallerTokens::ExpireTime))
                    .col(timestamp_with_time_zone_null(CallerTokens::RevokeTime))
                    .col(timestamp_with_time_zone_null(CallerTokens::LastUsedTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("caller_tokens_digest_key")
                    .table(CallerTokens::Table)
                    .col(CallerTokens::Digest)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A name belongs to one live token; a revoked token's name may be reused.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX caller_tokens_live_name_key ON caller_tokens (name) WHERE revoke_time IS NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CallerTokens::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum CallerTokens {
    Table,
    Id,
    Name,
    Digest,
    Scopes,
    Hint,
    CreateTime,
    ExpireTime,
    RevokeTime,
    LastUsedTime,
}
