//! The audit trail: one row per write, appended in the same transaction as the
//! change. No code path updates or deletes rows.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    .col(string_len(AuditEvents::Id, 36).primary_key())
                    .col(timestamp_with_time_zone(AuditEvents::Time))
                    .col(string_len(AuditEvents::Caller, 200))
                    .col(string_len(AuditEvents::Action, 64))
                    .col(string_len_null(AuditEvents::OrgId, 36))
                    .col(string_len(AuditEvents::TargetId, 200))
                    .col(string_len(AuditEvents::Outcome, 200))
                    .col(string_len(AuditEvents::RequestId, 64))
                    .col(text(AuditEvents::Details))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_events_org_id_idx")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrgId)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    Time,
    Caller,
    Action,
    OrgId,
    TargetId,
    Outcome,
    RequestId,
    Details,
}
