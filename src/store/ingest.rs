//! Journal and apply, with group commit. Every accepted delivery goes through one writer task
//! per process: it takes every delivery waiting when it starts a transaction (so under load a
//! batch forms by itself, and at rest a delivery waits for nothing), journals and applies each
//! inside its own savepoint, commits once, and only then answers each sender and publishes
//! the live events. A 2xx therefore always means "durably stored".

use std::collections::HashMap;
use std::sync::Arc;

use entity::{deliveries, deployment_events, deployments, environments, systems};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, QueryFilter,
    QuerySelect, Statement, TransactionTrait, TryInsertResult,
};
use tokio::sync::{mpsc, oneshot};

use super::counts::CountDeltas;
use super::{DbOptions, Named, Store, StoreError, merge};
use crate::domain::{MappedObservation, now_millis};
use crate::events::{Hub, LiveEvent};

/// The most deliveries one transaction takes.
const MAX_BATCH: usize = 256;

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
}

/// Which journal row a job writes.
#[derive(Clone, Debug)]
pub enum Target {
    /// A delivery just received.
    New(NewDelivery),
    /// A pending delivery the worker has finished enriching.
    Pending(i64),
}

/// What happened to a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The same delivery key was journaled before: nothing changed.
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
}

struct Job {
    target: Target,
    work: Work,
    /// A job still queued at this moment is answered "not stored" instead of written: its
    /// sender has stopped waiting (see `Writer::submit_by`).
    deadline: Option<std::time::Instant>,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The handle handlers submit deliveries through.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    health: Arc<Health>,
}

/// Whether the writer can store deliveries now: the reason of the last failed commit, until a
/// commit succeeds again (`/readyz` reports it).
#[derive(Default)]
pub struct Health {
    failure: std::sync::Mutex<Option<String>>,
}

impl Health {
    fn failed(&self, reason: String) {
        if let Ok(mut failure) = self.failure.lock() {
            if failure.is_none() {
                tracing::error!(%reason, "the database cannot store deliveries; answering 503 until it can");
            }
            *failure = Some(reason);
        }
    }

    fn recovered(&self) {
        if let Ok(mut failure) = self.failure.lock()
            && failure.take().is_some()
        {
            tracing::warn!("the database stores deliveries again");
        }
    }

    /// Why the last write failed, while no write has succeeded since.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|failure| failure.clone())
    }
}

