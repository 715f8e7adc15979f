//! Import: deployments read from the tools' APIs, for history (`shiplog import`) and for what
//! webhooks missed (reconciliation, `reconcile.rs`). An importer is one more producer of the
//! ingest pipeline: each API object becomes a record the tool's source reads (in
//! `sources/<tool>.rs`, pure, beside its webhook events), journaled with its kind and applied
//! by `Ingest::import` under the same `externalId` the webhooks give, so webhooks and imports
//! merge into one deployment by the same rules, in any order.
//!
//! ```text
//! api.rs       GET with the tool's auth, retries, rate limits, Link pagination
//! gitlab.rs    GET /projects/:id/deployments (updated_at order)
//! github.rs    GET /repos/:repo/deployments + each deployment's statuses
//! heroku.rs    GET /apps/:app/releases (Range / Next-Range)
//! jenkins.rs   GET /job/.../api/json?tree=allBuilds[...]{M,N}
//! octopus.rs   GET /api/:space/deployments + each one's task, release and names
//! mod.rs       the loop: pages -> records -> Ingest::import (one group commit per page)
//! reconcile.rs the server's poll of each configured scope, on one replica at a time
//! ```
//!
//! Resuming: an import stores the URL of the next page once a page is committed, and starts
//! there when run again; records already stored come back as duplicates (each record's key is
//! the object's id and state), so a re-read changes nothing.

use std::time::{Duration, Instant};

use crate::domain::{Discovery, format_millis, parse_instant_str};
use crate::ingest::{Ingest, Record};
use crate::store::{Outcome, Store};

pub mod api;
pub mod github;
pub mod gitlab;
pub mod heroku;
pub mod jenkins;
pub mod octopus;
pub mod reconcile;

pub use api::{Api, ApiError};

/// Told of each wait on an API (a rate limit, a retry), to show it.
pub type Waiting<'a> = &'a (dyn Fn(&str) + Sync);

/// What reconciliation reads when a scope has no cursor yet: the last week (older history is
/// `shiplog import`'s job, and would otherwise all count as missed by webhooks).
const FIRST_RECONCILE_WINDOW_MS: i64 = 7 * crate::domain::DAY_MS;

/// One page of an API's answer, as records.
pub struct Page {
    pub records: Vec<Record>,
    /// The next page's URL, if there is one.
    pub next: Option<String>,
    /// How many objects the whole listing holds, when the API says.
    pub total: Option<u64>,
    /// The newest `updated_at` on the page (GitLab), where reconciliation resumes.
    pub high_water: Option<String>,
    /// The listing reached what was asked for (`--since`): no further page.
    pub stop: bool,
}

/// What is imported: one project or repository of one tool's instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Gitlab {
        instance: String,
        project: String,
    },
    Github {
        api_url: String,
        repo: String,
    },
    Heroku {
        api_url: String,
        app: String,
    },
    Jenkins {
        url: String,
        job: String,
    },
    /// A space, or one project (`Projects-N`) of it; `label` names it (`Spaces-1/Projects-3`).
    Octopus {
        server: String,
        space: String,
        project: Option<String>,
        label: String,
        names: std::sync::Arc<octopus::Names>,
    },
}

