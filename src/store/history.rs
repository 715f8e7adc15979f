//! A deployment in its system's and environment's history: the successful deployment it
//! replaced, and whether it put back something that ran there before (a rollback).

use entity::{DeploymentStatus, deployments};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::{Store, StoreError};

/// What a deployment is in its history.
#[derive(Clone, Debug, Default)]
pub struct InHistory {
    /// The last successful deployment of the same system to the same environment before it.
    pub previous: Option<deployments::Model>,
    /// The deployment it rolled back (the previous one), when it is a rollback.
    pub rolled_back: Option<deployments::Model>,
}

/// What identifies what a deployment put in place: its version, else its commit.
pub fn shipped(deployment: &deployments::Model) -> Option<(&'static str, &str)> {
    deployment
        .version
        .as_deref()
        .map(|v| ("version", v))
        .or_else(|| deployment.commit_sha.as_deref().map(|s| ("commit", s)))
}

/// Whether the tool itself called it a rollback (CDEvents `service.rolledback`, Heroku's
/// "Rollback to v41"): its `rollback` tag.
pub fn said_rollback(deployment: &deployments::Model) -> bool {
    tags_say_rollback(deployment.tags.as_deref())
}

/// Whether stored tags hold `rollback: true` (the rule [`said_rollback`] and DORA share).
pub fn tags_say_rollback(tags: Option<&str>) -> bool {
    super::merge::tags_of(tags)
        .get("rollback")
        .is_some_and(|v| v == "true")
}

/// Events recorded longer ago than this are settled: no transaction that could still commit a
/// smaller id is open (the writer's commit is bounded at 120 s; a margin for clocks).
pub const SETTLED_AFTER_MS: i64 = 130_000;

impl Store {
    /// The deployment's previous success and, when it is a rollback, what it rolled back: at
    /// most two statements, each an index range on (system, time).
    pub async fn in_history(&self, deployment: &deployments::Model) -> Result<InHistory, StoreError> {
        let Some(previous) = self
            .last_success_before(deployment, (deployment.deployed_at, deployment.id), None)
            .await?
        else {
            return Ok(InHistory::default());
        };
        // Only what went out can have put something back.
        let rollback = if deployment.status != DeploymentStatus::Succeeded {
            false
        } else if said_rollback(deployment) {
            true
        } else {
            match (shipped(deployment), shipped(&previous)) {
                // The same thing again is a redeploy, not a rollback.
                (Some(this), Some(before)) if this == before => false,
                (Some(this), _) => self
                    .last_success_before(deployment, (previous.deployed_at, previous.id), Some(this))
                    .await?
                    .is_some(),
                (None, _) => false,
            }
        };
        Ok(InHistory {
            rolled_back: rollback.then(|| previous.clone()),
            previous: Some(previous),
        })
    }

    /// Successes in `from` since it last ran what `to` runs now: how many, and when the oldest
    /// went out. None when `from` never ran it (nothing to count from).
    pub async fn waiting(
        &self,
        from: &deployments::Model,
        shipped_in_to: (&str, &str),
    ) -> Result<Option<(u64, Option<i64>)>, StoreError> {
        use deployments::Column;
        use sea_orm::{PaginatorTrait, QuerySelect};
        let Some(same) = self
            .last_success_before(from, (i64::MAX, i64::MAX), Some(shipped_in_to))
            .await?
        else {
            return Ok(None);
        };
        let after = deployments::Entity::find()
            .filter(Column::DeletedAt.is_null())
            .filter(Column::SystemId.eq(from.system_id))
            .filter(Column::EnvironmentId.eq(from.environment_id))
            .filter(Column::Status.eq(DeploymentStatus::Succeeded.as_str()))
            .filter(
                Expr::col(Column::DeployedAt)
                    .gt(same.deployed_at)
                    .or(Expr::col(Column::DeployedAt)
                        .eq(same.deployed_at)
                        .and(Expr::col(Column::Id).gt(same.id))),
            );
        let count = after.clone().count(self.connection()).await?;
        let oldest: Option<i64> = after
            .select_only()
            .column_as(Column::DeployedAt.min(), "oldest")
            .into_tuple::<Option<i64>>()
            .one(self.connection())
            .await?
            .flatten();
        Ok(Some((count, oldest)))
    }