/// How often a failing writer tries a write of its own to find out whether the database can
/// store deliveries again (a full disk freed, a database back), when no delivery arrives.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Writer {
    /// Starts the writer task. It ends when every `Writer` handle is dropped and the queue is
    /// drained, so a graceful shutdown loses nothing that was submitted.
    ///
    /// The writer runs on a thread of its own (a single-threaded runtime), on a connection of
    /// its own opened there (`own`; `None` shares the pool, for an in-memory SQLite database,
    /// which must stay one connection's). Every batch is a dozen round trips made one after the
    /// other; on the server's runtime each answer waited behind the HTTP tasks, and a socket
    /// of the shared pool is watched by the server's I/O driver, which busy workers poll only
    /// now and then. With 32 senders on two cores a round trip took 0.5-0.65 ms there (0.13 ms
    /// with one sender); on its own thread and connection PostgreSQL ingest measured about 20%
    /// more webhooks/s. On SQLite the own connection is what keeps readers from ever delaying
    /// an acknowledgement, and what lets a connection whose transaction failed be thrown away
    /// (SQLite can leave a transaction open when COMMIT fails with a full disk; reused, that
    /// connection would acknowledge later deliveries it never commits).
    pub fn spawn(
        store: Store,
        own: Option<DbOptions>,
        hub: Hub,
        replica: String,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        let health = Arc::new(Health::default());
        let runtime = tokio::runtime::Handle::current();
        let writer = Self {
            jobs,
            health: health.clone(),
        };
        let task = tokio::task::spawn_blocking(move || {
            let connection = Connection {
                shared: store,
                own,
                current: None,
            };
            let thread = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match thread {
                Ok(thread) => thread.block_on(run(connection, hub, replica, queue, health)),
                Err(error) => {
                    tracing::warn!(%error, "no runtime for the ingest writer's thread; running it on the server's");
                    runtime.block_on(run(connection, hub, replica, queue, health))
                }
            }
        });
        (writer, task)
    }

    /// Journals and applies one delivery; returns once it is committed.
    pub async fn submit(&self, delivery: NewDelivery, work: Work) -> Result<Outcome, StoreError> {
        self.write(Target::New(delivery), work, None).await
    }

    /// Like `submit`, but a delivery still waiting in the queue at `deadline` is not written
    /// and is answered `StoreError::TimedOut`. Once the writer has taken it, the answer is
    /// whatever the commit gives, however long it takes: a sender is never told "not stored"
    /// about a delivery that is.
    pub async fn submit_by(
        &self,
        delivery: NewDelivery,
        work: Work,
        deadline: std::time::Instant,
    ) -> Result<Outcome, StoreError> {
        self.write(Target::New(delivery), work, Some(deadline)).await
    }

    /// Finishes a pending delivery: marks it processed (or ignored) and applies its
    /// observations in one transaction. A delivery that is no longer pending (another replica
    /// finished it) is left alone and answered `Duplicate`, so a retry never applies twice.
    pub async fn finish(&self, delivery_id: i64, work: Work) -> Result<Outcome, StoreError> {
        self.write(Target::Pending(delivery_id), work, None).await
    }

    /// Why the database cannot store deliveries now, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    async fn write(
        &self,
        target: Target,
        work: Work,
        deadline: Option<std::time::Instant>,
    ) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                target,
                work,
                deadline,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// The writer's connection: its own (opened on the writer's thread, and opened again after a
/// transaction failed on it) or the shared pool.
struct Connection {
    shared: Store,
    own: Option<DbOptions>,
    current: Option<Store>,
}

impl Connection {
    /// The store to write through now, opening the own connection when there is none.
    async fn store(&mut self) -> Result<Store, StoreError> {
        let Some(options) = &self.own else {
            return Ok(self.shared.clone());
        };
        if let Some(store) = &self.current {
            return Ok(store.clone());
        }
        let store = self.shared.reopen(options).await?;
        self.current = Some(store.clone());
        Ok(store)
    }

    /// Throws the own connection away after a transaction failed on it: whatever state the
    /// failure left it in (an open transaction, a half-applied rollback) goes with it.
    async fn discard(&mut self) {
        if let Some(store) = self.current.take() {
            store.close().await;
        }
    }

    async fn close(&mut self) {
        self.discard().await;
    }
}

/// Ids of systems and environments already committed, so steady traffic skips the lookups.
#[derive(Default)]
pub(super) struct NameCache {
    systems: HashMap<String, i64>,
    environments: HashMap<String, i64>,
}

async fn run(
    mut connection: Connection,
    hub: Hub,
    replica: String,
    mut queue: mpsc::Receiver<Job>,
    health: Arc<Health>,
) {
    let mut cache = NameCache::default();
    loop {
        let first = if health.failure().is_some() {
            // Find out by itself when the database can write again, so `/readyz` recovers
            // without waiting for a delivery.
            match tokio::time::timeout(PROBE_EVERY, queue.recv()).await {
                Ok(job) => job,
                Err(_) => {
                    probe(&mut connection, &health).await;
                    continue;
                }
            }
        } else {
            queue.recv().await
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now = std::time::Instant::now();
        let (late, batch): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|job| job.deadline.is_some_and(|deadline| deadline <= now));
        for job in late {
            let _ = job.reply.send(Err(StoreError::TimedOut));
        }
        if batch.is_empty() {
            continue;
        }
        let store = match connection.store().await {
            Ok(store) => store,
            Err(error) => {
                health.failed(error.to_string());
                refuse(batch, &error);
                continue;
            }
        };
        match write_batch(&store, &hub, &replica, &mut cache, batch).await {
            Ok(()) => health.recovered(),
            Err(failure) => {
                health.failed(failure.to_string());
                cache = NameCache::default();
                connection.discard().await;
            }
        }
    }
    connection.close().await;
    tracing::debug!("ingest writer stopped");
}

