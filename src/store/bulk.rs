//! Bulk loading finished history (`shiplog seed`): deployments written in large multi-row
//! statements with one event each, then the board and the rollup rebuilt and the tables
//! analysed. Not the ingest path: nothing here merges, journals or publishes.

use entity::{DeploymentStatus, deployment_events, deployments};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QuerySelect, TransactionTrait};

use super::{NameKind, Store, StoreError, ensure_named};

/// Rows per INSERT statement (19 columns each, well under both databases' parameter limits).
const ROWS_PER_STATEMENT: usize = 500;

/// One finished (or running) deployment to load as it is.
#[derive(Clone, Debug)]
pub struct BulkDeployment {
    pub source: String,
    pub external_id: String,
    pub system_id: i64,
    pub environment_id: i64,
    pub status: DeploymentStatus,
    pub raw_status: String,
    pub raw_system: String,
    pub raw_environment: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub commit_sha: Option<String>,
    pub git_ref: Option<String>,
    pub version: Option<String>,
    pub url: Option<String>,
    pub actor: Option<String>,
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
        let deployed = row.finished_at.unwrap_or(row.started_at);
        insert.values_panic([
            row.source.clone().into(),
            row.external_id.clone().into(),
            row.system_id.into(),
            row.environment_id.into(),
            row.status.into(),
            row.raw_status.clone().into(),
            row.raw_system.clone().into(),
            row.raw_environment.clone().into(),
            deployed.into(),
            Some(row.started_at).into(),
            row.finished_at.into(),
            deployed.into(),
            row.commit_sha.clone().into(),
            row.git_ref.clone().into(),
            row.version.clone().into(),
            row.url.clone().into(),
            row.actor.clone().into(),
            row.started_at.into(),
            deployed.into(),
        ]);
    }
    insert
}
