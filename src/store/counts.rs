//! Per-day counts (the `deployment_counts` rollup, see the migration): the writer keeps them
//! in step with the deployments inside the same transaction, and counts and frequency read
//! them for whole UTC days, counting deployment rows only for the partial days at a window's
//! edges. The answers are the same as counting the rows (tests compare the two on both
//! databases).

use std::collections::{BTreeMap, HashMap};

use entity::{deployment_counts, deployments, systems};
use futures_util::TryStreamExt;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    TransactionTrait,
};

use super::analytics::{Bucket, Dimension, Width};
use super::{DeploymentFilter, NameKind, Store, StoreError};
use crate::domain::{DAY_MS, DeploymentStatus};

/// Rows per multi-row upsert (5 parameters each).
const ROWS_PER_STATEMENT: usize = 500;

/// (system_id, environment_id, day, status); ids of 0 mean "all".
type Key = (i64, i64, i64, DeploymentStatus);

/// Changes to the rollup a transaction will make. Sorted, so concurrent writers (replicas on
/// PostgreSQL) lock rollup rows in the same order and cannot deadlock on them.
#[derive(Debug, Default)]
pub(crate) struct CountDeltas(BTreeMap<Key, i64>);

impl CountDeltas {
    /// Counts a deployment in (`sign` = 1) or out (-1) at all four grains.
    pub fn add(&mut self, deployment: &deployments::Model, sign: i64) {
        if deployment.deleted_at.is_some() {
            // Deleted by people: counted nowhere.
            return;
        }
        let day = day_floor(deployment.deployed_at);
        let (s, e) = (deployment.system_id, deployment.environment_id);
        for (system, environment) in [(s, e), (s, 0), (0, e), (0, 0)] {
            *self
                .0
                .entry((system, environment, day, deployment.status))
                .or_default() += sign;
        }
    }

    /// A change from `before` to `after` (no-op when the counted facts are equal).
    pub fn change(&mut self, before: &deployments::Model, after: &deployments::Model) {
        let same = before.system_id == after.system_id
            && before.environment_id == after.environment_id
            && day_floor(before.deployed_at) == day_floor(after.deployed_at)
            && before.status == after.status
            && before.deleted_at.is_some() == after.deleted_at.is_some();
        if !same {
            self.add(before, -1);
            self.add(after, 1);
        }
    }

    /// Folds another transaction part's changes in.
    pub fn extend(&mut self, other: Self) {
        for (key, delta) in other.0 {
            *self.0.entry(key).or_default() += delta;
        }
    }

    /// Writes the changes: a few multi-row upserts that add to the stored counts.
    pub async fn flush<C: ConnectionTrait>(self, conn: &C) -> Result<(), StoreError> {
        use deployment_counts::Column;
        let rows: Vec<(Key, i64)> = self.0.into_iter().filter(|(_, delta)| *delta != 0).collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut insert = Query::insert();
            insert.into_table(deployment_counts::Entity).columns([
                Column::SystemId,
                Column::EnvironmentId,
                Column::Day,
                Column::Status,
                Column::Count,
            ]);
            for ((system, environment, day, status), delta) in chunk {
                insert.values_panic([
                    (*system).into(),
                    (*environment).into(),
                    (*day).into(),
                    (*status).into(),
                    (*delta).into(),
                ]);
            }
            insert.on_conflict(
                OnConflict::columns([
                    Column::SystemId,
                    Column::EnvironmentId,
                    Column::Day,
                    Column::Status,
                ])
                .value(
                    Column::Count,
                    Expr::col((deployment_counts::Entity, Column::Count))
                        .add(Expr::col((Alias::new("excluded"), Column::Count))),
                )
                .to_owned(),
            );
            conn.execute(&insert).await?;
        }
        Ok(())
    }
}