/// A small write of the writer's own, while deliveries fail: its success clears the failure.
async fn probe(connection: &mut Connection, health: &Health) {
    let result = match connection.store().await {
        Ok(store) => store.write_probe().await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => health.recovered(),
        Err(error) => {
            health.failed(error.to_string());
            connection.discard().await;
        }
    }
}

/// Answers every job of a batch that could not be written: nothing of it was stored.
fn refuse(batch: Vec<Job>, error: &StoreError) {
    for job in batch {
        let _ = job
            .reply
            .send(Err(StoreError::Invalid(format!("not stored: {error}"))));
    }
}

/// What one job did inside its savepoint, kept until the commit.
pub(super) struct Done {
    pub(super) outcome: Outcome,
    pub(super) events: Vec<LiveEvent>,
    pub(super) names: NameCache,
    pub(super) counts: CountDeltas,
}

/// Writes one batch and answers its senders. `Err` means the transaction itself failed (it
/// could not begin, commit or roll back): every sender was answered "not stored", and the
/// connection must not be used again.
async fn write_batch(
    store: &Store,
    hub: &Hub,
    replica: &str,
    cache: &mut NameCache,
    batch: Vec<Job>,
) -> Result<(), StoreError> {
    let size = batch.len();
    let _measure = Measure {
        size,
        started: std::time::Instant::now(),
    };
    // New deliveries (nearly all traffic) go in a few multi-row statements; a batch with a
    // pending delivery the worker finished, or one the batched write could not store, goes
    // delivery by delivery, each in its own savepoint.
    let fresh: Vec<(&NewDelivery, &Work)> = batch
        .iter()
        .filter_map(|job| match &job.target {
            Target::New(delivery) => Some((delivery, &job.work)),
            Target::Pending(_) => None,
        })
        .collect();
    if fresh.len() == size {
        match write_batched(store, replica, cache, &fresh).await {
            Ok((dones, names)) => {
                let results = batch
                    .into_iter()
                    .zip(dones)
                    .map(|(job, done)| (job.reply, Ok(done)))
                    .collect();
                answer(hub, cache, names, results);
                return Ok(());
            }
            Err(Batched::RolledBack(error)) => {
                tracing::warn!(%error, size, "the batched write failed; writing delivery by delivery");
            }
            Err(Batched::Broken(error)) => {
                tracing::error!(%error, size, "the ingest transaction failed; the batch is answered with 503");
                refuse(batch, &error);
                return Err(error);
            }
        }
    }
    let txn = match store.connection().begin().await {
        Ok(txn) => txn,
        Err(error) => {
            let error = StoreError::Database(error);
            tracing::error!(%error, size, "could not start the ingest transaction");
            refuse(batch, &error);
            return Err(error);
        }
    };
    let mut results: Vec<(oneshot::Sender<_>, Result<Done, StoreError>)> = Vec::with_capacity(size);
    let mut batch_names = NameCache::default();
    let mut counts = CountDeltas::default();
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        let mut result = match txn.begin().await {
            Ok(savepoint) => match write_one(&savepoint, cache, &batch_names, &job.target, &job.work).await {
                Ok(done) => savepoint
                    .commit()
                    .await
                    .map(|()| done)
                    .map_err(StoreError::Database),
                Err(error) => match savepoint.rollback().await {
                    Ok(()) => Err(error),
                    // The savepoint could not be undone: nothing about this transaction can
                    // be trusted any more (SQLite may have rolled it all back by itself).
                    Err(rollback) => Err(StoreError::Broken(format!(
                        "{error}; then the rollback failed: {rollback}"
                    ))),
                },
            },
            Err(error) => Err(StoreError::Broken(error.to_string())),
        };
        if let Err(StoreError::Broken(reason)) = &result {
            let error = StoreError::Broken(reason.clone());
            tracing::error!(%error, size, "the ingest transaction failed; the batch is answered with 503");
            let _ = txn.rollback().await;
            let _ = job
                .reply
                .send(Err(StoreError::Invalid(format!("not stored: {error}"))));
            for (reply, _) in results {
                let _ = reply.send(Err(StoreError::Invalid(format!("not stored: {error}"))));
            }
            refuse(jobs.collect(), &error);
            return Err(error);
        }
        if let Ok(done) = &mut result {
            batch_names.systems.extend(done.names.systems.clone());
            batch_names.environments.extend(done.names.environments.clone());
            counts.extend(std::mem::take(&mut done.counts));
        }
        results.push((job.reply, result));
    }
    let event_ids: Vec<i64> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|done| done.events.iter().map(|e| e.event.id))
        .collect();
    // The rollup's deltas for the whole batch in a few statements, then the notification.
    let notified = match counts.flush(&txn).await {
        Ok(()) => notify(&txn, replica, &event_ids).await,
        Err(error) => Err(error),
    };
    let committed = match notified {
        Ok(()) => txn.commit().await.map_err(StoreError::Database),
        Err(error) => {
            let _ = txn.rollback().await;
            Err(error)
        }
    };
    match committed {
        Ok(()) => {
            answer(hub, cache, batch_names, results);
            Ok(())
        }
        Err(error) => {
            tracing::error!(%error, size, "ingest commit failed; the batch is answered with 503");
            for (reply, _) in results {
                let _ = reply.send(Err(StoreError::Invalid(format!("not stored: {error}"))));
            }
            Err(error)
        }
    }
}

