//! Which commit range a deployment shipped: from the previous successful deployment of its
//! system in its environment (`base`) to its own commit (`head`).

use sea_orm::entity::prelude::*;

/// A deployment's range.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deployment_changes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub deployment_id: i64,
    #[sea_orm(column_type = "Text")]
    pub repository: String,
    pub base: String,
    pub head: String,
    pub recorded_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
