//! What each deployment changed: the commits between the previous successful deployment of its
//! system in its environment and it, read from the Git host's compare API (GitHub
//! `compare/{base}...{head}`, GitLab `repository/compare`) after the deployment is stored,
//! never on the webhook's way. One replica reads (a lease); it follows succeeded deployments
//! through the event journal ([`Follower`]: new events at once, and a second, settling read for
//! ids that commit out of order; recording a range twice changes nothing), records each
//! deployment's range,
//! and reads each (repository, base, head) once, retrying failures with the enrichment
//! worker's backoff. A repository or commit the host does not have (a 404: a renamed
//! repository, a force-pushed base) is recorded as missing and not asked again. On the way it
//! tags the rollbacks only history tells (see [`Worker::place`]).

pub mod hosts;

use std::sync::Arc;
use std::time::Duration;

use entity::commit_ranges;
use tokio::sync::watch;

use crate::domain::catalog::Repository;
use crate::domain::now_millis;
use crate::enrich::RetryPolicy;
use crate::store::commits::{FAILED, FOUND, MISSING};
use crate::store::follow::Follower;
use crate::store::{Lease, Store, StoreError};
pub use hosts::{Commit, Compared, GitHosts, Served};

const CURSOR: &str = "commits.cursor";
const LEASE: &str = "commits.lease";
/// Succeeded deployments read per round.
const PAGE: u64 = 200;
/// Ranges read from the host per round.
const READS: u64 = 20;

/// Starts the worker: it marks rollbacks that history tells (always) and reads commits where a
/// Git host is configured (`[api] github_token` or `gitlab_token`).
pub fn spawn(
    store: &Store,
    hosts: GitHosts,
    ingest: &crate::ingest::Ingest,
    replica: &str,
    retry: RetryPolicy,
    stopping: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let worker = Worker {
        store: store.clone(),
        hosts: Arc::new(hosts),
        catalog: ingest.catalog_handle(),
        lease: Lease::new(LEASE, replica, retry.lease),
        retry,
        kick: ingest.commits_kick(),
        follower: None,
        saved: (0, None),
    };
    tokio::spawn(worker.run(stopping.clone()))
}

struct Worker {
    store: Store,
    hosts: Arc<GitHosts>,
    catalog: crate::ingest::Current<crate::domain::Catalog>,
    /// One replica reads.
    lease: Lease,
    retry: RetryPolicy,
    kick: Arc<tokio::sync::Notify>,
    /// Where this replica is in the journal while it holds the lease (None: it does not).
    follower: Option<Follower>,
    /// The bound last written as the cursor, and when (it is written every few seconds at
    /// most: placing an event twice after a restart changes nothing).
    saved: (i64, Option<std::time::Instant>),
}

/// What a round did.
#[derive(Default)]
struct Round {
    /// Something new was placed or read.
    worked: bool,
    /// A page was full: go on at once.
    more: bool,
}

/// The least time between the starts of two rounds that did not fill a page.
const ROUNDS_APART: Duration = Duration::from_millis(500);

/// The most often the cursor is written.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// The longest idle wait between rounds.
const IDLE_AT_MOST: Duration = Duration::from_secs(10);

