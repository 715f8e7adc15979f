//! What the commits worker needs of the store: a deployment's range recorded (and the range
//! queued for the Git host), the ranges due for a read, their answers saved, and a page of
//! deployments' ranges read in two statements.

use std::collections::HashMap;

use entity::{commit_ranges, deployment_changes};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Store, StoreError};

/// A range still to read.
pub const PENDING: &str = "pending";
/// Read: the commits are there.
pub const FOUND: &str = "found";
/// The host has no such repository or commit (a force-pushed base): not read again.
pub const MISSING: &str = "missing";
/// The read failed (network, rate limits past patience, 5xx): read again later.
pub const FAILED: &str = "failed";

/// A range as a (repository, base, head) key.
pub type RangeKey = (String, String, String);

impl Store {
    /// Says which range a deployment shipped, and queues the range for a read when it is new.
    pub async fn record_change(
        &self,
        deployment_id: i64,
        (repository, base, head): (&str, &str, &str),
        now: i64,
    ) -> Result<(), StoreError> {
        let change = deployment_changes::ActiveModel {
            deployment_id: Set(deployment_id),
            repository: Set(repository.to_string()),
            base: Set(base.to_string()),
            head: Set(head.to_string()),
            recorded_at: Set(now),
        };
        deployment_changes::Entity::insert(change)
            .on_conflict(
                OnConflict::column(deployment_changes::Column::DeploymentId)
                    .update_columns([
                        deployment_changes::Column::Repository,
                        deployment_changes::Column::Base,
                        deployment_changes::Column::Head,
                        deployment_changes::Column::RecordedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.connection())
            .await?;
        self.queue_range((repository, base, head), now).await
    }

    /// Queues a range for a read unless it is known.
    pub async fn queue_range(
        &self,
        (repository, base, head): (&str, &str, &str),
        now: i64,
    ) -> Result<(), StoreError> {
        let range = commit_ranges::ActiveModel {
            repository: Set(repository.to_string()),
            base: Set(base.to_string()),
            head: Set(head.to_string()),
            state: Set(PENDING.to_string()),
            total_commits: Set(None),
            behind_by: Set(None),
            commits: Set(None),
            error: Set(None),
            attempts: Set(0),
            next_attempt_at: Set(Some(now)),
            fetched_at: Set(None),
        };
        commit_ranges::Entity::insert(range)
            .on_conflict_do_nothing_on([
                commit_ranges::Column::Repository,
                commit_ranges::Column::Base,
                commit_ranges::Column::Head,
            ])
            .exec_without_returning(self.connection())
            .await?;
        Ok(())
    }

    /// Ranges due for a read (pending, or failed and due again), oldest due first.
    pub async fn due_ranges(&self, now: i64, limit: u64) -> Result<Vec<commit_ranges::Model>, StoreError> {
        Ok(commit_ranges::Entity::find()
            .filter(commit_ranges::Column::State.is_in([PENDING, FAILED]))
            .filter(commit_ranges::Column::NextAttemptAt.lte(now))
            .order_by_asc(commit_ranges::Column::NextAttemptAt)
            .limit(limit)
            .all(self.connection())
            .await?)
    }

    /// Saves what a read of a range found (or why it failed).
    pub async fn save_range(&self, range: commit_ranges::Model) -> Result<(), StoreError> {
        use sea_orm::{ActiveModelTrait, IntoActiveModel};
        range
            .into_active_model()
            .reset_all()
            .update(self.connection())
            .await?;
        Ok(())
    }

    /// The ranges known among these keys (one statement per 300 keys).
    pub async fn ranges(
        &self,
        mut keys: Vec<RangeKey>,
    ) -> Result<HashMap<RangeKey, commit_ranges::Model>, StoreError> {
        keys.sort();
        keys.dedup();
        let mut ranges: HashMap<RangeKey, commit_ranges::Model> = HashMap::new();
        for chunk in keys.chunks(300) {
            let found = commit_ranges::Entity::find()
                .filter(
                    Expr::tuple([
                        Expr::col(commit_ranges::Column::Repository),
                        Expr::col(commit_ranges::Column::Base),
                        Expr::col(commit_ranges::Column::Head),
                    ])
                    .in_tuples(chunk.iter().cloned()),
                )
                .all(self.connection())
                .await?;
            for range in found {
                ranges.insert(
                    (range.repository.clone(), range.base.clone(), range.head.clone()),
                    range,
                );
            }
        }
        Ok(ranges)
    }

    /// The ranges of these deployments (those that have one), in two statements.
    pub async fn changes_of(
        &self,
        deployment_ids: &[i64],
    ) -> Result<HashMap<i64, (deployment_changes::Model, Option<commit_ranges::Model>)>, StoreError> {
        if deployment_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut changes = Vec::new();
        for chunk in deployment_ids.chunks(1_000) {
            changes.extend(
                deployment_changes::Entity::find()
                    .filter(deployment_changes::Column::DeploymentId.is_in(chunk.iter().copied()))
                    .all(self.connection())
                    .await?,
            );
        }
        let keys: Vec<RangeKey> = changes
            .iter()
            .map(|c| (c.repository.clone(), c.base.clone(), c.head.clone()))
            .collect();
        let ranges = self.ranges(keys).await?;
        Ok(changes
            .into_iter()
            .map(|change| {
                let key = (
                    change.repository.clone(),
                    change.base.clone(),
                    change.head.clone(),
                );
                let range = ranges.get(&key).cloned();
                (change.deployment_id, (change, range))
            })
            .collect())
    }
}