impl Scope {
    /// The source whose deployments these are.
    pub fn source(&self) -> &'static str {
        match self {
            Self::Gitlab { .. } => "gitlab",
            Self::Github { .. } => "github",
            Self::Heroku { .. } => "heroku",
            Self::Jenkins { .. } => "jenkins",
            Self::Octopus { .. } => "octopus",
        }
    }

    /// The project or repository.
    pub fn name(&self) -> &str {
        match self {
            Self::Gitlab { project, .. } => project,
            Self::Github { repo, .. } => repo,
            Self::Heroku { app, .. } => app,
            Self::Jenkins { job, .. } => job,
            Self::Octopus { label, .. } => label,
        }
    }

    /// The settings key of this scope's `purpose` (a cursor, a lease, a state).
    pub fn key(&self, purpose: &str) -> String {
        format!("{purpose}.{}.{}.{}", self.source(), self.instance(), self.name())
    }

    /// The tool's instance: its base URL.
    pub fn instance(&self) -> &str {
        match self {
            Self::Gitlab { instance, .. } => instance,
            Self::Github { api_url, .. } | Self::Heroku { api_url, .. } => api_url,
            Self::Jenkins { url, .. } => url,
            Self::Octopus { server, .. } => server,
        }
    }

    /// Where reading starts: a URL, or for Heroku the first `Range`. Reconciling reads the
    /// newest first where the API lists oldest first by default (Heroku).
    fn first_url(&self, after: Option<i64>, kind: Discovery) -> String {
        match self {
            // Always "changed since" (the epoch at first): each next page is asked the same way.
            Self::Gitlab { instance, project } => {
                gitlab::first_url(instance, project, Some(&format_millis(after.unwrap_or(0))))
            }
            // Reconciling reads the newest 10 (each costs a statuses request) until a page
            // holds nothing new: a dozen requests a poll, not a hundred.
            Self::Github { api_url, repo } if kind == Discovery::Reconcile => {
                github::first_url(api_url, repo, 10)
            }
            Self::Github { api_url, repo } => github::first_url(api_url, repo, 100),
            Self::Heroku { .. } if kind == Discovery::Reconcile => heroku::NEWEST_RANGE.to_string(),
            Self::Heroku { .. } => heroku::FIRST_RANGE.to_string(),
            Self::Jenkins { url, job } => jenkins::range_url(url, job, 0),
            Self::Octopus {
                server,
                space,
                project,
                ..
            } => octopus::first_url(server, space, project.as_deref()),
        }
    }

    async fn page(
        &self,
        api: &Api,
        url: &str,
        since: Option<i64>,
        waiting: Waiting<'_>,
    ) -> Result<Page, ApiError> {
        match self {
            Self::Gitlab { instance, project } => gitlab::page(api, instance, project, url, waiting).await,
            Self::Github { repo, .. } => github::page(api, repo, url, since, waiting).await,
            Self::Heroku { api_url, app } => heroku::page(api, api_url, app, url, since, waiting).await,
            Self::Jenkins { url: base, job } => jenkins::page(api, base, job, url, since, waiting).await,
            Self::Octopus {
                server, space, names, ..
            } => octopus::page(api, server, space, url, since, names, waiting).await,
        }
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The database could not store a page (nothing of that page is lost: it is read again).
    #[error("could not store: {0}")]
    Store(String),
}

impl From<crate::store::StoreError> for ImportError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Store(error.to_string())
    }
}

/// Where an import is, for a progress line.
pub struct Progress<'a> {
    pub scope: &'a str,
    pub pages: u64,
    pub read: u64,
    /// Objects in the whole listing, when the API says.
    pub total: Option<u64>,
    pub elapsed: Duration,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub pages: u64,
    /// Records read from the API.
    pub read: u64,
    /// Deployments shiplog did not have.
    pub new: u64,
    /// Deployments it had, changed by what the API said.
    pub updated: u64,
    /// Records stored before (the same object in the same state): nothing changed.
    pub unchanged: u64,
    /// Records that describe no deployment.
    pub ignored: u64,
    /// Records the source could not read (journaled as failed; `shiplog replay` recovers them).
    pub failed: u64,
    /// Whether it started where an interrupted run stopped.
    pub resumed: bool,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records in {} pages{}: {} new, {} updated, {} unchanged, {} ignored, {} failed, in {:.1} s ({:.0} records/s)",
            self.read,
            self.pages,
            if self.resumed { " (resumed)" } else { "" },
            self.new,
            self.updated,
            self.unchanged,
            self.ignored,
            self.failed,
            self.seconds,
            self.read as f64 / self.seconds.max(0.001)
        )
    }
}

/// Whether `pages` is 1, 10, 100, ...
fn tenfold(mut pages: u64) -> bool {
    while pages >= 10 && pages.is_multiple_of(10) {
        pages /= 10;
    }
    pages == 1
}

/// Reads scopes of one tool's API into the pipeline.
pub struct Importer<'a> {
    pub ingest: &'a Ingest,
    pub store: &'a Store,
    pub api: &'a Api,
    /// `Import` (history, resumable) or `Reconcile` (what changed since the last poll).
    pub kind: Discovery,
    /// Only what happened since then (epoch ms).
    pub since: Option<i64>,
}

