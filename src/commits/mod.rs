//! What each deployment changed: the commits between the previous successful deployment of its
//! system in its environment and it, read from the Git host's compare API (GitHub
//! `compare/{base}...{head}`, GitLab `repository/compare`) after the deployment is stored,
//! never on the webhook's way. One replica reads (a lease); it follows succeeded deployments
//! through the event journal (a cursor that re-reads the last two minutes, as ids can commit
//! out of order: recording a range twice changes nothing), records each deployment's range,
//! and reads each (repository, base, head) once, retrying failures with the enrichment
//! worker's backoff. A repository or commit the host does not have (a 404: a renamed
//! repository, a force-pushed base) is recorded as missing and not asked again.

pub mod hosts;

use std::sync::Arc;
use std::time::Duration;

use entity::commit_ranges;
use tokio::sync::watch;

use crate::domain::catalog::Repository;
use crate::domain::{Catalog, now_millis};
use crate::enrich::RetryPolicy;
use crate::ingest::Current;
use crate::store::commits::{FAILED, FOUND, MISSING};
use crate::store::{Store, StoreError};
pub use hosts::{Commit, Compared, GitHosts, Served};

const CURSOR: &str = "commits.cursor";
const LEASE: &str = "commits.lease";
/// Events recorded longer ago than this are settled (the writer's commit bound and a margin).
const SETTLED_AFTER_MS: i64 = 130_000;
/// Succeeded deployments read per round.
const PAGE: u64 = 200;
/// Ranges read from the host per round.
const READS: u64 = 20;

/// Starts the worker when a Git host is configured (`[api] github_token` or `gitlab_token`).
pub fn spawn(
    store: &Store,
    hosts: GitHosts,
    catalog: Current<Catalog>,
    replica: &str,
    retry: RetryPolicy,
    stopping: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if hosts.is_empty() {
        return None;
    }
    let worker = Worker {
        store: store.clone(),
        hosts: Arc::new(hosts),
        catalog,
        replica: replica.to_string(),
        retry,
    };
    Some(tokio::spawn(worker.run(stopping.clone())))
}

struct Worker {
    store: Store,
    hosts: Arc<GitHosts>,
    catalog: Current<Catalog>,
    replica: String,
    retry: RetryPolicy,
}

impl Worker {
    async fn run(self, mut stopping: watch::Receiver<bool>) {
        while !*stopping.borrow() {
            let wait = match self.round().await {
                Ok(true) => Duration::ZERO,
                Ok(false) => Duration::from_secs(1),
                Err(error) => {
                    tracing::warn!(%error, "reading what deployments changed failed; trying again");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.changed() => {}
            }
        }
    }

    /// Records the ranges of deployments that succeeded since the cursor and reads the ranges
    /// due; whether there may be more to do right away.
    async fn round(&self) -> Result<bool, StoreError> {
        let now = now_millis();
        if !self
            .store
            .take_lease(
                LEASE,
                &self.replica,
                now + self.retry.lease.as_millis() as i64,
                now,
            )
            .await?
        {
            return Ok(false);
        }
        let cursor: i64 = self
            .store
            .setting(CURSOR)
            .await?
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let finished = self.store.finished_after(cursor, i64::MAX, PAGE).await?;
        let full = finished.len() as u64 == PAGE;
        for (_, deployment) in &finished {
            self.place(deployment, now).await?;
        }
        let settled = self.store.last_event_id_before(now - SETTLED_AFTER_MS).await?;
        let next = match finished.last() {
            Some((last, _)) if full => settled.min(last.id),
            _ => settled,
        };
        if next > cursor {
            self.store.put_setting(CURSOR, &next.to_string()).await?;
        }
        let due = self.store.due_ranges(now, READS).await?;
        let busy = due.len() as u64 == READS;
        for range in due {
            self.read(range).await?;
        }
        Ok(full || busy)
    }

    /// Records the range a succeeded deployment shipped, when its repository is known and a
    /// host for it is configured.
    async fn place(&self, deployment: &entity::deployments::Model, now: i64) -> Result<(), StoreError> {
        let Some(head) = deployment.commit_sha.as_deref() else {
            return Ok(());
        };
        let (system, _) = self.store.names_of(deployment).await?;
        let Some(repository) = self.catalog.get().repository_for(&system, deployment) else {
            return Ok(());
        };
        if !self.hosts.serves(&repository) {
            return Ok(());
        }
        let Some(previous) = self.store.previous_success(deployment).await? else {
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