    /// The newest deployment event's id (0 for none).
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        self.last_event_id_before(i64::MAX).await
    }

    /// The newest id of the events recorded before `at` (0 for none). Followers of the event
    /// journal (the CDEvents sink, the commits worker) treat ids up to
    /// `last_event_id_before(now - SETTLED_AFTER_MS)` as settled.
    pub async fn last_event_id_before(&self, at: i64) -> Result<i64, StoreError> {
        use entity::deployment_events;
        use sea_orm::QuerySelect;
        // Newest first by id, stopping at the first old enough: a backward walk of the primary
        // key over the last minutes' events (no index on the time; MAX with a filter would
        // read every row on SQLite).
        Ok(deployment_events::Entity::find()
            .filter(deployment_events::Column::RecordedAt.lt(at))
            .select_only()
            .column(deployment_events::Column::Id)
            .order_by_desc(deployment_events::Column::Id)
            .into_tuple::<i64>()
            .one(self.connection())
            .await?
            .unwrap_or(0))
    }

    /// Deployments that finished (an event that made them succeed) after event `cursor`,
    /// recorded before `settled`, in event order, with the deployment as it is now.
    pub async fn finished_after(
        &self,
        cursor: i64,
        settled: i64,
        limit: u64,
    ) -> Result<Vec<(entity::deployment_events::Model, deployments::Model)>, StoreError> {
        use entity::deployment_events::{self, Column as Event};
        use sea_orm::QuerySelect;
        let events = deployment_events::Entity::find()
            .filter(Event::Id.gt(cursor))
            .filter(Event::RecordedAt.lt(settled))
            .filter(Event::Status.eq(DeploymentStatus::Succeeded.as_str()))
            .filter(
                Expr::col(Event::PreviousStatus)
                    .is_null()
                    .or(Expr::col(Event::PreviousStatus).ne(DeploymentStatus::Succeeded.as_str())),
            )
            .order_by_asc(Event::Id)
            .limit(limit)
            .all(self.connection())
            .await?;
        let ids: Vec<i64> = events.iter().map(|e| e.deployment_id).collect();
        let found: std::collections::HashMap<i64, deployments::Model> = deployments::Entity::find()
            .filter(deployments::Column::Id.is_in(ids))
            .filter(deployments::Column::DeletedAt.is_null())
            .all(self.connection())
            .await?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        Ok(events
            .into_iter()
            .filter_map(|e| found.get(&e.deployment_id).cloned().map(|d| (e, d)))
            .collect())
    }

    /// A deployment's system and environment names.
    pub async fn names_of(&self, deployment: &deployments::Model) -> Result<(String, String), StoreError> {
        let systems = self.systems_by_ids(&[deployment.system_id]).await?;
        let environments = self.environments_by_ids(&[deployment.environment_id]).await?;
        let name = |found: Option<&super::Named>| found.map(|n| n.name.clone()).unwrap_or_default();
        Ok((
            name(systems.get(&deployment.system_id)),
            name(environments.get(&deployment.environment_id)),
        ))
    }

    /// Adds `rollback: true` to a deployment's tags (history says it put back what ran before).
    /// Compare-and-set on the tags read: a delivery that changed them meanwhile wins, and the
    /// worker's next pass over recent events tries again.
    pub async fn tag_rollback(&self, deployment: &deployments::Model) -> Result<(), StoreError> {
        let mut tags = super::merge::tags_of(deployment.tags.as_deref());
        if tags.len() >= crate::domain::tags::MAX_TAGS {
            return Ok(());
        }
        tags.insert("rollback".into(), "true".into());
        let mut update = deployments::Entity::update_many()
            .col_expr(
                deployments::Column::Tags,
                Expr::value(super::merge::tags_json(&tags)),
            )
            .filter(deployments::Column::Id.eq(deployment.id));
        update = match &deployment.tags {
            Some(read) => update.filter(deployments::Column::Tags.eq(read.clone())),
            None => update.filter(deployments::Column::Tags.is_null()),
        };
        update.exec(self.connection()).await?;
        Ok(())
    }

    /// The newest success of the deployment's system in its environment before `(at, id)`,
    /// optionally one that shipped the given version or commit.
    async fn last_success_before(
        &self,
        deployment: &deployments::Model,
        (at, id): (i64, i64),
        shipping: Option<(&str, &str)>,
    ) -> Result<Option<deployments::Model>, StoreError> {
        use deployments::Column;
        let mut select = deployments::Entity::find()
            .filter(Column::DeletedAt.is_null())
            .filter(Column::SystemId.eq(deployment.system_id))
            .filter(Column::EnvironmentId.eq(deployment.environment_id))
            .filter(Column::Status.eq(DeploymentStatus::Succeeded.as_str()))
            .filter(
                Expr::col(Column::DeployedAt)
                    .lt(at)
                    .or(Expr::col(Column::DeployedAt)
                        .eq(at)
                        .and(Expr::col(Column::Id).lt(id))),
            );
        select = match shipping {
            Some(("version", version)) => select.filter(Column::Version.eq(version)),
            Some((_, sha)) => select.filter(Column::CommitSha.eq(sha)),
            None => select,
        };
        Ok(select
            .order_by_desc(Column::DeployedAt)
            .order_by_desc(Column::Id)
            .one(self.connection())
            .await?)
    }
}
