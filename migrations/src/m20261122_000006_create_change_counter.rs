//! A one-row change counter. Writes that invalidate cached verifications bump it in
//! their transaction, so that other processes sharing a SQLite file notice within a
//! poll (PostgreSQL replicas use LISTEN/NOTIFY instead).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChangeCounter::Table)
                    .if_not_exists()
                    .col(integer(ChangeCounter::Id).primary_key())
                    .col(big_integer(ChangeCounter::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ChangeCounter::Table)
                    .columns([ChangeCounter::Id, ChangeCounter::Version])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeCounter::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ChangeCounter {
    Table,
    Id,
    Version,
}