/// How the batched path failed.
enum Batched {
    /// A statement failed and the transaction was rolled back: the connection is clean and
    /// the batch can be written again, delivery by delivery.
    RolledBack(StoreError),
    /// The transaction could not begin, commit or roll back: nothing was stored, and the
    /// connection's state is unknown.
    Broken(StoreError),
}

/// Records a batch's size and time when it is done (however it ends), for `/metrics`:
/// deliveries per batch is what group commit buys.
struct Measure {
    size: usize,
    started: std::time::Instant,
}

impl Drop for Measure {
    fn drop(&mut self) {
        metrics::counter!("shiplog_ingest_batches_total").increment(1);
        metrics::counter!("shiplog_ingest_batched_deliveries_total").increment(self.size as u64);
        metrics::histogram!("shiplog_ingest_batch_seconds").record(self.started.elapsed().as_secs_f64());
    }
}

/// The batched path: one transaction, a fixed number of statements (see `batch`).
async fn write_batched(
    store: &Store,
    replica: &str,
    cache: &NameCache,
    jobs: &[(&NewDelivery, &Work)],
) -> Result<(Vec<Done>, NameCache), Batched> {
    let txn = store
        .connection()
        .begin()
        .await
        .map_err(|error| Batched::Broken(error.into()))?;
    let written = async {
        let (dones, names, counts) = super::batch::write(&txn, cache, jobs, now_millis()).await?;
        counts.flush(&txn).await?;
        let event_ids: Vec<i64> = dones
            .iter()
            .flat_map(|done| done.events.iter().map(|e| e.event.id))
            .collect();
        notify(&txn, replica, &event_ids).await?;
        Ok::<_, StoreError>((dones, names))
    }
    .await;
    match written {
        Ok(written) => match txn.commit().await {
            Ok(()) => Ok(written),
            Err(error) => Err(Batched::Broken(error.into())),
        },
        Err(error) => match txn.rollback().await {
            Ok(()) => Err(Batched::RolledBack(error)),
            Err(rollback) => Err(Batched::Broken(StoreError::Broken(format!(
                "{error}; then the rollback failed: {rollback}"
            )))),
        },
    }
}

/// After a commit: remember the new names, answer every sender, publish the live events.
type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

