//! Aggregations for Grafana and DORA, computed in the database: bucketed counts with GROUP BY
//! over the same filtered, indexed deployments the lists use. Buckets are integer arithmetic
//! on epoch milliseconds, the same on SQLite and PostgreSQL.

use std::collections::HashMap;

use entity::deployments;
use futures_util::TryStreamExt;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{DeploymentFilter, Store, StoreError};
use crate::domain::DeploymentStatus;

/// A dimension counts can be split by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    System,
    Environment,
    Status,
    Source,
}

/// One bucket of one group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    pub start: i64,
    pub system_id: Option<i64>,
    pub environment_id: Option<i64>,
    pub status: Option<String>,
    pub source: Option<String>,
}

impl Bucket {
    /// A bucket from a grouped row, where a dimension not grouped by comes back as -1 (ids) or
    /// an empty string (text).
    pub(super) fn from_row(
        start: i64,
        system: i64,
        environment: i64,
        status: String,
        source: String,
    ) -> Self {
        Bucket {
            start,
            system_id: (system >= 0).then_some(system),
            environment_id: (environment >= 0).then_some(environment),
            status: (!status.is_empty()).then_some(status),
            source: (!source.is_empty()).then_some(source),
        }
    }
}

pub use crate::domain::buckets::Width;
pub use crate::domain::dora::Outcome;

impl Store {
    /// Counts per bucket and group, ascending by time, counted from the deployment rows (see
    /// `count_buckets` for the rollup path); only buckets with deployments.
    pub async fn count_bucket_rows(
        &self,
        filter: &DeploymentFilter,
        width: Width,
        offset_ms: i64,
        dimensions: &[Dimension],
    ) -> Result<Vec<(Bucket, i64)>, StoreError> {
        let Some(select) = self.select(filter).await? else {
            return Ok(Vec::new());
        };
        let (width_ms, shift) = (width.millis(), width.shift(offset_ms));
        // Integers computed here, never user text, so formatting them into SQL is safe.
        // Division truncates toward zero on both databases: fine for times after 1970.
        let bucket = Expr::cust(format!(
            "((\"deployed_at\" + {shift}) / {width_ms}) * {width_ms} - {shift}"
        ));
        let wants = |d: Dimension| dimensions.contains(&d);
        let mut query = select.select_only().column_as(bucket, "bucket");
        query = if wants(Dimension::System) {
            query.column_as(deployments::Column::SystemId, "system_id")
        } else {
            query.column_as(Expr::val(-1i64), "system_id")
        };
        query = if wants(Dimension::Environment) {
            query.column_as(deployments::Column::EnvironmentId, "environment_id")
        } else {
            query.column_as(Expr::val(-1i64), "environment_id")
        };
        query = if wants(Dimension::Status) {
            query.column_as(deployments::Column::Status, "status")
        } else {
            query.column_as(Expr::val(""), "status")
        };
        query = if wants(Dimension::Source) {
            query.column_as(deployments::Column::Source, "source")
        } else {
            query.column_as(Expr::val(""), "source")
        };
        // COUNT(*), not COUNT(id): the covering index has no id, and PostgreSQL would visit
        // every row's heap page for it.
        query = query.column_as(Expr::cust("COUNT(*)"), "count");
        query = query.group_by(Expr::cust("1"));
        for (dimension, column) in [
            (Dimension::System, deployments::Column::SystemId),
            (Dimension::Environment, deployments::Column::EnvironmentId),
            (Dimension::Status, deployments::Column::Status),
            (Dimension::Source, deployments::Column::Source),
        ] {
            if wants(dimension) {
                query = query.group_by(column);
            }
        }
        // Streamed: each row is freed once converted (sqlx's SQLite driver copies every value
        // of a row it hands out, 18,000 rows for a year of 50 daily series).
        let mut rows = query
            .order_by(Expr::cust("1"), sea_orm::Order::Asc)
            .into_tuple::<(i64, i64, i64, String, String, i64)>()
            .stream(self.connection())
            .await?;
        let mut buckets = Vec::new();
        while let Some((start, system, environment, status, source, count)) = rows.try_next().await? {
            buckets.push((
                Bucket::from_row(start, system, environment, status, source),
                count,
            ));
        }
        Ok(buckets)
    }

