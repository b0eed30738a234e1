//! The `client_secrets` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "client_secrets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub org_id: String,
    pub state: String,
    pub description: String,
    pub hint: String,
    pub imported: bool,
    pub phc: String,
    pub create_time: DateTimeUtc,
    pub activate_time: Option<DateTimeUtc>,
    pub expire_time: Option<DateTimeUtc>,
    pub revoke_time: Option<DateTimeUtc>,
    pub last_used_time: Option<DateTimeUtc>,
    pub lifetime_end: Option<DateTimeUtc>,
    pub pending_expire_time: Option<DateTimeUtc>,
    /// Whether its `secret.expiring` event was written.
    pub expiring_announced: bool,
}

// The hash stays out of Debug output.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("client_secrets::Model")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::orgs::Entity",
        from = "Column::OrgId",
        to = "super::orgs::Column::Id"
    )]
    Org,
}

impl Related<super::orgs::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Org.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