fn answer(
    hub: &Hub,
    cache: &mut NameCache,
    names: NameCache,
    results: Vec<(Reply, Result<Done, StoreError>)>,
) {
    // A failed job may have met a cached id that no longer exists (`shiplog replay` removes
    // unused systems and environments): forget them all, the next batch re-reads.
    if results.iter().any(|(_, result)| result.is_err()) {
        *cache = NameCache::default();
    }
    cache.systems.extend(names.systems);
    cache.environments.extend(names.environments);
    let mut live = Vec::new();
    for (reply, result) in results {
        match result {
            Ok(done) => {
                live.extend(done.events);
                let _ = reply.send(Ok(done.outcome));
            }
            Err(error) => {
                tracing::error!(%error, "delivery could not be stored");
                let _ = reply.send(Err(error));
            }
        }
    }
    hub.publish(live);
}

/// Tells the other replicas which events this transaction stored; PostgreSQL delivers the
/// notification only if the transaction commits.
async fn notify(txn: &DatabaseTransaction, replica: &str, event_ids: &[i64]) -> Result<(), StoreError> {
    if event_ids.is_empty() || txn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    // A notification payload must stay under 8000 bytes.
    for chunk in event_ids.chunks(400) {
        let ids: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let payload = format!("{replica}:{}", ids.join(","));
        txn.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [super::fanout::CHANNEL.into(), payload.into()],
        ))
        .await?;
    }
    Ok(())
}

async fn write_one(
    txn: &DatabaseTransaction,
    cache: &NameCache,
    batch_names: &NameCache,
    target: &Target,
    work: &Work,
) -> Result<Done, StoreError> {
    let now = now_millis();
    let (state, error) = journal_state(work);
    let nothing = |outcome| Done {
        outcome,
        events: Vec::new(),
        names: NameCache::default(),
        counts: CountDeltas::default(),
    };
    let (delivery_id, received_at, source) = match target {
        Target::New(delivery) => match journal(txn, delivery, state, error, now).await? {
            Some(id) => (id, delivery.received_at, delivery.source.clone()),
            None => {
                let existing = deliveries::Entity::find()
                    .select_only()
                    .column(deliveries::Column::Id)
                    .filter(deliveries::Column::Source.eq(delivery.source.as_str()))
                    .filter(deliveries::Column::DeliveryKey.eq(delivery.delivery_key.as_str()))
                    .into_tuple::<i64>()
                    .one(txn)
                    .await?;
                return Ok(nothing(Outcome::Duplicate {
                    delivery_id: existing,
                }));
            }
        },
        Target::Pending(id) => {
            let updated = deliveries::Entity::update_many()
                .col_expr(deliveries::Column::State, Expr::value(state))
                .col_expr(deliveries::Column::Error, Expr::value(error))
                .col_expr(deliveries::Column::ProcessedAt, Expr::value(Some(now)))
                .col_expr(
                    deliveries::Column::NextAttemptAt,
                    Expr::value(Option::<i64>::None),
                )
                .filter(deliveries::Column::Id.eq(*id))
                .filter(deliveries::Column::State.eq("pending"))
                .exec(txn)
                .await?;
            if updated.rows_affected == 0 {
                return Ok(nothing(Outcome::Duplicate {
                    delivery_id: Some(*id),
                }));
            }
            let row = deliveries::Entity::find_by_id(*id)
                .one(txn)
                .await?
                .ok_or_else(|| StoreError::Invalid(format!("delivery {id} vanished")))?;
            (*id, row.received_at, row.source)
        }
    };
    let observations = match work {
        Work::Apply(observations) => observations,
        Work::Ignore(_) => return Ok(nothing(Outcome::Ignored { delivery_id })),
        Work::Pending => return Ok(nothing(Outcome::Pending { delivery_id })),
    };
    let mut names = NameCache::default();
    let mut counts = CountDeltas::default();
    let mut events = Vec::with_capacity(observations.len());
    let mut deployment_ids = Vec::with_capacity(observations.len());
    for mapped in observations {
        let system = ensure_system(txn, &mapped.system, cache, batch_names, &mut names, now).await?;
        let environment =
            ensure_environment(txn, &mapped.environment, cache, batch_names, &mut names, now).await?;
        let event = apply(
            txn,
            &source,
            delivery_id,
            mapped,
            &system,
            &environment,
            received_at,
            now,
            &mut counts,
        )
        .await?;
        deployment_ids.push(event.deployment.id);
        events.push(event);
    }
    Ok(Done {
        outcome: Outcome::Applied {
            delivery_id,
            deployment_ids,
        },
        events,
        names,
        counts,
    })
}

