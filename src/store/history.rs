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
    /// most two statements, each an index range (`deployments_history`: system, environment, time;
    /// `deployments_history_version`: system, environment, version, time).
    pub async fn in_history(&self, deployment: &deployments::Model) -> Result<InHistory, StoreError> {
        let previous = self
            .last_success_before(deployment, (deployment.deployed_at, deployment.id), None)
            .await?;
        self.placed(deployment, previous).await
    }

    /// [`Store::in_history`] of many deployments (a page the commits worker follows): their
    /// previous successes read with one statement per system and environment, not one each.
    /// Each reads the newest successes up to the group's newest deployment, one more than the
    /// group has: a slice of the history with no gaps, so the newest row of it before a
    /// deployment is that deployment's previous success. Deployments older than the whole
    /// slice get a slice of their own, starting at the newest of them.
    pub async fn in_histories(&self, group: &[deployments::Model]) -> Result<Vec<InHistory>, StoreError> {
        use deployments::Column;
        use sea_orm::QuerySelect;
        let position = |d: &deployments::Model| (d.deployed_at, d.id);
        let mut by_cell: std::collections::BTreeMap<(i64, i64), Vec<&deployments::Model>> =
            Default::default();
        for deployment in group {
            by_cell
                .entry((deployment.system_id, deployment.environment_id))
                .or_default()
                .push(deployment);
        }
        let mut previous: std::collections::HashMap<i64, Option<deployments::Model>> = Default::default();
        for ((system, environment), mut unresolved) in by_cell {
            // Newest first: each slice starts at the newest deployment not yet placed.
            unresolved.sort_by_key(|d| std::cmp::Reverse(position(d)));
            while let Some(top) = unresolved.first() {
                let newest = position(top);
                let wanted = unresolved.len() as u64 + 1;
                let slice = deployments::Entity::find()
                    .filter(Column::DeletedAt.is_null())
                    .filter(Column::SystemId.eq(system))
                    .filter(Column::EnvironmentId.eq(environment))
                    .filter(Column::Status.eq(DeploymentStatus::Succeeded.as_str()))
                    .filter(
                        Expr::tuple([Expr::col(Column::DeployedAt), Expr::col(Column::Id)])
                            .lte(Expr::tuple([Expr::val(newest.0), Expr::val(newest.1)])),
                    )
                    .order_by_desc(Column::DeployedAt)
                    .order_by_desc(Column::Id)
                    .limit(wanted)
                    .all(self.connection())
                    .await?;
                let reached_the_start = (slice.len() as u64) < wanted;
                // The newest is always placed (its previous success is in the slice, or it
                // has none), so every pass places at least one.
                let mut later = Vec::new();
                for member in unresolved {
                    match slice.iter().find(|row| position(row) < position(member)) {
                        Some(row) => {
                            previous.insert(member.id, Some(row.clone()));
                        }
                        None if reached_the_start => {
                            previous.insert(member.id, None);
                        }
                        None => later.push(member),
                    }
                }
                unresolved = later;
            }
        }
        let mut placed = Vec::with_capacity(group.len());
        for deployment in group {
            let before = previous.get(&deployment.id).cloned().flatten();
            placed.push(self.placed(deployment, before).await?);
        }
        Ok(placed)
    }

    /// A deployment placed after its previous success: whether it is a rollback (at most one
    /// statement, when it ships something else than the previous one did).
    async fn placed(
        &self,
        deployment: &deployments::Model,
        previous: Option<deployments::Model>,
    ) -> Result<InHistory, StoreError> {
        let Some(previous) = previous else {
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
            // A row value: one index range on both columns (an OR of the two reads every row
            // at the same time on SQLite).
            .filter(
                Expr::tuple([Expr::col(Column::DeployedAt), Expr::col(Column::Id)])
                    .gt(Expr::tuple([Expr::val(same.deployed_at), Expr::val(same.id)])),
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

    /// Deployments that finished (an event that made them succeed) after event `after` and
    /// up to event `up_to`, recorded before `recorded_before`, in event order, with the
    /// deployment as it is now (deleted ones are read, not returned).
    pub async fn finished_page(
        &self,
        after: i64,
        up_to: i64,
        recorded_before: i64,
        limit: u64,
    ) -> Result<super::follow::FinishedPage, StoreError> {
        use entity::deployment_events::{self, Column as Event};
        use sea_orm::QuerySelect;
        let events = deployment_events::Entity::find()
            .filter(Event::Id.gt(after))
            .filter(Event::Id.lte(up_to))
            .filter(Event::RecordedAt.lt(recorded_before))
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
        let full = events.len() as u64 == limit;
        let last = events.last().map(|e| e.id);
        let ids: Vec<i64> = events.iter().map(|e| e.deployment_id).collect();
        let found: std::collections::HashMap<i64, deployments::Model> = if ids.is_empty() {
            Default::default()
        } else {
            deployments::Entity::find()
                .filter(deployments::Column::Id.is_in(ids))
                .filter(deployments::Column::DeletedAt.is_null())
                .all(self.connection())
                .await?
                .into_iter()
                .map(|d| (d.id, d))
                .collect()
        };
        let items = events
            .into_iter()
            .filter_map(|e| found.get(&e.deployment_id).cloned().map(|d| (e, d)))
            .collect();
        Ok(super::follow::FinishedPage { items, last, full })
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
            // A row value: one index range on both columns (see `waiting`).
            .filter(
                Expr::tuple([Expr::col(Column::DeployedAt), Expr::col(Column::Id)])
                    .lt(Expr::tuple([Expr::val(at), Expr::val(id)])),
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
