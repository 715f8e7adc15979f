//! Per-day deployment counts kept up to date at ingest, so counts and frequency read a few
//! hundred rollup rows instead of counting deployments.
//!
//! One row per (system, environment, UTC day, status) at four grains: a system in an
//! environment, a system in all environments (`environment_id = 0`), all systems in an
//! environment (`system_id = 0`) and everything (both 0). Ids start at 1 on both databases, so 0
//! never names a real row. The ingest writer adds its deltas in the same transaction as the
//! deployment change; `REBUILD` recomputes everything from the deployments (this migration, seed
//! and replay use it), so the two can be compared (a test does).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DeploymentCounts {
    Table,
    SystemId,
    EnvironmentId,
    Day,
    Status,
    Count,
}

/// One UTC day in epoch milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Statements that fill `deployment_counts` from `deployments` (run after clearing it). Plain
/// SQL both SQLite and PostgreSQL accept; deployment times are after 1970, so integer division
/// floors.
pub const REBUILD: [&str; 4] = [
    "INSERT INTO deployment_counts (system_id, environment_id, day, status, count) \
     SELECT system_id, environment_id, (deployed_at / 86400000) * 86400000, status, COUNT(*) \
     FROM deployments GROUP BY system_id, environment_id, (deployed_at / 86400000), status",
    "INSERT INTO deployment_counts (system_id, environment_id, day, status, count) \
     SELECT system_id, 0, (deployed_at / 86400000) * 86400000, status, COUNT(*) \
     FROM deployments GROUP BY system_id, (deployed_at / 86400000), status",
    "INSERT INTO deployment_counts (system_id, environment_id, day, status, count) \
     SELECT 0, environment_id, (deployed_at / 86400000) * 86400000, status, COUNT(*) \
     FROM deployments GROUP BY environment_id, (deployed_at / 86400000), status",
    "INSERT INTO deployment_counts (system_id, environment_id, day, status, count) \
     SELECT 0, 0, (deployed_at / 86400000) * 86400000, status, COUNT(*) \
     FROM deployments GROUP BY (deployed_at / 86400000), status",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeploymentCounts::Table)
                    .if_not_exists()
                    .col(big_integer(DeploymentCounts::SystemId))
                    .col(big_integer(DeploymentCounts::EnvironmentId))
                    .col(big_integer(DeploymentCounts::Day))
                    .col(string(DeploymentCounts::Status))
                    .col(big_integer(DeploymentCounts::Count))
                    // Every read names both ids and a day range: this order serves them all.
                    .primary_key(
                        Index::create()
                            .col(DeploymentCounts::SystemId)
                            .col(DeploymentCounts::EnvironmentId)
                            .col(DeploymentCounts::Day)
                            .col(DeploymentCounts::Status),
                    )
                    .to_owned(),
            )
            .await?;
        // The same columns plus the count: sums read the index alone (an index-only scan on
        // PostgreSQL, a covering index on SQLite), never the scattered table rows.
        manager
            .create_index(
                Index::create()
                    .name("deployment_counts_covering")
                    .table(DeploymentCounts::Table)
                    .col(DeploymentCounts::SystemId)
                    .col(DeploymentCounts::EnvironmentId)
                    .col(DeploymentCounts::Day)
                    .col(DeploymentCounts::Status)
                    .col(DeploymentCounts::Count)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in REBUILD {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeploymentCounts::Table).to_owned())
            .await
    }
}
