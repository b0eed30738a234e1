//! The audit trail in commit order, for WatchAuditEvents: each event's `seq`, taken
//! from a one-row counter whose row lock (held to the commit) puts the appending
//! transactions in one order, so that a reader going on from the last `seq` it saw
//! misses nothing; existing events are numbered in id order. And each secret's
//! mark that its `secret.expiring` event was written (once, by one replica).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .add_column(big_integer_null(AuditEvents::Seq))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // UPDATE … FROM: PostgreSQL, and SQLite since 3.33.
        db.execute_unprepared(
            "UPDATE audit_events SET seq = numbered.n FROM \
             (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM audit_events) AS numbered \
             WHERE audit_events.id = numbered.id",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_events_seq_key")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditCounter::Table)
                    .if_not_exists()
                    .col(integer(AuditCounter::Id).primary_key())
                    .col(big_integer(AuditCounter::Value))
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "INSERT INTO audit_counter (id, value) \
             SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events",
        )
        .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ClientSecrets::Table)
                    .add_column(boolean(ClientSecrets::ExpiringAnnounced).default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ClientSecrets::Table)
                    .drop_column(ClientSecrets::ExpiringAnnounced)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(AuditCounter::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("audit_events_seq_key")
                    .table(AuditEvents::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .drop_column(AuditEvents::Seq)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Seq,
}

#[derive(DeriveIden)]
enum AuditCounter {
    Table,
    Id,
    Value,
}

#[derive(DeriveIden)]
enum ClientSecrets {
    Table,
    ExpiringAnnounced,
}
