//! What `shiplog replay` needs of the store: the distinct raw names deployments were
//! received with, moving the deployments of one raw pair to their re-mapped names, and the
//! clean-up afterwards (board and rollup rebuilt, unused names removed). The mapping itself is
//! the ingest pipeline's (`ingest::replay`).

use entity::{board_cells, deployments};
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
        let mut removed = [0; 2];
        for (count, kind) in removed.iter_mut().zip(NameKind::ALL) {
            *count = self.remove_unused(kind).await?;
        }
        if let Ok(mut cache) = self.names.write() {
            *cache = super::KnownNames::default();
        }
        Ok((removed[0], removed[1]))
    }

    /// Removes the systems (or environments) no deployment points to; returns how many.
    async fn remove_unused(&self, kind: NameKind) -> Result<u64, StoreError> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, ExprTrait};
        let column = match kind {
            NameKind::System => deployments::Column::SystemId,
            NameKind::Environment => deployments::Column::EnvironmentId,
        };
        let used = Query::select()
            .distinct()
            .column(column)
            .from(deployments::Entity)
            .to_owned();
        let delete = Query::delete()
            .from_table(kind.table())
            .and_where(Expr::col(Alias::new("id")).not_in_subquery(used))
            .to_owned();
        Ok(self.connection().execute(&delete).await?.rows_affected())
    }
}
