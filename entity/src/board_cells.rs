//! The board: what runs where, one row per system and environment.

use sea_orm::entity::prelude::*;

/// The deployments that matter in one system's environment right now.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "board_cells")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub system_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub environment_id: i64,
    /// The last deployment that succeeded (what runs there), and its time.
    pub current_id: Option<i64>,
    pub current_at: Option<i64>,
    /// The newest deployment still queued or running.
    pub progress_id: Option<i64>,
    pub progress_at: Option<i64>,
    /// The newest failed deployment.
    pub failure_id: Option<i64>,
    pub failure_at: Option<i64>,
    pub updated_at: i64,
    /// The newest deployment whatever its status (cancelled and unknown ones too).
    pub latest_id: Option<i64>,
    pub latest_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
