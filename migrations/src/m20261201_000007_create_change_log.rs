//! A log of which org's verifications changed, in order: writes append a row in
//! their transaction, and every process reads the rows since it last looked and
//! forgets only those orgs' cached verdicts (the change counter beside it stays the
//! cheap "something changed" signal, and what older replicas still watch).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChangeLog::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ChangeLog::Seq))
                    .col(string(ChangeLog::Origin))
                    .col(string(ChangeLog::OrgId))
                    .col(timestamp_with_time_zone(ChangeLog::Time))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("change_log_time")
                    .table(ChangeLog::Table)
                    .col(ChangeLog::Time)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeLog::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ChangeLog {
    Table,
    Seq,
    Origin,
    OrgId,
    Time,
}
