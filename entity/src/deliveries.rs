//! The raw journal: one row per accepted webhook delivery.

use sea_orm::entity::prelude::*;

/// One accepted delivery, exactly as received (minus secrets), with its processing state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deliveries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub source: String,
    pub delivery_key: String,
    pub received_at: i64,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    #[sea_orm(column_type = "Text")]
    pub headers: String,
    pub state: crate::DeliveryState,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: Option<i64>,
    pub processed_at: Option<i64>,
    /// Why it is (or is not) a deployment, as JSON (`shiplog explain`); none before 2026-11-30.
    #[sea_orm(column_type = "Text", nullable)]
    pub decision: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
