//! The board's cells: updated inside the ingest transaction for every applied observation
//! (so reading the board never scans deployments), read in four statements whatever its size.

use std::collections::HashMap;

use entity::{board_cells, deployments};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, Iterable, QueryFilter, QuerySelect};

use super::{Store, StoreError};
use crate::domain::DeploymentStatus;

/// A cell with its deployments loaded.
#[derive(Clone, Debug)]
pub struct Cell {
    pub system_id: i64,
    pub environment_id: i64,
    pub current: Option<deployments::Model>,
    pub in_progress: Option<deployments::Model>,
    /// Only when it came after the current deployment.
    pub last_failure: Option<deployments::Model>,
    /// The newest deployment whatever its status.
    pub latest: Option<deployments::Model>,
}

/// The cell after a deployment changed. Pure, so the rules are unit-tested.
pub fn next_cell(
    cell: Option<board_cells::Model>,
    deployment: &deployments::Model,
    now: i64,
) -> board_cells::Model {
    let mut cell = cell.unwrap_or(board_cells::Model {
        system_id: deployment.system_id,
        environment_id: deployment.environment_id,
        current_id: None,
        current_at: None,
        progress_id: None,
        progress_at: None,
        failure_id: None,
        failure_at: None,
        updated_at: now,
        latest_id: None,
        latest_at: None,
    });
    let at = deployment.deployed_at;
    let id = Some(deployment.id);
    let newer = |slot_id: Option<i64>, slot_at: Option<i64>| slot_id == id || slot_at.is_none_or(|t| at >= t);
    let status = deployment.status;
    match status {
        DeploymentStatus::Succeeded if newer(cell.current_id, cell.current_at) => {
            (cell.current_id, cell.current_at) = (id, Some(at));
        }
        DeploymentStatus::Failed if newer(cell.failure_id, cell.failure_at) => {
            (cell.failure_id, cell.failure_at) = (id, Some(at));
        }
        DeploymentStatus::Queued | DeploymentStatus::Running if newer(cell.progress_id, cell.progress_at) => {
            (cell.progress_id, cell.progress_at) = (id, Some(at));
        }
        _ => {}
    }
    if newer(cell.latest_id, cell.latest_at) {
        (cell.latest_id, cell.latest_at) = (id, Some(at));
    }
    // A deployment leaves the slots its status no longer fits.
    if status.is_terminal() && cell.progress_id == id {
        (cell.progress_id, cell.progress_at) = (None, None);
    }
    if status != DeploymentStatus::Failed && cell.failure_id == id {
        (cell.failure_id, cell.failure_at) = (None, None);
    }
    cell.updated_at = now;
    cell
}

/// Applies a changed deployment to its cell (inside the caller's transaction).
pub(crate) async fn touch<C: ConnectionTrait>(
    conn: &C,
    deployment: &deployments::Model,
    now: i64,
) -> Result<(), StoreError> {
    let current = board_cells::Entity::find_by_id((deployment.system_id, deployment.environment_id))
        .lock_exclusive()
        .one(conn)
        .await?;
    let next = next_cell(current.clone(), deployment, now);
    if current.as_ref() == Some(&next) {
        return Ok(());
    }
    save(conn, vec![next]).await
}

