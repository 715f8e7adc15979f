//! Environments: where deployments land (production, staging, ...).

use sea_orm::entity::prelude::*;

/// An environment, unique by name after the environment alias rules.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "environments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    pub created_at: i64,
    /// When a tool last said it stopped the environment (GitLab's `stop` action, GitHub's
    /// `inactive` on a transient environment), epoch ms; a later deployment starts it again.
    pub stopped_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
