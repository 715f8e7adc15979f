//! The apply engine: a batch of journal jobs (new deliveries, and pending deliveries the
//! enrichment worker finished) written in a fixed number of multi-row statements (journal,
//! deployments read and written, board cells, events, rollup), whatever the batch's size.
//! The merge rules run in memory, in arrival order. It is the only code that applies
//! observations: the writer runs it over a whole group-commit batch, and when that fails,
//! over each job alone inside a savepoint, so one bad delivery cannot take the others down.

use std::collections::HashMap;

use entity::{DeliveryState, board_cells, deliveries, deployment_events, deployments};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IdenStatic, Iterable, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};

use super::counts::CountDeltas;
use super::{NameKind, Named, StoreError, board, chunks, merge};
use crate::domain::MappedObservation;
use crate::events::LiveEvent;

/// The delivery as it goes into the journal.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub source: String,
    pub delivery_key: String,
    pub received_at: i64,
    /// The raw body (secrets already removed by the source, where a tool echoes them).
    pub body: String,
    /// The journaled headers, as a JSON object.
    pub headers: String,
    /// Why it is (or is not) a deployment, as JSON (`domain::Decision`).
    pub decision: Option<String>,
}

/// What to do with a delivery once journaled.
#[derive(Clone, Debug)]
pub enum Work {
    /// Apply these observations.
    Apply(Vec<MappedObservation>),
    /// Journal as ignored, with the reason.
    Ignore(String),
    /// Journal as pending: the enrichment worker finishes it (after API calls).
    Pending,
    /// Journal as failed, with why it could not be read: a dead letter `shiplog reprocess`
    /// reads again (after an upgrade or a rule change).
    Fail(String),
    /// Journal as processed and mark these environments (shiplog's names) stopped at these
    /// times (epoch ms).
    Stop(Vec<(String, i64)>),
}

/// Which journal row a job writes.
#[derive(Clone, Debug)]
pub enum Target {
    /// A delivery just received.
    New(NewDelivery),
    /// A pending delivery the worker has finished enriching, and its decision now.
    Pending(i64, Option<String>),
}

/// What happened to a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The same delivery key was journaled before (or, for a pending delivery, another
    /// worker finished it): nothing changed.
    Duplicate { delivery_id: Option<i64> },
    /// Journaled as ignored.
    Ignored { delivery_id: i64 },
    /// Journaled and applied to these deployments.
    Applied {
        delivery_id: i64,
        deployment_ids: Vec<i64>,
    },
    /// Journaled as pending, to be finished by the enrichment worker.
    Pending { delivery_id: i64 },
    /// Journaled as failed (a dead letter), with why it could not be read.
    Failed { delivery_id: i64, error: String },
}

impl Outcome {
    /// The outcome's name in metrics and answers.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Duplicate { .. } => "duplicate",
            Self::Ignored { .. } => "ignored",
            Self::Applied { .. } => "accepted",
            Self::Pending { .. } => "pending",
            Self::Failed { .. } => "dead_letter",
        }
    }
}

/// Ids of systems and environments already committed, so steady traffic skips the lookups.
#[derive(Clone, Debug, Default)]
pub(super) struct NameCache {
    systems: HashMap<String, i64>,
    environments: HashMap<String, i64>,
}

impl NameCache {
    fn of(&self, kind: NameKind) -> &HashMap<String, i64> {
        match kind {
            NameKind::System => &self.systems,
            NameKind::Environment => &self.environments,
        }
    }

    fn of_mut(&mut self, kind: NameKind) -> &mut HashMap<String, i64> {
        match kind {
            NameKind::System => &mut self.systems,
            NameKind::Environment => &mut self.environments,
        }
    }

    /// Takes another cache's names in.
    pub(super) fn extend(&mut self, other: NameCache) {
        self.systems.extend(other.systems);
        self.environments.extend(other.environments);
    }
}

/// What one job did, kept until the commit.
pub(super) struct Done {
    pub(super) outcome: Outcome,
    pub(super) events: Vec<LiveEvent>,
}

/// What a batch wrote: per job in order, and the names it created and the rollup's changes.
pub(super) struct Written {
    pub(super) dones: Vec<Done>,
    pub(super) names: NameCache,
    pub(super) counts: CountDeltas,
}

