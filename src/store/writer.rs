//! Group commit: every accepted delivery goes through one writer per process. It takes every
//! job waiting when it starts a transaction (so under load a batch forms by itself, and at
//! rest a delivery waits for nothing), applies the batch with the one apply engine
//! (`apply.rs`), commits once, and only then answers each sender and publishes the live
//! events. A 2xx therefore always means "durably stored". When the batch cannot be written
//! as a whole, each job is applied alone inside a savepoint of the same transaction (the same
//! engine, a batch of one), so one bad delivery cannot take the others down.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use super::apply::{Done, NameCache, NewDelivery, Outcome, Target, Work, Written, apply};
use super::counts::CountDeltas;
use super::{DbOptions, Store, StoreError};
use crate::domain::now_millis;
use crate::events::Hub;

/// The most deliveries one transaction takes.
const MAX_BATCH: usize = 256;

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
    /// now and then (README, Performance, has the measurements). On SQLite the own connection
    /// is what keeps readers from ever delaying
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
    pub async fn finish(
        &self,
        delivery_id: i64,
        work: Work,
        decision: Option<String>,
    ) -> Result<Outcome, StoreError> {
        self.write(Target::Pending(delivery_id, decision), work, None)
            .await
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
        let ends = Ends {
            store: &store,
            hub: &hub,
            replica: &replica,
        };
        match write_batch(&ends, &mut cache, batch).await {
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
    refuse_replies(batch.into_iter().map(|job| job.reply), error);
}

/// Tells each sender its delivery was not stored.
fn refuse_replies(replies: impl IntoIterator<Item = Reply>, error: &StoreError) {
    for reply in replies {
        let _ = reply.send(Err(StoreError::Invalid(format!("not stored: {error}"))));
    }
}

/// Where a batch goes: the database, then this process's subscribers and the other replicas.
#[derive(Clone, Copy)]
struct Ends<'a> {
    store: &'a Store,
    hub: &'a Hub,
    replica: &'a str,
}

/// Writes one batch and answers its senders. `Err` means the transaction itself failed (it
/// could not begin, commit or roll back): every sender was answered "not stored", and the
/// connection must not be used again.
async fn write_batch(to: &Ends<'_>, cache: &mut NameCache, batch: Vec<Job>) -> Result<(), StoreError> {
    let Ends { store, hub, replica } = *to;
    let size = batch.len();
    let _measure = Measure {
        size,
        started: std::time::Instant::now(),
    };
    let jobs: Vec<(&Target, &Work)> = batch.iter().map(|job| (&job.target, &job.work)).collect();
    match write_whole(store, replica, cache, &jobs).await {
        Ok(written) => {
            let results = batch
                .into_iter()
                .zip(written.dones)
                .map(|(job, done)| (job.reply, Ok(done)))
                .collect();
            answer(hub, cache, written.names, results);
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
    write_one_by_one(to, cache, batch).await
}

/// The whole batch in one transaction, a fixed number of statements.
async fn write_whole(
    store: &Store,
    replica: &str,
    cache: &NameCache,
    jobs: &[(&Target, &Work)],
) -> Result<Written, Batched> {
    let txn = store
        .connection()
        .begin()
        .await
        .map_err(|error| Batched::Broken(error.into()))?;
    let written = async {
        let written = apply(&txn, &[cache], jobs, now_millis()).await?;
        let event_ids: Vec<i64> = written
            .dones
            .iter()
            .flat_map(|done| done.events.iter().map(|e| e.event.id))
            .collect();
        let Written { dones, names, counts } = written;
        counts.flush(&txn).await?;
        notify(&txn, replica, &event_ids).await?;
        Ok::<_, StoreError>(Written {
            dones,
            names,
            counts: CountDeltas::default(),
        })
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

/// Each job alone, in a savepoint of one transaction: a job that fails is answered with its
/// error and the others are written.
async fn write_one_by_one(to: &Ends<'_>, cache: &mut NameCache, batch: Vec<Job>) -> Result<(), StoreError> {
    let Ends { store, hub, replica } = *to;
    let size = batch.len();
    let txn = match store.connection().begin().await {
        Ok(txn) => txn,
        Err(error) => {
            let error = StoreError::Database(error);
            tracing::error!(%error, size, "could not start the ingest transaction");
            refuse(batch, &error);
            return Err(error);
        }
    };
    let mut results: Vec<(Reply, Result<Done, StoreError>)> = Vec::with_capacity(size);
    let mut batch_names = NameCache::default();
    let mut counts = CountDeltas::default();
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        match write_alone(&txn, &[cache, &batch_names], &job).await {
            Ok(written) => {
                batch_names.extend(written.names);
                counts.extend(written.counts);
                let done = written.dones.into_iter().next();
                let done = done.ok_or_else(|| StoreError::Invalid("a job was not written".into()));
                results.push((job.reply, done));
            }
            Err(StoreError::Broken(reason)) => {
                // Nothing about this transaction can be trusted any more (SQLite may have
                // rolled it all back by itself): nothing of the batch is stored.
                let error = StoreError::Broken(reason);
                tracing::error!(%error, size, "the ingest transaction failed; the batch is answered with 503");
                let _ = txn.rollback().await;
                let replies = results.into_iter().map(|(reply, _)| reply);
                let rest = jobs.map(|job| job.reply);
                refuse_replies(replies.chain(std::iter::once(job.reply)).chain(rest), &error);
                return Err(error);
            }
            Err(error) => results.push((job.reply, Err(error))),
        }
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
            refuse_replies(results.into_iter().map(|(reply, _)| reply), &error);
            Err(error)
        }
    }
}

/// One job in a savepoint: the apply engine with a batch of one. A savepoint that cannot be
/// undone is `Broken`.
async fn write_alone(
    txn: &DatabaseTransaction,
    known: &[&NameCache],
    job: &Job,
) -> Result<Written, StoreError> {
    let savepoint = txn.begin().await.map_err(|e| StoreError::Broken(e.to_string()))?;
    match apply(&savepoint, known, &[(&job.target, &job.work)], now_millis()).await {
        Ok(written) => {
            savepoint.commit().await?;
            Ok(written)
        }
        Err(error) => match savepoint.rollback().await {
            Ok(()) => Err(error),
            Err(rollback) => Err(StoreError::Broken(format!(
                "{error}; then the rollback failed: {rollback}"
            ))),
        },
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
    cache.extend(names);
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
pub(crate) async fn notify(
    txn: &DatabaseTransaction,
    replica: &str,
    event_ids: &[i64],
) -> Result<(), StoreError> {
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
