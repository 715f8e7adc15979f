//! Bulk loading finished history (`shiplog seed`): deployments written in large multi-row
//! statements with one event each, then the board and the rollup rebuilt and the tables
//! analysed. Not the ingest path: nothing here merges, journals or publishes.

use entity::{deployment_events, deployments};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QuerySelect, TransactionTrait};

use super::{NameKind, Store, StoreError, ensure_named};
use crate::domain::Observation;

/// Rows per INSERT statement (19 columns each, well under both databases' parameter limits).
const ROWS_PER_STATEMENT: usize = 500;

/// One finished (or running) deployment to load as it is: what a tool would have observed of
/// it last, with the system and environment it belongs to.
#[derive(Clone, Debug)]
pub struct BulkDeployment {
    pub source: String,
    pub system_id: i64,
    pub environment_id: i64,
    pub observation: Observation,
}

impl Store {
    /// The ids of these systems (or environments), created when new.
    pub async fn ensure_names(
        &self,
        kind: NameKind,
        names: &[String],
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            ids.push(ensure_named(self.connection(), kind, name, now).await?);
        }
        Ok(ids)
    }

    /// Writes `rows` and one event each, in one transaction.
    pub async fn insert_bulk(&self, rows: &[BulkDeployment]) -> Result<(), StoreError> {
        let txn = self.connection().begin().await?;
        let before: i64 = deployments::Entity::find()
            .select_only()
            .column_as(deployments::Column::Id.max(), "max")
            .into_tuple::<Option<i64>>()
            .one(&txn)
            .await?
            .flatten()
            .unwrap_or(0);
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            txn.execute(&insert_deployments(chunk)).await?;
        }
        // One event per deployment, from the rows just written.
        let events = Query::insert()
            .into_table(deployment_events::Entity)
            .columns([
                deployment_events::Column::DeploymentId,
                deployment_events::Column::Status,
                deployment_events::Column::RawStatus,
                deployment_events::Column::OccurredAt,
                deployment_events::Column::RecordedAt,
            ])
            .select_from(
                Query::select()
                    .columns([
                        deployments::Column::Id,
                        deployments::Column::Status,
                        deployments::Column::RawStatus,
                        deployments::Column::DeployedAt,
                        deployments::Column::UpdatedAt,
                    ])
                    .from(deployments::Entity)
                    .and_where(deployments::Column::Id.gt(before))
                    .to_owned(),
            )
            .map_err(|e| StoreError::Invalid(e.to_string()))?
            .to_owned();
        txn.execute(&events).await?;
        txn.commit().await?;
        Ok(())
    }

    /// After a bulk load: the board and the rollup rebuilt, statistics refreshed.
    pub async fn finish_bulk(&self) -> Result<(), StoreError> {
        self.rebuild_board().await?;
        self.rebuild_counts().await?;
        if self.backend() == sea_orm::DatabaseBackend::Postgres {
            // VACUUM too: it sets the visibility map, without which the covering indexes'
            // index-only scans still visit every heap page (autovacuum does it in time; it may
            // be off, or late).
            self.connection()
                .execute_unprepared(
                    "VACUUM (ANALYZE) deployments, deployment_events, deployment_counts, board_cells",
                )
                .await?;
        } else {
            self.connection().execute_unprepared("ANALYZE").await?;
        }
        Ok(())
    }
}

fn insert_deployments(rows: &[BulkDeployment]) -> sea_orm::sea_query::InsertStatement {
    use deployments::Column;
    let mut insert = Query::insert()
        .into_table(deployments::Entity)
        .columns([
            Column::Source,
            Column::ExternalId,
            Column::SystemId,
            Column::EnvironmentId,
            Column::Status,
            Column::RawStatus,
            Column::RawSystem,
            Column::RawEnvironment,
            Column::StatusAt,
            Column::StartedAt,
            Column::FinishedAt,
            Column::DeployedAt,
            Column::CommitSha,
            Column::GitRef,
            Column::Version,
            Column::Url,
            Column::Actor,
            Column::FirstSeenAt,
            Column::UpdatedAt,
        ])
        .to_owned();
    for row in rows {
        let seen = &row.observation;
        let deployed = seen.finished_at.or(seen.started_at).unwrap_or(seen.occurred_at);
        insert.values_panic([
            row.source.clone().into(),
            seen.external_id.clone().into(),
            row.system_id.into(),
            row.environment_id.into(),
            seen.status.into(),
            seen.raw_status.clone().into(),
            seen.system.clone().into(),
            seen.environment.clone().into(),
            deployed.into(),
            seen.started_at.into(),
            seen.finished_at.into(),
            deployed.into(),
            seen.commit_sha.clone().into(),
            seen.git_ref.clone().into(),
            seen.version.clone().into(),
            seen.url.clone().into(),
            seen.actor.clone().into(),
            seen.started_at.unwrap_or(deployed).into(),
            deployed.into(),
        ]);
    }
    insert
}
