//! App registrations: native (iOS, Android) and web apps of an org. A unique index
//! on (org, platform, natural key) refuses duplicate bundle IDs, package names and
//! callback URLs within an org.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AppRegistrations::Table)
                    .if_not_exists()
                    .col(string_len(AppRegistrations::Id, 36).primary_key())
                    .col(string_len(AppRegistrations::OrgId, 36))
                    .col(string_len(AppRegistrations::Name, 200))
                    .col(string_len(AppRegistrations::Platform, 16))
                    .col(string_len(AppRegistrations::AppId, 255))
                    .col(string_len(AppRegistrations::RedirectUri, 2048))
                    .col(string_len(AppRegistrations::NaturalKey, 2048))
                    .col(string_len(AppRegistrations::AppleTeamId, 10))
                    .col(text(AppRegistrations::Sha256CertFingerprints))
                    .col(boolean(AppRegistrations::RequirePkce))
                    .col(timestamp_with_time_zone(AppRegistrations::CreateTime))
                    .col(timestamp_with_time_zone(AppRegistrations::UpdateTime))
                    .foreign_key(
                        ForeignKey::create()
                            .name("app_registrations_org_id_fkey")
                            .from(AppRegistrations::Table, AppRegistrations::OrgId)
                            .to(Orgs::Table, Orgs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("app_registrations_natural_key")
                    .table(AppRegistrations::Table)
                    .col(AppRegistrations::OrgId)
                    .col(AppRegistrations::Platform)
                    .col(AppRegistrations::NaturalKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AppRegistrations::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AppRegistrations {
    Table,
    Id,
    OrgId,
    Name,
    Platform,
    AppId,
    RedirectUri,
    NaturalKey,
    AppleTeamId,
    Sha256CertFingerprints,
    RequirePkce,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Orgs {
    Table,
    Id,
}
