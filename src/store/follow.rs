//! Following the journal's finished deployments, each once: what the CDEvents sink sends and
//! the commits worker places.
//!
//! Ids can commit out of order (a writer that waited on a lock, another replica's
//! transaction), so reading after the newest id seen could skip one that commits late. A
//! [`Follower`] reads the journal twice, each part of it in pages:
//! - a live read, after the newest event it has read (the frontier): new events within
//!   moments, each page read once;
//! - a settling read, up to the newest settled event (recorded before
//!   [`SETTLED_AFTER_MS`](super::history::SETTLED_AFTER_MS), when no transaction that could
//!   still commit a smaller id is open), for what the live read could not see yet.
//!
//! Everything up to the settled bound was handled, and the events handled after it are
//! remembered; the owner keeps the bound (and, if it must never repeat one, the handled ones).
//! Each event is read at most twice, however long the unsettled window: a burst of deliveries
//! is followed at the pace it came in, not re-read from the bound every round.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use entity::{deployment_events, deployments};

use super::{Store, StoreError};

/// How often the settling read runs (its bound is found by a walk back over the newest
/// events: not every round).
const SETTLE_EVERY: Duration = Duration::from_secs(5);

/// A follower's position in the journal.
#[derive(Debug)]
pub struct Follower {
    /// Every event up to here was handled.
    settled: i64,
    /// Events after `settled` that were handled.
    handled: BTreeSet<i64>,
    /// The newest event the live read has read.
    frontier: i64,
    /// When the settling read last ran.
    last_settling: Option<Instant>,
}

/// A page of finished deployments to handle, then to give back to [`Follower::done`].
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<(deployment_events::Model, deployments::Model)>,
    /// A page was full: more is waiting.
    pub more: bool,
    /// The frontier once handled (a live page).
    reaches: Option<i64>,
    /// The settled bound once handled (a settling page).
    settles: Option<i64>,
}

impl Follower {
    /// Starts at a stored bound with the events already handled after it (the live read
    /// starts at the bound and passes over them).
    pub fn new(settled: i64, handled: BTreeSet<i64>) -> Self {
        Self {
            settled,
            handled,
            frontier: settled,
            last_settling: None,
        }
    }

    /// Every event up to this id was handled.
    pub fn settled(&self) -> i64 {
        self.settled
    }

    /// The events handled after [`Follower::settled`].
    pub fn handled(&self) -> &BTreeSet<i64> {
        &self.handled
    }

    /// The next events: those after the frontier recorded before `recorded_before` (the
    /// live read) and, every few seconds, a page of the settling read. Events already handled
    /// are left out.
    pub async fn next(
        &mut self,
        store: &Store,
        recorded_before: i64,
        limit: u64,
    ) -> Result<Batch, StoreError> {
        let mut batch = self.live(store, recorded_before, limit).await?;
        let settling_due = self.last_settling.is_none_or(|at| at.elapsed() >= SETTLE_EVERY);
        if !settling_due {
            return Ok(batch);
        }
        let settling = self.settling(store, limit).await?;
        batch.items.extend(settling.items);
        batch.more |= settling.more;
        batch.settles = settling.settles;
        Ok(batch)
    }

    async fn live(&self, store: &Store, recorded_before: i64, limit: u64) -> Result<Batch, StoreError> {
        let page = store
            .finished_page(self.frontier, i64::MAX, recorded_before, limit)
            .await?;
        Ok(Batch {
            items: self.unhandled(page.items),
            more: page.full,
            reaches: page.last,
            settles: None,
        })
    }

    async fn settling(&mut self, store: &Store, limit: u64) -> Result<Batch, StoreError> {
        self.last_settling = Some(Instant::now());
        let now = crate::domain::now_millis();
        let target = store
            .last_event_id_before(now - super::history::SETTLED_AFTER_MS)
            .await?
            .min(self.frontier);
        if target <= self.settled {
            return Ok(Batch::default());
        }
        let page = store.finished_page(self.settled, target, i64::MAX, limit).await?;
        Ok(Batch {
            items: self.unhandled(page.items),
            more: page.full,
            reaches: None,
            // A full page settles up to its last event; otherwise the whole range was read.
            settles: Some(if page.full {
                page.last.unwrap_or(target)
            } else {
                target
            }),
        })
    }

    fn unhandled(
        &self,
        items: Vec<(deployment_events::Model, deployments::Model)>,
    ) -> Vec<(deployment_events::Model, deployments::Model)> {
        items
            .into_iter()
            .filter(|(event, _)| event.id > self.settled && !self.handled.contains(&event.id))
            .collect()
    }

    /// Records a page as handled: call it once every item was.
    pub fn done(&mut self, batch: Batch) {
        for (event, _) in &batch.items {
            self.handled.insert(event.id);
        }
        if let Some(reaches) = batch.reaches {
            self.frontier = self.frontier.max(reaches);
        }
        if let Some(settles) = batch.settles.filter(|s| *s > self.settled) {
            self.settled = settles;
            self.handled = self.handled.split_off(&(settles + 1));
            self.frontier = self.frontier.max(settles);
        }
    }

    /// Records one event as handled (an owner that stops half-way through a page).
    pub fn handled_one(&mut self, event: i64) {
        if event > self.settled {
            self.handled.insert(event);
        }
    }
}

/// A page of [`Store::finished_page`].
pub struct FinishedPage {
    pub items: Vec<(deployment_events::Model, deployments::Model)>,
    /// The last event read (deleted deployments' events are read, not returned).
    pub last: Option<i64>,
    /// As many events as asked for were read.
    pub full: bool,
}