/// Rows per multi-row statement: well under both databases' bound-parameter limits.
const ROWS: usize = 64;
/// Bytes of bodies and headers per journal insert (a bigger delivery goes alone). Each insert
/// is a round trip, and the writer's batch is a chain of them, so a whole batch of typical
/// bodies fits in one (README, Performance). Big statements are only slow on connections
/// without TCP_NODELAY; see `nodelay`.
const JOURNAL_BYTES: usize = 256 * 1024;

/// (source, external id) or (source, delivery key).
type Key = (String, String);

/// One observation applied, in arrival order.
struct Step<'a> {
    job: usize,
    delivery_id: i64,
    key: Key,
    mapped: &'a MappedObservation,
    system: Named,
    environment: Named,
    /// The deployment after this observation (a new one's id is filled in once inserted).
    state: deployments::Model,
    previous_status: Option<entity::DeploymentStatus>,
}

/// A deployment the batch touches: as it was in the database (None when new) and as it is now.
struct Slot {
    original: Option<deployments::Model>,
    current: deployments::Model,
}

/// An observation to apply, before its deployment is known.
struct Planned<'a> {
    job: usize,
    delivery_id: i64,
    received_at: i64,
    key: Key,
    mapped: &'a MappedObservation,
    system: Named,
    environment: Named,
}

/// Writes every job inside `txn` and returns, per job in order, what it did, the system and
/// environment names it created, and the rollup's changes. Nothing is committed here. `known`
/// are names committed (or created earlier in this transaction) that need no lookup.
pub(super) async fn apply(
    txn: &DatabaseTransaction,
    known: &[&NameCache],
    jobs: &[(&Target, &Work)],
    now: i64,
) -> Result<Written, StoreError> {
    let journaled = journal(txn, jobs, now).await?;
    let mut names = NameCache::default();
    let planned = plan(txn, known, &mut names, jobs, &journaled, now).await?;

    // The deployments they touch, locked, then the merge rules in arrival order.
    let mut slots = existing(txn, &planned).await?;
    let mut steps = merged(planned, &mut slots);
    let ids = write_deployments(txn, &slots).await?;
    for step in &mut steps {
        if let Some(slot) = slots.get(&step.key)
            && slot.original.is_none()
        {
            step.state.id = *ids
                .get(&step.key)
                .ok_or_else(|| StoreError::Invalid("a new deployment got no id".into()))?;
        }
    }
    let mut counts = CountDeltas::default();
    for slot in slots.values() {
        match &slot.original {
            Some(original) => counts.change(original, &slot.current),
            None => counts.add(&slot.current, 1),
        }
    }

    // A deployment people deleted takes the tool's later words (kept for the audit) but makes
    // no event and no board cell: it is gone from every view.
    steps.retain(|step| step.state.deleted_at.is_none());

    // The board cells (and, after this, the rollup) are rows every batch touches: they are
    // locked last, so another replica's transaction waits on them only for the commit.
    let event_ids = write_events(txn, &steps, now).await?;
    write_cells(txn, &steps, now).await?;
    // A newer observation that moved a deployment to another system or environment (the
    // tool's name for it changed) leaves its old cell: rebuilt from what is left there. Rare,
    // and after the batch's own cells, in the same order on every replica.
    let mut left: Vec<(i64, i64)> = slots
        .values()
        .filter_map(|slot| {
            let original = slot.original.as_ref()?;
            let from = (original.system_id, original.environment_id);
            (from != (slot.current.system_id, slot.current.environment_id)).then_some(from)
        })
        .collect();
    left.sort_unstable();
    left.dedup();
    for cell in left {
        super::board::rebuild_cell(txn, cell, now).await?;
    }
    stop_environments(txn, known, &mut names, jobs, &journaled, now).await?;
    let dones = outcomes(txn, jobs, &journaled, steps, event_ids, now).await?;
    Ok(Written { dones, names, counts })
}