/// Writes cells (insert, or update every column of the existing row), several per statement.
pub(crate) async fn save<C: ConnectionTrait>(
    conn: &C,
    cells: Vec<board_cells::Model>,
) -> Result<(), StoreError> {
    use board_cells::Column;
    let rows: Vec<board_cells::ActiveModel> = cells
        .into_iter()
        .map(|cell| board_cells::ActiveModel {
            system_id: Set(cell.system_id),
            environment_id: Set(cell.environment_id),
            current_id: Set(cell.current_id),
            current_at: Set(cell.current_at),
            progress_id: Set(cell.progress_id),
            progress_at: Set(cell.progress_at),
            failure_id: Set(cell.failure_id),
            failure_at: Set(cell.failure_at),
            updated_at: Set(cell.updated_at),
            latest_id: Set(cell.latest_id),
            latest_at: Set(cell.latest_at),
        })
        .collect();
    for chunk in super::chunks(rows, CELLS_PER_STATEMENT) {
        board_cells::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::columns([Column::SystemId, Column::EnvironmentId])
                    .update_columns(
                        Column::iter().filter(|c| !matches!(c, Column::SystemId | Column::EnvironmentId)),
                    )
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// Cells per multi-row upsert (11 parameters each).
const CELLS_PER_STATEMENT: usize = 64;

impl Store {
    /// The board's cells for the given system and environment ids (empty = all).
    pub async fn board_cells(
        &self,
        system_ids: &[i64],
        environment_ids: &[i64],
    ) -> Result<Vec<Cell>, StoreError> {
        let mut query = board_cells::Entity::find();
        if !system_ids.is_empty() {
            query = query.filter(board_cells::Column::SystemId.is_in(system_ids.iter().copied()));
        }
        if !environment_ids.is_empty() {
            query = query.filter(board_cells::Column::EnvironmentId.is_in(environment_ids.iter().copied()));
        }
        let cells = query.all(self.connection()).await?;
        let ids: Vec<i64> = cells
            .iter()
            .flat_map(|c| [c.current_id, c.progress_id, c.failure_id, c.latest_id])
            .flatten()
            .collect();
        let deployments: HashMap<i64, deployments::Model> = if ids.is_empty() {
            HashMap::new()
        } else {
            deployments::Entity::find()
                .filter(deployments::Column::Id.is_in(ids))
                .all(self.connection())
                .await?
                .into_iter()
                .map(|d| (d.id, d))
                .collect()
        };
        let pick = |id: Option<i64>| id.and_then(|id| deployments.get(&id).cloned());
        Ok(cells
            .into_iter()
            .map(|cell| {
                let current = pick(cell.current_id);
                let last_failure = pick(cell.failure_id)
                    .filter(|f| current.as_ref().is_none_or(|c| f.deployed_at > c.deployed_at));
                Cell {
                    system_id: cell.system_id,
                    environment_id: cell.environment_id,
                    in_progress: pick(cell.progress_id),
                    latest: pick(cell.latest_id),
                    current,
                    last_failure,
                }
            })
            .collect())
    }

    /// Rebuilds every cell from the deployments (after seeding or a replay), one
    /// system and environment at a time through the indexes.
    pub async fn rebuild_board(&self) -> Result<u64, StoreError> {
        let pairs: Vec<(i64, i64)> = deployments::Entity::find()
            .select_only()
            .columns([deployments::Column::SystemId, deployments::Column::EnvironmentId])
            .distinct()
            .into_tuple()
            .all(self.connection())
            .await?;
        let now = crate::domain::now_millis();
        for pair in &pairs {
            rebuild_cell(self.connection(), *pair, now).await?;
        }
        Ok(pairs.len() as u64)
    }
}

/// Rebuilds one system's cell in one environment from its deployments (people moved or
/// deleted one of them): each slot's newest, then the newest of all. No deployment left, no
/// cell.
pub(crate) async fn rebuild_cell<C: ConnectionTrait>(
    conn: &C,
    (system_id, environment_id): (i64, i64),
    now: i64,
) -> Result<(), StoreError> {
    board_cells::Entity::delete_by_id((system_id, environment_id))
        .exec(conn)
        .await?;
    for statuses in [
        vec!["succeeded"],
        vec!["failed"],
        vec!["queued", "running"],
        vec![],
    ] {
        let mut newest = deployments::Entity::find()
            .filter(deployments::Column::DeletedAt.is_null())
            .filter(deployments::Column::SystemId.eq(system_id))
            .filter(deployments::Column::EnvironmentId.eq(environment_id));
        if !statuses.is_empty() {
            newest = newest.filter(deployments::Column::Status.is_in(statuses));
        }
        let newest = newest
            .order_by_desc(deployments::Column::DeployedAt)
            .order_by_desc(deployments::Column::Id)
            .one(conn)
            .await?;
        if let Some(deployment) = newest {
            touch(conn, &deployment, now).await?;
        }
    }
    Ok(())
}

use sea_orm::QueryOrder;

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(id: i64, status: &str, at: i64) -> deployments::Model {
        let observation = crate::domain::Observation {
            system: "s".into(),
            environment: "e".into(),
            raw_status: status.into(),
            started_at: Some(at),
            ..crate::domain::Observation::bare(&id.to_string(), DeploymentStatus::from_stored(status), at)
        };
        let mut model = crate::store::merge::new_deployment("generic", &observation, 1, 1, at);
        model.id = id;
        model.deployed_at = at;
        model
    }

    #[test]
    fn a_cell_follows_a_deployment_through_its_life() {
        let running = next_cell(None, &deployment(1, "running", 100), 100);
        assert_eq!((running.progress_id, running.current_id), (Some(1), None));
        let done = next_cell(Some(running), &deployment(1, "succeeded", 200), 200);
        assert_eq!((done.progress_id, done.current_id), (None, Some(1)));
        let failed = next_cell(Some(done.clone()), &deployment(2, "failed", 300), 300);
        assert_eq!((failed.current_id, failed.failure_id), (Some(1), Some(2)));
        // An older success arriving late does not replace the newer current one.
        let late = next_cell(Some(failed), &deployment(3, "succeeded", 50), 400);
        assert_eq!(late.current_id, Some(1));
        assert_eq!(late.latest_id, Some(2), "the newest, not the last to arrive");
    }

    #[test]
    fn a_cancelled_deployment_is_only_the_latest() {
        let cancelled = next_cell(None, &deployment(1, "cancelled", 100), 100);
        assert_eq!(
            (
                cancelled.current_id,
                cancelled.progress_id,
                cancelled.failure_id,
                cancelled.latest_id
            ),
            (None, None, None, Some(1))
        );
        let retried = next_cell(Some(cancelled), &deployment(2, "succeeded", 200), 200);
        assert_eq!((retried.current_id, retried.latest_id), (Some(2), Some(2)));
    }
}
