//! What `shiplog replay` needs of the store: the distinct raw names deployments were
//! received with, moving the deployments of one raw pair to their re-mapped names, and the
//! clean-up afterwards (board and rollup rebuilt, unused names removed). The mapping itself is
//! the ingest pipeline's (`ingest::replay`).

use entity::{board_cells, deployments};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};

use super::{NameKind, Store, StoreError, ensure_named};

/// The system words the mapping rules read for a deployment: the name people gave in a
/// correction, else the tool's own.
fn raw_system() -> sea_orm::sea_query::SimpleExpr {
    Expr::cust("COALESCE(corrected_system, raw_system)")
}

/// The environment words, as [`raw_system`].
fn raw_environment() -> sea_orm::sea_query::SimpleExpr {
    Expr::cust("COALESCE(corrected_environment, raw_environment)")
}

impl Store {
    /// Every distinct (raw system, raw environment) pair deployments carry (people's corrected
    /// names in place of the tool's, see [`raw_system`]).
    pub async fn raw_name_pairs(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(deployments::Entity::find()
            .select_only()
            .column_as(raw_system(), "raw_system")
            .column_as(raw_environment(), "raw_environment")
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
            .filter(ExprTrait::eq(self::raw_system(), raw_system))
            .filter(ExprTrait::eq(self::raw_environment(), raw_environment))
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

    /// The deployments a delivery's events touched.
    pub async fn deployments_of_delivery(
        &self,
        delivery_id: i64,
    ) -> Result<Vec<deployments::Model>, StoreError> {
        use entity::deployment_events;
        let touched = Query::select()
            .distinct()
            .column(deployment_events::Column::DeploymentId)
            .from(deployment_events::Entity)
            .and_where(deployment_events::Column::DeliveryId.eq(delivery_id))
            .to_owned();
        Ok(deployments::Entity::find()
            .filter(deployments::Column::Id.in_subquery(touched))
            .all(self.connection())
            .await?)
    }

    /// Every deployment's (source, external id), and whether a journaled delivery reported it
    /// (seeded and imported ones have none).
    pub async fn deployment_keys(&self) -> Result<Vec<(String, String, bool)>, StoreError> {
        use entity::deployment_events;
        // The write API's changes (source `shiplog`) report no deployment of their own.
        let amendments = Query::select()
            .column(entity::deliveries::Column::Id)
            .from(entity::deliveries::Entity)
            .and_where(entity::deliveries::Column::Source.eq(super::amend::SOURCE))
            .to_owned();
        let reported: std::collections::HashSet<i64> = deployment_events::Entity::find()
            .select_only()
            .column(deployment_events::Column::DeploymentId)
            .filter(deployment_events::Column::DeliveryId.is_not_null())
            .filter(deployment_events::Column::DeliveryId.not_in_subquery(amendments))
            .distinct()
            .into_tuple()
            .all(self.connection())
            .await?
            .into_iter()
            .collect();
        let rows: Vec<(i64, String, String)> = deployments::Entity::find()
            .select_only()
            .columns([
                deployments::Column::Id,
                deployments::Column::Source,
                deployments::Column::ExternalId,
            ])
            .into_tuple()
            .all(self.connection())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, source, external_id)| (source, external_id, reported.contains(&id)))
            .collect())
    }

    /// Journal rows after `after` (by id), `limit` at a time, oldest first.
    pub async fn journal_page(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<entity::deliveries::Model>, StoreError> {
        use sea_orm::QueryOrder;
        Ok(entity::deliveries::Entity::find()
            .filter(entity::deliveries::Column::Id.gt(after))
            .order_by_asc(entity::deliveries::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?)
    }

    /// Per (raw system, raw environment): the names deployments have now, how many, and one's
    /// external id.
    pub async fn raw_names_now(&self) -> Result<Vec<RawNamesNow>, StoreError> {
        let rows: Vec<(String, String, i64, i64, i64, String)> = deployments::Entity::find()
            .select_only()
            .column_as(raw_system(), "raw_system")
            .column_as(raw_environment(), "raw_environment")
            .columns([deployments::Column::SystemId, deployments::Column::EnvironmentId])
            .column_as(deployments::Column::Id.count(), "count")
            .column_as(deployments::Column::ExternalId.max(), "example")
            .group_by(raw_system())
            .group_by(raw_environment())
            .group_by(deployments::Column::SystemId)
            .group_by(deployments::Column::EnvironmentId)
            .into_tuple()
            .all(self.connection())
            .await?;
        let systems: std::collections::HashMap<i64, String> = self
            .systems()
            .await?
            .into_iter()
            .map(|n| (n.id, n.name))
            .collect();
        let environments: std::collections::HashMap<i64, String> = self
            .environments()
            .await?
            .into_iter()
            .map(|n| (n.id, n.name))
            .collect();
        Ok(rows
            .into_iter()
            .map(
                |(raw_system, raw_environment, system, environment, count, example)| RawNamesNow {
                    raw_system,
                    raw_environment,
                    system: systems.get(&system).cloned().unwrap_or_default(),
                    environment: environments.get(&environment).cloned().unwrap_or_default(),
                    count: count as u64,
                    example,
                },
            )
            .collect())
    }

    /// Puts ignored or failed deliveries back to pending, due now: the running server's workers
    /// read them again with the current rules. Returns how many.
    pub async fn requeue(&self, ids: &[i64], now: i64) -> Result<u64, StoreError> {
        use entity::{DeliveryState, deliveries};
        let mut requeued = 0;
        for chunk in ids.chunks(500) {
            requeued += deliveries::Entity::update_many()
                .col_expr(deliveries::Column::State, Expr::value(DeliveryState::Pending))
                .col_expr(deliveries::Column::Attempts, Expr::value(0))
                .col_expr(deliveries::Column::NextAttemptAt, Expr::value(Some(now)))
                .filter(deliveries::Column::Id.is_in(chunk.iter().copied()))
                .filter(deliveries::Column::State.is_in([DeliveryState::Ignored, DeliveryState::Failed]))
                .exec(self.connection())
                .await?
                .rows_affected;
        }
        Ok(requeued)
    }
}

/// Deployments received with one pair of raw names, and the names they have now.
#[derive(Clone, Debug)]
pub struct RawNamesNow {
    pub raw_system: String,
    pub raw_environment: String,
    pub system: String,
    pub environment: String,
    pub count: u64,
    pub example: String,
}