/// The observations of every applied job, with their system and environment ids.
async fn plan<'a>(
    txn: &DatabaseTransaction,
    known: &[&NameCache],
    names: &mut NameCache,
    jobs: &[(&Target, &'a Work)],
    journaled: &[Journaled],
    now: i64,
) -> Result<Vec<Planned<'a>>, StoreError> {
    let mut planned = Vec::new();
    for (job, ((_, work), journaled)) in jobs.iter().zip(journaled).enumerate() {
        let (
            Work::Apply(observations),
            Journaled::New {
                id,
                received_at,
                source,
            },
        ) = (work, journaled)
        else {
            continue;
        };
        for mapped in observations {
            let system = ensure(txn, NameKind::System, &mapped.system, known, names, now).await?;
            let environment =
                ensure(txn, NameKind::Environment, &mapped.environment, known, names, now).await?;
            planned.push(Planned {
                job,
                delivery_id: *id,
                received_at: *received_at,
                key: (source.clone(), mapped.observation.external_id.clone()),
                mapped,
                system,
                environment,
            });
        }
    }
    Ok(planned)
}

/// Marks the environments tools stopped: `stopped_at` only moves forward (a late, older stop
/// changes nothing), and a deployment after it starts the environment again (read side).
async fn stop_environments(
    txn: &DatabaseTransaction,
    known: &[&NameCache],
    names: &mut NameCache,
    jobs: &[(&Target, &Work)],
    journaled: &[Journaled],
    now: i64,
) -> Result<(), StoreError> {
    use entity::environments;
    for ((_, work), journaled) in jobs.iter().zip(journaled) {
        let (Work::Stop(stops), Journaled::New { .. }) = (work, journaled) else {
            continue;
        };
        for (environment, at) in stops {
            let named = ensure(txn, NameKind::Environment, environment, known, names, now).await?;
            environments::Entity::update_many()
                .col_expr(environments::Column::StoppedAt, Expr::value(*at))
                .filter(environments::Column::Id.eq(named.id))
                .filter(
                    environments::Column::StoppedAt
                        .is_null()
                        .or(environments::Column::StoppedAt.lt(*at)),
                )
                .exec(txn)
                .await?;
        }
    }
    Ok(())
}

/// The merge rules over the planned observations, in arrival order.
fn merged<'a>(planned: Vec<Planned<'a>>, slots: &mut HashMap<Key, Slot>) -> Vec<Step<'a>> {
    let mut steps = Vec::with_capacity(planned.len());
    for plan in planned {
        let observation = &plan.mapped.observation;
        let (state, previous_status) = match slots.get_mut(&plan.key) {
            Some(slot) => {
                let next = merge::merge(
                    &slot.current,
                    observation,
                    plan.system.id,
                    plan.environment.id,
                    plan.received_at,
                );
                let previous = std::mem::replace(&mut slot.current, next.clone());
                (next, Some(previous.status))
            }
            None => {
                let fresh = deployments::Model {
                    discovered_by: plan.mapped.discovered_by,
                    ..merge::new_deployment(
                        &plan.key.0,
                        observation,
                        plan.system.id,
                        plan.environment.id,
                        plan.received_at,
                    )
                };
                let slot = Slot {
                    original: None,
                    current: fresh.clone(),
                };
                slots.insert(plan.key.clone(), slot);
                (fresh, None)
            }
        };
        steps.push(Step {
            job: plan.job,
            delivery_id: plan.delivery_id,
            key: plan.key,
            mapped: plan.mapped,
            system: plan.system,
            environment: plan.environment,
            state,
            previous_status,
        });
    }
    steps
}