    /// Finished deployments (succeeded or failed) matching a filter, oldest first, with only
    /// the columns DORA's sequential measures need.
    pub async fn finished_outcomes(&self, filter: &DeploymentFilter) -> Result<Vec<Outcome>, StoreError> {
        let Some(select) = self.select(filter).await? else {
            return Ok(Vec::new());
        };
        // id, system, environment, status, deployed_at, committed_at, failed_change, version,
        // commit, tags
        type Row = (
            i64,
            i64,
            i64,
            String,
            i64,
            Option<i64>,
            Option<bool>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = select
            .select_only()
            .columns([
                deployments::Column::Id,
                deployments::Column::SystemId,
                deployments::Column::EnvironmentId,
                deployments::Column::Status,
                deployments::Column::DeployedAt,
                deployments::Column::CommittedAt,
                deployments::Column::FailedChange,
                deployments::Column::Version,
                deployments::Column::CommitSha,
                deployments::Column::Tags,
            ])
            .filter(deployments::Column::Status.is_in(["succeeded", "failed"]))
            .order_by_asc(deployments::Column::DeployedAt)
            .order_by_asc(deployments::Column::Id)
            .into_tuple()
            .all(self.connection())
            .await?;
        // Per-commit lead time: the commits of each success, where the Git host was read.
        let succeeded: Vec<i64> = rows
            .iter()
            .filter(|row| row.3 == DeploymentStatus::Succeeded.as_str())
            .map(|row| row.0)
            .collect();
        let mut commit_times: HashMap<i64, Vec<i64>> = self
            .changes_of(&succeeded)
            .await?
            .into_iter()
            .filter_map(|(id, (_, range))| {
                let range = range.filter(|r| r.state == super::commits::FOUND)?;
                let times = crate::commits::commits_of(&range)
                    .into_iter()
                    .filter_map(|c| c.committed_at)
                    .collect();
                Some((id, times))
            })
            .collect();
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    system_id,
                    environment_id,
                    status,
                    deployed_at,
                    committed_at,
                    failed_change,
                    version,
                    sha,
                    tags,
                )| {
                    Outcome {
                        system_id,
                        environment_id,
                        status: DeploymentStatus::from_stored(&status),
                        deployed_at,
                        committed_at,
                        failed_change,
                        shipped: version.or_else(|| sha.map(|sha| format!("commit:{sha}"))),
                        said_rollback: super::history::tags_say_rollback(tags.as_deref()),
                        commit_times: commit_times.remove(&id).unwrap_or_default(),
                    }
                },
            )
            .collect())
    }

    /// Names of environments whose deployments carry a tier (GitLab's `deployment_tier`,
    /// Heroku's stage) equal to `tier`.
    pub async fn environments_with_tier(&self, tier: &str) -> Result<Vec<String>, StoreError> {
        let ids: Vec<i64> = deployments::Entity::find()
            .select_only()
            .column(deployments::Column::EnvironmentId)
            .distinct()
            .filter(deployments::Column::EnvironmentTier.eq(tier))
            .into_tuple()
            .all(self.connection())
            .await?;
        let names: HashMap<i64, super::Named> = self.environments_by_ids(&ids).await?;
        let mut names: Vec<String> = names.into_values().map(|n| n.name).collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_at_local_midnight_and_weeks_on_monday() {
        let t = 1_764_165_780_000; // Wed 2025-11-26T14:03:00Z
        assert_eq!(Width::Day.floor(t, 0), 1_764_115_200_000); // 2025-11-26T00:00Z
        // UTC+02:00: local midnight is 22:00 UTC the day before.
        assert_eq!(
            Width::Day.floor(t, 2 * 3_600_000),
            1_764_115_200_000 - 2 * 3_600_000
        );
        assert_eq!(Width::Week.floor(t, 0), 1_763_942_400_000); // Mon 2025-11-24T00:00Z
        assert_eq!(Width::Hour.floor(t, 0), 1_764_165_600_000);
    }
}