/// The journal row of a new delivery in `state` (processed, ignored or pending).
pub(super) fn journal_row(
    delivery: &NewDelivery,
    state: &str,
    error: Option<String>,
    now: i64,
) -> deliveries::ActiveModel {
    let pending = state == "pending";
    deliveries::ActiveModel {
        id: NotSet,
        source: Set(delivery.source.clone()),
        delivery_key: Set(delivery.delivery_key.clone()),
        received_at: Set(delivery.received_at),
        body: Set(delivery.body.clone()),
        headers: Set(delivery.headers.clone()),
        state: Set(state.to_string()),
        error: Set(error),
        attempts: Set(if pending { 0 } else { 1 }),
        next_attempt_at: Set(pending.then_some(now)),
        processed_at: Set((!pending).then_some(now)),
    }
}

/// What a delivery's work makes its journal state, and the reason when ignored.
pub(super) fn journal_state(work: &Work) -> (&'static str, Option<String>) {
    match work {
        Work::Apply(_) => ("processed", None),
        Work::Ignore(reason) => ("ignored", Some(reason.clone())),
        Work::Pending => ("pending", None),
    }
}

/// Inserts a new journal row; None when the same delivery key is already there.
async fn journal(
    txn: &DatabaseTransaction,
    delivery: &NewDelivery,
    state: &str,
    error: Option<String>,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let row = journal_row(delivery, state, error, now);
    let inserted = deliveries::Entity::insert(row)
        .on_conflict_do_nothing_on([deliveries::Column::Source, deliveries::Column::DeliveryKey])
        .exec(txn)
        .await?;
    Ok(match inserted {
        TryInsertResult::Inserted(result) => Some(result.last_insert_id),
        TryInsertResult::Conflicted | TryInsertResult::Empty => None,
    })
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    txn: &DatabaseTransaction,
    source: &str,
    delivery_id: i64,
    mapped: &MappedObservation,
    system: &Named,
    environment: &Named,
    received_at: i64,
    now: i64,
    counts: &mut CountDeltas,
) -> Result<LiveEvent, StoreError> {
    let observation = &mapped.observation;
    let fresh = merge::new_deployment(source, observation, system.id, environment.id, received_at);
    let inserted = deployments::Entity::insert(active(&fresh))
        .on_conflict_do_nothing_on([deployments::Column::Source, deployments::Column::ExternalId])
        .exec(txn)
        .await?;
    let (deployment, previous_status) = match inserted {
        TryInsertResult::Inserted(result) => {
            let deployment = deployments::Model {
                id: result.last_insert_id,
                ..fresh
            };
            counts.add(&deployment, 1);
            (deployment, None)
        }
        TryInsertResult::Conflicted | TryInsertResult::Empty => {
            // FOR UPDATE on PostgreSQL: two replicas merging into one row take turns.
            // SQLite has one writer at a time anyway and sea-query leaves the clause out.
            let current = deployments::Entity::find()
                .filter(deployments::Column::Source.eq(source))
                .filter(deployments::Column::ExternalId.eq(observation.external_id.as_str()))
                .lock_exclusive()
                .one(txn)
                .await?
                .ok_or_else(|| StoreError::Invalid("deployment vanished during upsert".into()))?;
            let next = merge::merge(&current, observation, system.id, environment.id, received_at);
            if next != current {
                let mut changes = active(&next);
                changes.id = Set(current.id);
                deployments::Entity::update(changes).exec(txn).await?;
                counts.change(&current, &next);
            }
            (next, Some(current.status.clone()))
        }
    };
    super::board::touch(txn, &deployment, now).await?;
    let event = deployment_events::ActiveModel {
        id: NotSet,
        deployment_id: Set(deployment.id),
        delivery_id: Set(Some(delivery_id)),
        status: Set(observation.status.as_str().to_string()),
        raw_status: Set(observation.raw_status.clone()),
        previous_status: Set(previous_status.clone()),
        occurred_at: Set(observation.occurred_at),
        recorded_at: Set(now),
    };
    let event_id = deployment_events::Entity::insert(event)
        .exec(txn)
        .await?
        .last_insert_id;
    let event = deployment_events::Model {
        id: event_id,
        deployment_id: deployment.id,
        delivery_id: Some(delivery_id),
        status: observation.status.as_str().to_string(),
        raw_status: observation.raw_status.clone(),
        previous_status,
        occurred_at: observation.occurred_at,
        recorded_at: now,
    };
    // Which system and environment the deployment now belongs to (an older observation
    // does not move it).
    let (system, environment) =
        if deployment.system_id == system.id && deployment.environment_id == environment.id {
            (system.clone(), environment.clone())
        } else {
            (
                named_by_id::<systems::Entity>(txn, deployment.system_id).await?,
                named_by_id::<environments::Entity>(txn, deployment.environment_id).await?,
            )
        };
    Ok(LiveEvent {
        event,
        deployment,
        system,
        environment,
    })
}