/// Each job's outcome and live events.
async fn outcomes(
    txn: &DatabaseTransaction,
    jobs: &[(&Target, &Work)],
    journaled: &[Journaled],
    steps: Vec<Step<'_>>,
    event_ids: Vec<i64>,
    now: i64,
) -> Result<Vec<Done>, StoreError> {
    let mut dones: Vec<Done> = jobs
        .iter()
        .zip(journaled)
        .map(|((_, work), journaled)| Done {
            outcome: match (journaled, work) {
                (Journaled::Duplicate(delivery_id), _) => Outcome::Duplicate {
                    delivery_id: *delivery_id,
                },
                (Journaled::New { id, .. }, Work::Apply(_)) => Outcome::Applied {
                    delivery_id: *id,
                    deployment_ids: Vec::new(),
                },
                (Journaled::New { id, .. }, Work::Ignore(_)) => Outcome::Ignored { delivery_id: *id },
                (Journaled::New { id, .. }, Work::Pending) => Outcome::Pending { delivery_id: *id },
                (Journaled::New { id, .. }, Work::Stop(_)) => Outcome::Applied {
                    delivery_id: *id,
                    deployment_ids: Vec::new(),
                },
                (Journaled::New { id, .. }, Work::Fail(error)) => Outcome::Failed {
                    delivery_id: *id,
                    error: error.clone(),
                },
            },
            events: Vec::new(),
        })
        .collect();
    // Names of systems and environments a deployment stayed in (an older observation does not
    // move it): from this batch, else read inside the transaction.
    let mut known: HashMap<(NameKind, i64), Named> = HashMap::new();
    for step in &steps {
        known.insert((NameKind::System, step.system.id), step.system.clone());
        known.insert(
            (NameKind::Environment, step.environment.id),
            step.environment.clone(),
        );
    }
    for (step, event_id) in steps.into_iter().zip(event_ids) {
        let system = name_of(txn, &mut known, NameKind::System, step.state.system_id).await?;
        let environment = name_of(txn, &mut known, NameKind::Environment, step.state.environment_id).await?;
        let observation = &step.mapped.observation;
        let event = deployment_events::Model {
            id: event_id,
            deployment_id: step.state.id,
            delivery_id: Some(step.delivery_id),
            status: observation.status,
            raw_status: observation.raw_status.clone(),
            previous_status: step.previous_status,
            occurred_at: observation.occurred_at,
            recorded_at: now,
        };
        let done = &mut dones[step.job];
        if let Outcome::Applied { deployment_ids, .. } = &mut done.outcome {
            deployment_ids.push(step.state.id);
        }
        done.events.push(LiveEvent {
            event,
            deployment: step.state,
            system,
            environment,
        });
    }
    Ok(dones)
}

/// What the journal did with one job.
enum Journaled {
    /// A journal row this job owns: new, or a pending one it finished.
    New {
        id: i64,
        received_at: i64,
        source: String,
    },
    Duplicate(Option<i64>),
}

/// The journal state a job's work gives its delivery, and the reason when ignored.
fn journal_state(work: &Work) -> (DeliveryState, Option<String>) {
    match work {
        Work::Apply(_) => (DeliveryState::Processed, None),
        Work::Ignore(reason) => (DeliveryState::Ignored, Some(reason.clone())),
        Work::Pending => (DeliveryState::Pending, None),
        Work::Stop(_) => (DeliveryState::Processed, None),
        Work::Fail(error) => (DeliveryState::Failed, Some(error.clone())),
    }
}

/// The journal row of a new delivery in `state`.
fn journal_row(
    delivery: &NewDelivery,
    state: DeliveryState,
    error: Option<String>,
    now: i64,
) -> deliveries::ActiveModel {
    let pending = state == DeliveryState::Pending;
    deliveries::ActiveModel {
        id: NotSet,
        source: Set(delivery.source.clone()),
        delivery_key: Set(delivery.delivery_key.clone()),
        received_at: Set(delivery.received_at),
        body: Set(delivery.body.clone()),
        headers: Set(delivery.headers.clone()),
        state: Set(state),
        error: Set(error),
        attempts: Set(if pending { 0 } else { 1 }),
        next_attempt_at: Set(pending.then_some(now)),
        processed_at: Set((!pending).then_some(now)),
        decision: Set(delivery.decision.clone()),
    }
}

/// Journals every job: new deliveries in one multi-row insert (a key seen before, in the
/// database or earlier in the batch, is a duplicate, answered with the id that holds it);
/// finished pending deliveries by moving them out of `pending` (one that is no longer
/// pending was finished elsewhere: a duplicate).
async fn journal(
    txn: &DatabaseTransaction,
    jobs: &[(&Target, &Work)],
    now: i64,
) -> Result<Vec<Journaled>, StoreError> {
    let fresh: Vec<(usize, &NewDelivery, &Work)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(index, (target, work))| match target {
            Target::New(delivery) => Some((index, delivery, *work)),
            Target::Pending(..) => None,
        })
        .collect();
    let mut journaled: Vec<Option<Journaled>> = (0..jobs.len()).map(|_| None).collect();
    for (index, journal) in journal_new(txn, &fresh, now).await? {
        journaled[index] = Some(journal);
    }
    for (index, (target, work)) in jobs.iter().enumerate() {
        if let Target::Pending(id, decision) = target {
            journaled[index] = Some(finish_pending(txn, (*id, decision.clone()), work, now).await?);
        }
    }
    journaled
        .into_iter()
        .map(|j| j.ok_or_else(|| StoreError::Invalid("a job was not journaled".into())))
        .collect()
}