/// `INSERT INTO deployment_counts ... SELECT ... GROUP BY ...` for one grain: per system and
/// environment, per system only (environment 0), per environment only, or all together.
fn rebuild_grain(
    by_system: bool,
    by_environment: bool,
) -> Result<sea_orm::sea_query::InsertStatement, StoreError> {
    use deployment_counts::Column as Count;
    use deployments::Column as Deployment;
    // Deployment times are after 1970, so integer division floors. The day is written out
    // (not bound) so PostgreSQL sees the selected and the grouped expression are the same.
    let day = Expr::cust(format!("(deployed_at / {DAY_MS}) * {DAY_MS}"));
    let id_or_all = |by: bool, column: Deployment| {
        if by { Expr::col(column) } else { Expr::val(0i64) }
    };
    let mut select = Query::select();
    select
        .expr(id_or_all(by_system, Deployment::SystemId))
        .expr(id_or_all(by_environment, Deployment::EnvironmentId))
        .expr(day.clone())
        .column(Deployment::Status)
        .expr(Expr::col(Deployment::Id).count())
        .from(deployments::Entity)
        .and_where(Expr::col(Deployment::DeletedAt).is_null());
    if by_system {
        select.group_by_col(Deployment::SystemId);
    }
    if by_environment {
        select.group_by_col(Deployment::EnvironmentId);
    }
    select.add_group_by([day]).group_by_col(Deployment::Status);
    let mut insert = Query::insert();
    insert
        .into_table(deployment_counts::Entity)
        .columns([
            Count::SystemId,
            Count::EnvironmentId,
            Count::Day,
            Count::Status,
            Count::Count,
        ])
        .select_from(select)
        .map_err(|error| StoreError::Invalid(format!("the rollup's rebuild statement: {error}")))?;
    Ok(insert)
}

/// The start of the UTC day containing `t` (epoch ms, after 1970).
pub(crate) fn day_floor(t: i64) -> i64 {
    t.div_euclid(DAY_MS) * DAY_MS
}

/// A filter's inclusive [from, to] split into whole UTC days [lo, hi) the rollup answers and
/// the partial-day edges, as inclusive ranges, that are counted from the deployments.
struct Split {
    lo: Option<i64>,
    hi: Option<i64>,
    edges: Vec<(Option<i64>, Option<i64>)>,
}

fn split(from: Option<i64>, to: Option<i64>) -> Option<Split> {
    let lo = from.map(|f| day_floor(f + DAY_MS - 1));
    let hi = to.map(|t| day_floor(t.saturating_add(1)));
    if let (Some(lo), Some(hi)) = (lo, hi)
        && lo >= hi
    {
        return None;
    }
    let mut edges = Vec::new();
    if let (Some(from), Some(lo)) = (from, lo)
        && from < lo
    {
        edges.push((Some(from), Some(lo - 1)));
    }
    if let (Some(to), Some(hi)) = (to, hi)
        && hi <= to
    {
        edges.push((Some(hi), Some(to)));
    }
    Some(Split { lo, hi, edges })
}

/// What a grouped count splits by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CountGroup {
    System,
    Environment,
}

/// Whether the rollup can answer for this filter (it has no source, commit or tag dimension).
fn answerable(filter: &DeploymentFilter) -> bool {
    filter.sources.is_empty()
        && filter.commit_sha.is_none()
        && filter.rule.is_none()
        && filter.tags.is_empty()
}

impl Store {
    /// How many deployments match a filter: whole days from the rollup, edges from the rows,
    /// in one statement.
    pub async fn count_deployments(&self, filter: &DeploymentFilter) -> Result<u64, StoreError> {
        Ok(self.counted(filter, None).await?.values().sum())
    }

    /// Counts for several systems (or environments) under one filter, in one statement: what
    /// `totalCount` on each of a list of systems or environments needs. Names nobody deployed
    /// are missing from the answer.
    pub async fn count_grouped(
        &self,
        filter: &DeploymentFilter,
        group: CountGroup,
        names: &[String],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut filter = filter.clone();
        match group {
            CountGroup::System => filter.systems = names.to_vec(),
            CountGroup::Environment => filter.environments = names.to_vec(),
        }
        let counts = self.counted(&filter, Some(group)).await?;
        let ids: Vec<i64> = counts.keys().copied().collect();
        let named = match group {
            CountGroup::System => self.systems_by_ids(&ids).await?,
            CountGroup::Environment => self.environments_by_ids(&ids).await?,
        };
        Ok(counts
            .into_iter()
            .filter_map(|(id, count)| named.get(&id).map(|n| (n.name.clone(), count)))
            .collect())
    }

