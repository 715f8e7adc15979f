//! Every status we were told about for a deployment, in the order we learnt it.

use sea_orm::entity::prelude::*;

/// One status report about one deployment, from one delivery.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deployment_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub deployment_id: i64,
    pub delivery_id: Option<i64>,
    pub status: crate::DeploymentStatus,
    pub raw_status: String,
    /// The deployment's normalised status before this event was applied (none for the first).
    pub previous_status: Option<crate::DeploymentStatus>,
    pub occurred_at: i64,
    pub recorded_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