impl Worker {
    /// Rounds until stopped. Idle, it waits for a kick (this process stored deployments, or
    /// the GraphQL API queued a range) or a timer that grows from 1 s to 10 s while nothing
    /// happens (what other replicas stored is found by it). It is not a subscriber of the live
    /// events: those are the API's.
    async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let mut idle = Duration::from_secs(1);
        while !*stopping.borrow() {
            let started = tokio::time::Instant::now();
            let wait = match self.round().await {
                Ok(Round { more: true, .. }) => Duration::ZERO,
                Ok(Round { worked, .. }) => {
                    idle = if worked {
                        Duration::from_secs(1)
                    } else {
                        (idle * 2).min(IDLE_AT_MOST)
                    };
                    idle
                }
                Err(error) => {
                    tracing::warn!(%error, "reading what deployments changed failed; trying again");
                    Duration::from_secs(5)
                }
            };
            if wait.is_zero() {
                continue;
            }
            // Rounds start at least this far apart: a burst's kicks (one per delivery) gather
            // into one round instead of costing one each.
            tokio::select! {
                _ = tokio::time::sleep_until(started + ROUNDS_APART) => {}
                _ = stopping.changed() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.kick.notified() => idle = Duration::from_secs(1),
                _ = stopping.changed() => {}
            }
        }
    }

    /// Places the deployments that succeeded since the last round (each once: see
    /// [`Follower`]) and reads the ranges due.
    async fn round(&mut self) -> Result<Round, StoreError> {
        let now = now_millis();
        if !self.lease.hold(&self.store).await? {
            // Another replica holds it and moves the cursor: start again from it when back.
            self.follower = None;
            return Ok(Round::default());
        }
        let mut follower = match self.follower.take() {
            Some(follower) => follower,
            None => {
                let cursor: i64 = self
                    .store
                    .setting(CURSOR)
                    .await?
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                self.saved = (cursor, Some(std::time::Instant::now()));
                Follower::new(cursor, Default::default())
            }
        };
        let batch = follower.next(&self.store, i64::MAX, PAGE).await?;
        let mut worked = !batch.items.is_empty();
        let more = batch.more;
        // On an error the follower is dropped: the next round starts again at the cursor.
        let deployments: Vec<_> = batch.items.iter().map(|(_, d)| d.clone()).collect();
        let histories = self.store.in_histories(&deployments).await?;
        for (deployment, history) in deployments.iter().zip(histories) {
            self.place(deployment, history, now).await?;
        }
        follower.done(batch);
        let settled = follower.settled();
        let save_due = self.saved.1.is_none_or(|at| at.elapsed() >= SAVE_EVERY);
        if settled > self.saved.0 && save_due {
            self.store.put_setting(CURSOR, &settled.to_string()).await?;
            self.saved = (settled, Some(std::time::Instant::now()));
        }
        self.follower = Some(follower);
        if !self.hosts.any() {
            return Ok(Round { worked, more });
        }
        let due = self.store.due_ranges(now, READS).await?;
        let busy = due.len() as u64 == READS;
        worked |= !due.is_empty();
        for range in due {
            self.read(range).await?;
        }
        Ok(Round {
            worked,
            more: more || busy,
        })
    }

    /// Places a succeeded deployment in its history: a rollback that only history tells (it
    /// put back what ran before) gets the `rollback: true` tag the tools' own word sets, so
    /// the tag filter and DORA find every rollback; and the range it shipped is recorded when
    /// its repository is known and a host for it is configured.
    async fn place(
        &self,
        deployment: &entity::deployments::Model,
        history: crate::store::history::InHistory,
        now: i64,
    ) -> Result<(), StoreError> {
        if history.rolled_back.is_some() && !crate::store::history::said_rollback(deployment) {
            self.store.tag_rollback(deployment).await?;
        }
        let Some(head) = deployment.commit_sha.as_deref() else {
            return Ok(());
        };
        if !self.hosts.any() {
            return Ok(());
        }
        let (system, _) = self.store.names_of(deployment).await?;
        let Some(repository) = self.catalog.get().repository_for(&system, deployment) else {
            return Ok(());
        };
        if !self.hosts.serves(&repository) {
            return Ok(());
        }
        let Some(previous) = history.previous else {
            return Ok(());
        };
        let Some(base) = previous.commit_sha.as_deref() else {
            return Ok(());
        };
        self.store
            .record_change(deployment.id, (&repository.key(), base, head), now)
            .await
    }

    /// Reads one range from its host and saves what came of it.
    async fn read(&self, mut range: commit_ranges::Model) -> Result<(), StoreError> {
        let now = now_millis();
        let Ok(repository) = Repository::parse(&range.repository) else {
            range.state = MISSING.into();
            range.error = Some(format!("`{}` is not a repository", range.repository));
            return self.store.save_range(range).await;
        };
        let answer = if range.base == range.head {
            Ok(Compared::Found {
                total: 0,
                behind: Some(0),
                commits: Vec::new(),
            })
        } else {
            self.hosts.compare(&repository, &range.base, &range.head).await
        };
        range.attempts += 1;
        match answer {
            Ok(Compared::Found {
                total,
                behind,
                commits,
            }) => {
                range.state = FOUND.into();
                range.total_commits = Some(total as i64);
                range.behind_by = behind.map(|b| b as i64);
                range.commits = serde_json::to_string(&commits).ok();
                range.error = None;
                range.fetched_at = Some(now);
                range.next_attempt_at = None;
                metrics::counter!("shiplog_commit_ranges_read_total", "outcome" => "found").increment(1);
            }
            Ok(Compared::Missing(why)) => {
                tracing::info!(repository = %range.repository, base = %range.base, head = %range.head, %why, "the Git host has no such range");
                range.state = MISSING.into();
                range.error = Some(why);
                range.fetched_at = Some(now);
                range.next_attempt_at = None;
                metrics::counter!("shiplog_commit_ranges_read_total", "outcome" => "missing").increment(1);
            }
            Err(error) => {
                tracing::warn!(repository = %range.repository, attempts = range.attempts, %error, "reading a commit range failed");
                range.state = FAILED.into();
                range.error = Some(error.to_string());
                range.next_attempt_at = (range.attempts < self.retry.max_attempts)
                    .then(|| now + self.retry.delay(range.attempts, None).as_millis() as i64);
                metrics::counter!("shiplog_commit_ranges_read_total", "outcome" => "failed").increment(1);
            }
        }
        self.store.save_range(range).await
    }
}

/// A range's commits as stored (newest first).
pub fn commits_of(range: &commit_ranges::Model) -> Vec<Commit> {
    range
        .commits
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}