    /// Counts per group id (0 without a group): the rollup's whole days and the edges' rows as
    /// one UNION ALL, summed here.
    async fn counted(
        &self,
        filter: &DeploymentFilter,
        group: Option<CountGroup>,
    ) -> Result<HashMap<i64, u64>, StoreError> {
        use sea_orm::sea_query::SelectStatement;
        let (system_column, environment_column) =
            (deployments::Column::SystemId, deployments::Column::EnvironmentId);
        let rows_part = |select: sea_orm::Select<deployments::Entity>| -> SelectStatement {
            let select = select.select_only();
            let select = match group {
                Some(CountGroup::System) => select.column_as(system_column, "g").group_by(system_column),
                Some(CountGroup::Environment) => select
                    .column_as(environment_column, "g")
                    .group_by(environment_column),
                None => select.column_as(Expr::val(0i64), "g"),
            };
            select.column_as(Expr::cust("COUNT(*)"), "n").into_query()
        };
        let mut parts: Vec<SelectStatement> = Vec::new();
        match answerable(filter).then(|| split(filter.from, filter.to)) {
            Some(Some(split)) => {
                let (by_system, by_environment) = (
                    group == Some(CountGroup::System),
                    group == Some(CountGroup::Environment),
                );
                if let Some(select) = self
                    .rollup_select(filter, by_system, by_environment, &split)
                    .await?
                {
                    use deployment_counts::Column;
                    let select = select.select_only();
                    let select = match group {
                        Some(CountGroup::System) => {
                            select.column_as(Column::SystemId, "g").group_by(Column::SystemId)
                        }
                        Some(CountGroup::Environment) => select
                            .column_as(Column::EnvironmentId, "g")
                            .group_by(Column::EnvironmentId),
                        None => select.column_as(Expr::val(0i64), "g"),
                    };
                    parts.push(
                        select
                            .column_as(Expr::cust("CAST(COALESCE(SUM(\"count\"), 0) AS BIGINT)"), "n")
                            .into_query(),
                    );
                }
                for (from, to) in split.edges {
                    let edge = DeploymentFilter {
                        from,
                        to,
                        ..filter.clone()
                    };
                    if let Some(select) = self.select(&edge).await? {
                        parts.push(rows_part(select));
                    }
                }
            }
            _ => {
                if let Some(select) = self.select(filter).await? {
                    parts.push(rows_part(select));
                }
            }
        }
        self.sum_parts(parts).await
    }