async fn journal_new(
    txn: &DatabaseTransaction,
    jobs: &[(usize, &NewDelivery, &Work)],
    now: i64,
) -> Result<Vec<(usize, Journaled)>, StoreError> {
    let mut first: HashMap<Key, usize> = HashMap::new();
    let mut rows = Vec::new();
    for (index, delivery, work) in jobs {
        let key = (delivery.source.clone(), delivery.delivery_key.clone());
        if first.contains_key(&key) {
            continue;
        }
        first.insert(key, *index);
        let (state, error) = journal_state(work);
        rows.push(journal_row(delivery, state, error, now));
    }
    let mut inserted: HashMap<Key, i64> = HashMap::new();
    for chunk in journal_chunks(rows) {
        let new = insert_new(
            txn,
            chunk,
            deliveries::Column::Source,
            deliveries::Column::DeliveryKey,
        );
        inserted.extend(new.await?);
    }
    // Keys already in the journal before this batch.
    let older: Vec<Key> = first
        .keys()
        .filter(|key| !inserted.contains_key(*key))
        .cloned()
        .collect();
    let mut existing: HashMap<Key, i64> = HashMap::new();
    for chunk in older.chunks(ROWS) {
        let rows: Vec<(i64, String, String)> = deliveries::Entity::find()
            .select_only()
            .columns([
                deliveries::Column::Id,
                deliveries::Column::Source,
                deliveries::Column::DeliveryKey,
            ])
            .filter(
                Expr::tuple([
                    Expr::col(deliveries::Column::Source),
                    Expr::col(deliveries::Column::DeliveryKey),
                ])
                .in_tuples(chunk.iter().cloned()),
            )
            .into_tuple()
            .all(txn)
            .await?;
        existing.extend(rows.into_iter().map(|(id, source, key)| ((source, key), id)));
    }
    Ok(jobs
        .iter()
        .map(|(index, delivery, _)| {
            let key = (delivery.source.clone(), delivery.delivery_key.clone());
            let journal = match inserted.get(&key) {
                Some(id) if first.get(&key) == Some(index) => Journaled::New {
                    id: *id,
                    received_at: delivery.received_at,
                    source: delivery.source.clone(),
                },
                Some(id) => Journaled::Duplicate(Some(*id)),
                None => Journaled::Duplicate(existing.get(&key).copied()),
            };
            (*index, journal)
        })
        .collect())
}

/// Moves a pending delivery to the state its work gives it, if it is still pending.
async fn finish_pending(
    txn: &DatabaseTransaction,
    (id, decision): (i64, Option<String>),
    work: &Work,
    now: i64,
) -> Result<Journaled, StoreError> {
    let (state, error) = journal_state(work);
    let updated = deliveries::Entity::update_many()
        .col_expr(deliveries::Column::State, Expr::value(state))
        .col_expr(deliveries::Column::Decision, Expr::value(decision))
        .col_expr(deliveries::Column::Error, Expr::value(error))
        .col_expr(deliveries::Column::ProcessedAt, Expr::value(Some(now)))
        .col_expr(
            deliveries::Column::NextAttemptAt,
            Expr::value(Option::<i64>::None),
        )
        .filter(deliveries::Column::Id.eq(id))
        .filter(deliveries::Column::State.eq(DeliveryState::Pending))
        .exec(txn)
        .await?;
    if updated.rows_affected == 0 {
        return Ok(Journaled::Duplicate(Some(id)));
    }
    let (received_at, source): (i64, String) = deliveries::Entity::find_by_id(id)
        .select_only()
        .columns([deliveries::Column::ReceivedAt, deliveries::Column::Source])
        .into_tuple()
        .one(txn)
        .await?
        .ok_or_else(|| StoreError::Invalid(format!("delivery {id} vanished")))?;
    Ok(Journaled::New {
        id,
        received_at,
        source,
    })
}

