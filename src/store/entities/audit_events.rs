//! The `audit_events` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub time: DateTimeUtc,
    pub caller: String,
    pub action: String,
    pub org_id: Option<String>,
    pub target_id: String,
    pub outcome: String,
    pub request_id: String,
    pub details: String,
    /// Its place in commit order (WatchAuditEvents reads on from it).
    pub seq: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