impl Importer<'_> {
    /// Reads the scope page by page; each page's records are journaled and applied in one
    /// group commit before the next page is asked for.
    pub async fn run(
        &self,
        scope: &Scope,
        progress: &(dyn Fn(&Progress<'_>) + Sync),
        waiting: Waiting<'_>,
    ) -> Result<Summary, ImportError> {
        let started = Instant::now();
        let source = scope.source();
        // Deployments this run is the first to see: those first learned its way.
        let before = self.store.deployments_discovered(source, self.kind).await?;
        let (cursor_key, mut url, since, resumed) = self.start(scope).await?;
        let mut summary = Summary {
            resumed,
            ..Summary::default()
        };
        loop {
            let page = scope.page(self.api, &url, since, waiting).await?;
            let read = page.records.len() as u64;
            let outcomes = futures_util::future::join_all(
                page.records
                    .into_iter()
                    .map(|record| self.ingest.import(record, self.kind)),
            )
            .await;
            let mut unchanged = 0;
            for outcome in outcomes {
                let outcome = outcome.map_err(|error| match error {
                    crate::ingest::IngestError::Api(message) => {
                        ImportError::Api(ApiError::Unavailable(message))
                    }
                    other => ImportError::Store(other.to_string()),
                })?;
                match outcome {
                    Outcome::Duplicate { .. } => unchanged += 1,
                    Outcome::Ignored { .. } => summary.ignored += 1,
                    Outcome::Failed { .. } => summary.failed += 1,
                    Outcome::Applied { .. } | Outcome::Pending { .. } => {}
                }
            }
            summary.unchanged += unchanged;
            summary.pages += 1;
            summary.read += read;
            progress(&Progress {
                scope: scope.name(),
                pages: summary.pages,
                read: summary.read,
                total: page.total,
                elapsed: started.elapsed(),
            });
            self.advance(&cursor_key, &page.next, &page.high_water).await?;
            // The tables grew tenfold since the planner last looked (pages 1, 10, 100, ...).
            if tenfold(summary.pages) && read > unchanged {
                self.store.refresh_statistics().await?;
            }
            // Reconciling newest-first (GitHub): a page that held nothing new ends the poll.
            let caught_up = self.kind == Discovery::Reconcile
                && read > 0
                && unchanged == read
                && page.high_water.is_none();
            match page.next {
                Some(next) if !page.stop && !caught_up => url = next,
                _ => break,
            }
        }
        if self.kind == Discovery::Import {
            self.store.delete_setting(&cursor_key).await?;
        }
        let after = self.store.deployments_discovered(source, self.kind).await?;
        summary.new = after.saturating_sub(before);
        let applied = summary.read - summary.unchanged - summary.ignored - summary.failed;
        summary.updated = applied.saturating_sub(summary.new);
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// The cursor's key, the first URL, the `since` to apply and whether this resumes.
    async fn start(&self, scope: &Scope) -> Result<(String, String, Option<i64>, bool), ImportError> {
        if self.kind == Discovery::Import {
            let key = scope.key("import.cursor");
            return Ok(match self.store.setting(&key).await? {
                Some(next) => (key, next, self.since, true),
                None => (key, scope.first_url(self.since, self.kind), self.since, false),
            });
        }
        let key = scope.key("reconcile.cursor");
        let window = crate::domain::now_millis() - FIRST_RECONCILE_WINDOW_MS;
        // GitLab's `updated_after` from the newest change read last time (a second earlier:
        // records at the boundary come back as duplicates, none is skipped).
        let after = match self.store.setting(&key).await? {
            Some(high_water) => parse_instant_str(&high_water).map(|t| t - 1000).unwrap_or(window),
            None => self.since.unwrap_or(window),
        };
        Ok((key, scope.first_url(Some(after), self.kind), Some(after), false))
    }

    /// Remembers where to go on once a page is committed.
    async fn advance(
        &self,
        key: &str,
        next: &Option<String>,
        high_water: &Option<String>,
    ) -> Result<(), ImportError> {
        match (self.kind, next, high_water) {
            (Discovery::Import, Some(next), _) => self.store.put_setting(key, next).await?,
            (Discovery::Reconcile, _, Some(high_water)) => self.store.put_setting(key, high_water).await?,
            _ => {}
        }
        Ok(())
    }
}