    /// Runs the parts as one `UNION ALL` and adds up each group's counts.
    async fn sum_parts(
        &self,
        parts: Vec<sea_orm::sea_query::SelectStatement>,
    ) -> Result<HashMap<i64, u64>, StoreError> {
        use sea_orm::sea_query::UnionType;
        let mut parts = parts.into_iter();
        let Some(mut statement) = parts.next() else {
            return Ok(HashMap::new());
        };
        for part in parts {
            statement.union(UnionType::All, part);
        }
        let rows: Vec<(i64, i64)> = self
            .connection()
            .query_all(&statement)
            .await?
            .into_iter()
            .map(|row| Ok((row.try_get::<i64>("", "g")?, row.try_get::<i64>("", "n")?)))
            .collect::<Result<_, sea_orm::DbErr>>()?;
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for (id, n) in rows {
            *counts.entry(id).or_default() += u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }

    /// How many deployment rows match a filter, counted (the reference the rollup must equal).
    pub async fn count_rows(&self, filter: &DeploymentFilter) -> Result<u64, StoreError> {
        use sea_orm::PaginatorTrait;
        match self.select(filter).await? {
            Some(select) => Ok(select.count(self.connection()).await?),
            None => Ok(0),
        }
    }

    /// Counts per bucket and group, ascending by time; only buckets with deployments. Day and
    /// week buckets in UTC read the rollup; hours, other offsets and source groups count rows.
    pub async fn count_buckets(
        &self,
        filter: &DeploymentFilter,
        width: Width,
        offset_ms: i64,
        dimensions: &[Dimension],
    ) -> Result<Vec<(Bucket, i64)>, StoreError> {
        let eligible = answerable(filter)
            && offset_ms == 0
            && width != Width::Hour
            && !dimensions.contains(&Dimension::Source);
        let split = match eligible.then(|| split(filter.from, filter.to)) {
            Some(Some(split)) => split,
            _ => return self.count_bucket_rows(filter, width, offset_ms, dimensions).await,
        };
        let wants = |d: Dimension| dimensions.contains(&d);
        let (by_system, by_environment) = (wants(Dimension::System), wants(Dimension::Environment));
        let mut totals: BTreeMap<Bucket, i64> = BTreeMap::new();
        if let Some(select) = self
            .rollup_select(filter, by_system, by_environment, &split)
            .await?
        {
            let (width_ms, shift) = (width.millis(), width.shift(0));
            // Integers computed here, never user text, so formatting them into SQL is safe.
            let bucket = Expr::cust(format!(
                "((\"day\" + {shift}) / {width_ms}) * {width_ms} - {shift}"
            ));
            let mut query = select.select_only().column_as(bucket, "bucket");
            query = if by_system {
                query.column_as(deployment_counts::Column::SystemId, "system_id")
            } else {
                query.column_as(Expr::val(-1i64), "system_id")
            };
            query = if by_environment {
                query.column_as(deployment_counts::Column::EnvironmentId, "environment_id")
            } else {
                query.column_as(Expr::val(-1i64), "environment_id")
            };
            query = if wants(Dimension::Status) {
                query.column_as(deployment_counts::Column::Status, "status")
            } else {
                query.column_as(Expr::val(""), "status")
            };
            query = query
                .column_as(Expr::cust("CAST(SUM(\"count\") AS BIGINT)"), "count")
                .group_by(Expr::cust("1"));
            if by_system {
                query = query.group_by(deployment_counts::Column::SystemId);
            }
            if by_environment {
                query = query.group_by(deployment_counts::Column::EnvironmentId);
            }
            if wants(Dimension::Status) {
                query = query.group_by(deployment_counts::Column::Status);
            }
            // Streamed, like `count_bucket_rows`: a row is freed once added up.
            let mut rows = query
                .order_by(Expr::cust("1"), sea_orm::Order::Asc)
                .into_tuple::<(i64, i64, i64, String, i64)>()
                .stream(self.connection())
                .await?;
            while let Some((start, system, environment, status, count)) = rows.try_next().await? {
                let bucket = Bucket::from_row(start, system, environment, status, String::new());
                *totals.entry(bucket).or_default() += count;
            }
        }
        for (from, to) in split.edges {
            let edge = DeploymentFilter {
                from,
                to,
                ..filter.clone()
            };
            for (bucket, count) in self.count_bucket_rows(&edge, width, 0, dimensions).await? {
                *totals.entry(bucket).or_default() += count;
            }
        }
        Ok(totals.into_iter().filter(|(_, count)| *count > 0).collect())
    }

    /// The rollup rows for a filter's whole days at the right grain; None when a named system
    /// or environment does not exist.
    async fn rollup_select(
        &self,
        filter: &DeploymentFilter,
        by_system: bool,
        by_environment: bool,
        split: &Split,
    ) -> Result<Option<sea_orm::Select<deployment_counts::Entity>>, StoreError> {
        use deployment_counts::Column;
        let mut select = deployment_counts::Entity::find();
        let systems = match self.resolve(NameKind::System, &filter.systems).await? {
            Some(ids) => Some(ids),
            None if by_system => Some(self.all_system_ids().await?),
            None => None,
        };
        let environments = match self.resolve(NameKind::Environment, &filter.environments).await? {
            Some(ids) => Some(ids),
            None if by_environment => Some(self.all_environment_ids().await?),
            None => None,
        };
        for (ids, column) in [(systems, Column::SystemId), (environments, Column::EnvironmentId)] {
            select = match ids {
                Some(ids) if ids.is_empty() => return Ok(None),
                Some(ids) => select.filter(column.is_in(ids)),
                None => select.filter(column.eq(0)),
            };
        }
        if !filter.statuses.is_empty() {
            select =
                select.filter(Column::Status.is_in(filter.statuses.iter().map(|s| s.as_str().to_string())));
        }
        if let Some(lo) = split.lo {
            select = select.filter(Column::Day.gte(lo));
        }
        if let Some(hi) = split.hi {
            select = select.filter(Column::Day.lt(hi));
        }
        Ok(Some(select))
    }

    async fn all_system_ids(&self) -> Result<Vec<i64>, StoreError> {
        Ok(systems::Entity::find()
            .select_only()
            .column(systems::Column::Id)
            .into_tuple()
            .all(self.connection())
            .await?)
    }

    async fn all_environment_ids(&self) -> Result<Vec<i64>, StoreError> {
        Ok(entity::environments::Entity::find()
            .select_only()
            .column(entity::environments::Column::Id)
            .into_tuple()
            .all(self.connection())
            .await?)
    }

    /// Recomputes the rollup from the deployments, in one transaction. On PostgreSQL the table
    /// is locked first, so a writer's deltas wait and then apply on top of a count that does
    /// not include them yet.
    pub async fn rebuild_counts(&self) -> Result<(), StoreError> {
        let txn = self.connection().begin().await?;
        if self.backend() == sea_orm::DatabaseBackend::Postgres {
            txn.execute_unprepared("LOCK TABLE deployment_counts IN EXCLUSIVE MODE")
                .await?;
        }
        deployment_counts::Entity::delete_many().exec(&txn).await?;
        for (by_system, by_environment) in [(true, true), (true, false), (false, true), (false, false)] {
            txn.execute(&rebuild_grain(by_system, by_environment)?).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Every rollup row, for tests that compare the kept counts with a rebuild.
    pub async fn count_rollup(&self) -> Result<HashMap<(i64, i64, i64, String), i64>, StoreError> {
        let rows = deployment_counts::Entity::find().all(self.connection()).await?;
        Ok(rows
            .into_iter()
            .filter(|row| row.count != 0)
            .map(|row| {
                (
                    (
                        row.system_id,
                        row.environment_id,
                        row.day,
                        row.status.as_str().to_string(),
                    ),
                    row.count,
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = DAY_MS;

    #[test]
    fn windows_split_into_whole_days_and_edges() {
        // Aligned on both ends: `to` is inclusive, so [d1, d3] needs d3 itself as an edge.
        let s = split(Some(DAY), Some(3 * DAY)).unwrap();
        assert_eq!((s.lo, s.hi), (Some(DAY), Some(3 * DAY)));
        assert_eq!(s.edges, vec![(Some(3 * DAY), Some(3 * DAY))]);
        // The last millisecond of a day closes it: no edges at all.
        let s = split(Some(DAY), Some(3 * DAY - 1)).unwrap();
        assert!(s.edges.is_empty());
        // Mid-day ends become edges.
        let s = split(Some(DAY + 5), Some(3 * DAY + 7)).unwrap();
        assert_eq!((s.lo, s.hi), (Some(2 * DAY), Some(3 * DAY)));
        assert_eq!(
            s.edges,
            vec![
                (Some(DAY + 5), Some(2 * DAY - 1)),
                (Some(3 * DAY), Some(3 * DAY + 7))
            ]
        );
        // Within one day: no whole day, count rows.
        assert!(split(Some(DAY + 5), Some(DAY + 9)).is_none());
        // Open ends.
        let s = split(None, Some(2 * DAY + 1)).unwrap();
        assert_eq!((s.lo, s.hi), (None, Some(2 * DAY)));
        assert_eq!(s.edges, vec![(Some(2 * DAY), Some(2 * DAY + 1))]);
        let s = split(None, None).unwrap();
        assert!(s.edges.is_empty() && s.lo.is_none() && s.hi.is_none());
    }
}
