//! What `shiplog replay` needs of the store: the distinct raw names deployments were
//! received with, moving the deployments of one raw pair to their re-mapped names, and the
//! clean-up afterwards (board and rollup rebuilt, unused names removed). The mapping itself is
//! the ingest pipeline's (`ingest::replay`).

use entity::{board_cells, deployments, environments, systems};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};

use super::{NameKind, Store, StoreError, ensure_named};

impl Store {
    /// Every distinct (raw system, raw environment) pair deployments carry.
    pub async fn raw_name_pairs(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(deployments::Entity::find()
            .select_only()
            .columns([
                deployments::Column::RawSystem,
                deployments::Column::RawEnvironment,
            ])
            .distinct()
            .into_tuple()
            .all(self.connection())
            .await?)
    }

    /// Moves the deployments received as (`raw_system`, `raw_environment`) to `system` and
    /// `environment` (created when new), in one transaction; returns how many moved.
    pub async fn move_raw_names(
        &self,
        (raw_system, raw_environment): (&str, &str),
        (system, environment): (&str, &str),
        now: i64,
    ) -> Result<u64, StoreError> {
        let txn = self.connection().begin().await?;
        let system_id = ensure_named(&txn, NameKind::System, system, now).await?;
        let environment_id = ensure_named(&txn, NameKind::Environment, environment, now).await?;
        let moved = deployments::Entity::update_many()
            .col_expr(deployments::Column::SystemId, Expr::value(system_id))
            .col_expr(deployments::Column::EnvironmentId, Expr::value(environment_id))
            .filter(deployments::Column::RawSystem.eq(raw_system))
            .filter(deployments::Column::RawEnvironment.eq(raw_environment))
            .filter(
                sea_orm::Condition::any()
                    .add(deployments::Column::SystemId.ne(system_id))
                    .add(deployments::Column::EnvironmentId.ne(environment_id)),
            )
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(moved.rows_affected)
    }

    /// After deployments moved: the board and the rollup rebuilt, systems and environments
    /// nothing points to any more removed. Returns how many (systems, environments) went.
    pub async fn after_moves(&self) -> Result<(u64, u64), StoreError> {
        board_cells::Entity::delete_many().exec(self.connection()).await?;
        self.rebuild_board().await?;
        self.rebuild_counts().await?;
        let used_systems = Query::select()
            .distinct()
            .column(deployments::Column::SystemId)
            .from(deployments::Entity)
            .to_owned();
        let systems_removed = systems::Entity::delete_many()
            .filter(systems::Column::Id.not_in_subquery(used_systems))
            .exec(self.connection())
            .await?
            .rows_affected;
        let used_environments = Query::select()
            .distinct()
            .column(deployments::Column::EnvironmentId)
            .from(deployments::Entity)
            .to_owned();
        let environments_removed = environments::Entity::delete_many()
            .filter(environments::Column::Id.not_in_subquery(used_environments))
            .exec(self.connection())
            .await?
            .rows_affected;
        if let Ok(mut cache) = self.names.write() {
            *cache = super::KnownNames::default();
        }
        Ok((systems_removed, environments_removed))
    }
}