pub(super) fn active(model: &deployments::Model) -> deployments::ActiveModel {
    deployments::ActiveModel {
        id: NotSet,
        source: Set(model.source.clone()),
        external_id: Set(model.external_id.clone()),
        system_id: Set(model.system_id),
        environment_id: Set(model.environment_id),
        status: Set(model.status.clone()),
        raw_status: Set(model.raw_status.clone()),
        raw_system: Set(model.raw_system.clone()),
        raw_environment: Set(model.raw_environment.clone()),
        environment_tier: Set(model.environment_tier.clone()),
        tenant: Set(model.tenant.clone()),
        committed_at: Set(model.committed_at),
        status_at: Set(model.status_at),
        started_at: Set(model.started_at),
        finished_at: Set(model.finished_at),
        deployed_at: Set(model.deployed_at),
        commit_sha: Set(model.commit_sha.clone()),
        git_ref: Set(model.git_ref.clone()),
        version: Set(model.version.clone()),
        url: Set(model.url.clone()),
        actor: Set(model.actor.clone()),
        first_seen_at: Set(model.first_seen_at),
        updated_at: Set(model.updated_at),
    }
}

pub(super) async fn named_by_id<E>(txn: &DatabaseTransaction, id: i64) -> Result<Named, StoreError>
where
    E: EntityTrait,
    E::Model: Into<Named>,
    <E::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType: From<i64>,
{
    E::find_by_id(id)
        .one(txn)
        .await?
        .map(Into::into)
        .ok_or_else(|| StoreError::Invalid(format!("row {id} vanished")))
}

pub(super) async fn ensure_system(
    txn: &DatabaseTransaction,
    name: &str,
    cache: &NameCache,
    batch: &NameCache,
    names: &mut NameCache,
    now: i64,
) -> Result<Named, StoreError> {
    let known = [cache, batch, &*names]
        .into_iter()
        .find_map(|c| c.systems.get(name).copied());
    let id = match known {
        Some(id) => id,
        None => {
            let id = super::ensure_system(txn, name, now).await?;
            names.systems.insert(name.to_string(), id);
            id
        }
    };
    Ok(Named {
        id,
        name: name.to_string(),
    })
}

pub(super) async fn ensure_environment(
    txn: &DatabaseTransaction,
    name: &str,
    cache: &NameCache,
    batch: &NameCache,
    names: &mut NameCache,
    now: i64,
) -> Result<Named, StoreError> {
    let known = [cache, batch, &*names]
        .into_iter()
        .find_map(|c| c.environments.get(name).copied());
    let id = match known {
        Some(id) => id,
        None => {
            let id = super::ensure_environment(txn, name, now).await?;
            names.environments.insert(name.to_string(), id);
            id
        }
    };
    Ok(Named {
        id,
        name: name.to_string(),
    })
}
