//! `shiplog replay`: re-normalise after the mapping rules changed. Every deployment keeps the
//! tool's own system and environment words (from its journaled delivery), so re-mapping is a
//! pass over the distinct raw names: in place, idempotent (a second run moves nothing), then
//! the board is rebuilt and systems and environments nothing points to any more are removed.

use entity::{board_cells, deployments, environments, systems};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};

use super::{Store, StoreError, ensure_environment, ensure_system};
use crate::domain::{MappingRules, now_millis};

/// What a replay changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub raw_names: u64,
    pub deployments_moved: u64,
    pub systems_removed: u64,
    pub environments_removed: u64,
}

impl Store {
    /// Re-maps every deployment's raw names with `rules`; `progress(done, total)` is called
    /// after each distinct pair of raw names.
    pub async fn replay(
        &self,
        rules: &MappingRules,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ReplaySummary, StoreError> {
        let pairs: Vec<(String, String)> = deployments::Entity::find()
            .select_only()
            .columns([
                deployments::Column::RawSystem,
                deployments::Column::RawEnvironment,
            ])
            .distinct()
            .into_tuple()
            .all(self.connection())
            .await?;
        let total = pairs.len() as u64;
        let mut summary = ReplaySummary {
            raw_names: total,
            ..ReplaySummary::default()
        };
        let now = now_millis();
        for (done, (raw_system, raw_environment)) in pairs.iter().enumerate() {
            let txn = self.connection().begin().await?;
            let system_id = ensure_system(&txn, &rules.system(raw_system), now).await?;
            let environment_id = ensure_environment(&txn, &rules.environment(raw_environment), now).await?;
            let moved = deployments::Entity::update_many()
                .col_expr(deployments::Column::SystemId, Expr::value(system_id))
                .col_expr(deployments::Column::EnvironmentId, Expr::value(environment_id))
                .filter(deployments::Column::RawSystem.eq(raw_system.as_str()))
                .filter(deployments::Column::RawEnvironment.eq(raw_environment.as_str()))
                .filter(
                    sea_orm::Condition::any()
                        .add(deployments::Column::SystemId.ne(system_id))
                        .add(deployments::Column::EnvironmentId.ne(environment_id)),
                )
                .exec(&txn)
                .await?;
            txn.commit().await?;
            summary.deployments_moved += moved.rows_affected;
            progress(done as u64 + 1, total);
        }
        if summary.deployments_moved > 0 {
            board_cells::Entity::delete_many().exec(self.connection()).await?;
            self.rebuild_board().await?;
            self.rebuild_counts().await?;
            let used_systems = Query::select()
                .distinct()
                .column(deployments::Column::SystemId)
                .from(deployments::Entity)
                .to_owned();
            summary.systems_removed = systems::Entity::delete_many()
                .filter(systems::Column::Id.not_in_subquery(used_systems))
                .exec(self.connection())
                .await?
                .rows_affected;
            let used_environments = Query::select()
                .distinct()
                .column(deployments::Column::EnvironmentId)
                .from(deployments::Entity)
                .to_owned();
            summary.environments_removed = environments::Entity::delete_many()
                .filter(environments::Column::Id.not_in_subquery(used_environments))
                .exec(self.connection())
                .await?
                .rows_affected;
            if let Ok(mut cache) = self.names.write() {
                *cache = super::KnownNames::default();
            }
        }
        Ok(summary)
    }
}
