//! Schema migrations for shiplog. One code path for SQLite and PostgreSQL: every table and
//! index is declared through sea-query, so both backends get the same shape.
//!
//! Times are stored as epoch milliseconds (BIGINT): bucketing and comparisons stay plain
//! integer arithmetic on both backends, and no driver's time-zone handling gets a say.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_initial;
pub mod m20261126_000002_deployment_counts;
mod m20261130_000003_board_latest;
mod m20261130_000004_delivery_decision;
mod m20261130_000005_discovered_by;
mod m20261130_000006_deployment_notes;
mod m20261130_000007_deployment_corrections;
mod m20261130_000008_commit_ranges;
mod m20261130_000009_history_indexes;

/// The list of shiplog's migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_initial::Migration),
            Box::new(m20261126_000002_deployment_counts::Migration),
            Box::new(m20261130_000003_board_latest::Migration),
            Box::new(m20261130_000004_delivery_decision::Migration),
            Box::new(m20261130_000005_discovered_by::Migration),
            Box::new(m20261130_000006_deployment_notes::Migration),
            Box::new(m20261130_000007_deployment_corrections::Migration),
            Box::new(m20261130_000008_commit_ranges::Migration),
            Box::new(m20261130_000009_history_indexes::Migration),
        ]
    }
}