/// The deployments the steps name that exist already, locked (FOR UPDATE on PostgreSQL).
async fn existing(
    txn: &DatabaseTransaction,
    planned: &[Planned<'_>],
) -> Result<HashMap<Key, Slot>, StoreError> {
    let mut keys: Vec<Key> = planned.iter().map(|p| p.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let mut slots = HashMap::new();
    for chunk in keys.chunks(ROWS) {
        let rows = deployments::Entity::find()
            .filter(
                Expr::tuple([
                    Expr::col((deployments::Entity, deployments::Column::Source)),
                    Expr::col((deployments::Entity, deployments::Column::ExternalId)),
                ])
                .in_tuples(chunk.iter().cloned()),
            )
            .order_by_asc(deployments::Column::Id)
            .lock_exclusive()
            .all(txn)
            .await?;
        for row in rows {
            slots.insert(
                (row.source.clone(), row.external_id.clone()),
                Slot {
                    original: Some(row.clone()),
                    current: row,
                },
            );
        }
    }
    Ok(slots)
}

/// Inserts the new deployments and rewrites the changed ones; returns the new rows' ids. A
/// key another replica inserted meanwhile makes the insert come back short: an error, so the
/// caller retries one by one (where the conflict is merged).
async fn write_deployments(
    txn: &DatabaseTransaction,
    slots: &HashMap<Key, Slot>,
) -> Result<HashMap<Key, i64>, StoreError> {
    let fresh: Vec<deployments::ActiveModel> = slots
        .values()
        .filter(|slot| slot.original.is_none())
        .map(|slot| merge::active(&slot.current))
        .collect();
    let wanted = fresh.len();
    let mut ids = HashMap::with_capacity(wanted);
    for chunk in chunks(fresh, ROWS) {
        let new = insert_new(
            txn,
            chunk,
            deployments::Column::Source,
            deployments::Column::ExternalId,
        );
        ids.extend(new.await?);
    }
    if ids.len() != wanted {
        return Err(StoreError::Invalid(
            "a deployment was created concurrently; retrying one by one".into(),
        ));
    }
    let changed: Vec<deployments::ActiveModel> = slots
        .values()
        .filter(|slot| {
            slot.original
                .as_ref()
                .is_some_and(|original| *original != slot.current)
        })
        .map(|slot| {
            let mut row = merge::active(&slot.current);
            row.id = Set(slot.current.id);
            row
        })
        .collect();
    for chunk in chunks(changed, ROWS) {
        use deployments::Column;
        deployments::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(Column::Id)
                    .update_columns(Column::iter().filter(|c| !matches!(c, Column::Id)))
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(ids)
}

/// The board cells after every step, in arrival order (the same rule as one by one), written
/// once each.
async fn write_cells(txn: &DatabaseTransaction, steps: &[Step<'_>], now: i64) -> Result<(), StoreError> {
    let mut keys: Vec<(i64, i64)> = steps
        .iter()
        .map(|s| (s.state.system_id, s.state.environment_id))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut cells: HashMap<(i64, i64), (Option<board_cells::Model>, Option<board_cells::Model>)> =
        HashMap::new();
    for chunk in keys.chunks(ROWS) {
        let rows = board_cells::Entity::find()
            .filter(
                Expr::tuple([
                    Expr::col(board_cells::Column::SystemId),
                    Expr::col(board_cells::Column::EnvironmentId),
                ])
                .in_tuples(chunk.iter().copied()),
            )
            .order_by_asc(board_cells::Column::SystemId)
            .order_by_asc(board_cells::Column::EnvironmentId)
            .lock_exclusive()
            .all(txn)
            .await?;
        for row in rows {
            cells.insert(
                (row.system_id, row.environment_id),
                (Some(row.clone()), Some(row)),
            );
        }
    }
    for step in steps {
        let key = (step.state.system_id, step.state.environment_id);
        let entry = cells.entry(key).or_insert((None, None));
        entry.1 = Some(board::next_cell(entry.1.clone(), &step.state, now));
    }
    let changed: Vec<board_cells::Model> = cells
        .into_values()
        .filter_map(|(before, after)| match (before, after) {
            (before, Some(after)) if before.as_ref() != Some(&after) => Some(after),
            _ => None,
        })
        .collect();
    board::save(txn, changed).await
}

/// One event per step; ids come back in insertion order (one sequence, rows in order).
async fn write_events(
    txn: &DatabaseTransaction,
    steps: &[Step<'_>],
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    let rows: Vec<deployment_events::ActiveModel> = steps
        .iter()
        .map(|step| {
            let observation = &step.mapped.observation;
            deployment_events::ActiveModel {
                id: NotSet,
                deployment_id: Set(step.state.id),
                delivery_id: Set(Some(step.delivery_id)),
                status: Set(observation.status),
                raw_status: Set(observation.raw_status.clone()),
                previous_status: Set(step.previous_status),
                occurred_at: Set(observation.occurred_at),
                recorded_at: Set(now),
            }
        })
        .collect();
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in chunks(rows, ROWS) {
        let mut insert = deployment_events::Entity::insert_many(chunk).into_query();
        insert.returning_col(deployment_events::Column::Id);
        let mut returned: Vec<i64> = txn
            .query_all(&insert)
            .await?
            .into_iter()
            .map(|row| row.try_get("", "id"))
            .collect::<Result<_, _>>()?;
        returned.sort_unstable();
        ids.extend(returned);
    }
    if ids.len() != steps.len() {
        return Err(StoreError::Invalid("events came back short".into()));
    }
    Ok(ids)
}

async fn name_of(
    txn: &DatabaseTransaction,
    known: &mut HashMap<(NameKind, i64), Named>,
    kind: NameKind,
    id: i64,
) -> Result<Named, StoreError> {
    if let Some(named) = known.get(&(kind, id)) {
        return Ok(named.clone());
    }
    let named = super::named_by_id(txn, kind, id).await?;
    known.insert((kind, id), named.clone());
    Ok(named)
}

/// The id of a system or environment: known already, else created (or found) in `txn`.
async fn ensure(
    txn: &DatabaseTransaction,
    kind: NameKind,
    name: &str,
    known: &[&NameCache],
    names: &mut NameCache,
    now: i64,
) -> Result<Named, StoreError> {
    let cached = known
        .iter()
        .copied()
        .chain(std::iter::once(&*names))
        .find_map(|cache| cache.of(kind).get(name).copied());
    let id = match cached {
        Some(id) => id,
        None => {
            let id = super::ensure_named(txn, kind, name, now).await?;
            names.of_mut(kind).insert(name.to_string(), id);
            id
        }
    };
    Ok(Named {
        id,
        name: name.to_string(),
    })
}

/// Journal rows in groups of at most `ROWS` rows and about `JOURNAL_BYTES` of payload (a
/// single bigger delivery goes alone).
fn journal_chunks(rows: Vec<deliveries::ActiveModel>) -> Vec<Vec<deliveries::ActiveModel>> {
    let size = |row: &deliveries::ActiveModel| match (&row.body, &row.headers) {
        (Set(body), Set(headers)) => body.len() + headers.len(),
        _ => 0,
    };
    let mut out: Vec<Vec<deliveries::ActiveModel>> = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let row_bytes = size(&row);
        match out.last_mut() {
            Some(chunk) if chunk.len() < ROWS && bytes + row_bytes <= JOURNAL_BYTES => {
                bytes += row_bytes;
                chunk.push(row);
            }
            _ => {
                bytes = row_bytes;
                out.push(vec![row]);
            }
        }
    }
    out
}

/// Inserts rows into a table keyed by (`source`, `key`) in one multi-row `INSERT ... ON
/// CONFLICT DO NOTHING`, and returns the ids of the rows it inserted by that key.
async fn insert_new<A: ActiveModelTrait>(
    txn: &DatabaseTransaction,
    rows: Vec<A>,
    source: <A::Entity as EntityTrait>::Column,
    key: <A::Entity as EntityTrait>::Column,
) -> Result<HashMap<Key, i64>, StoreError> {
    let mut insert = A::Entity::insert_many(rows)
        .on_conflict(OnConflict::columns([source, key]).do_nothing().to_owned())
        .into_query();
    insert.returning(Query::returning().columns([
        Alias::new("id"),
        Alias::new(source.as_str()),
        Alias::new(key.as_str()),
    ]));
    let mut ids = HashMap::new();
    for row in txn.query_all(&insert).await? {
        ids.insert(
            (row.try_get("", source.as_str())?, row.try_get("", key.as_str())?),
            row.try_get::<i64>("", "id")?,
        );
    }
    Ok(ids)
}
