//! Per-day deployment counts, kept at ingest (see the migration for the four grains).

use sea_orm::entity::prelude::*;

/// How many deployments of one status one (system, environment) had on one UTC day; an id
/// of 0 means "all".
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deployment_counts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub system_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub environment_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub status: crate::DeploymentStatus,
    pub count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
