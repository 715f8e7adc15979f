//! Reconciliation: the running server polls each configured scope (`[[reconcile]]`) of a
//! tool's API for what changed since its stored cursor and applies it through the pipeline,
//! as an import of kind `reconcile`. A deployment it is the first to see was missed by the
//! webhooks: it is marked `RECONCILE`, counted per scope in `/metrics` and in GraphQL's
//! `reconciliation`, so an operator whose tool stopped sending webhooks learns it here.
//!
//! Replicas share the work through a lease per scope in the database (`Store::take_lease`):
//! one replica polls a scope per interval; another takes over when it stops renewing.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Api, Importer, Scope, Summary, github, gitlab, heroku, jenkins};
use crate::domain::{Discovery, now_millis};
use crate::ingest::Ingest;
use crate::store::Store;

/// One `[[reconcile]]` table of the settings file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// `gitlab`, `github`, `heroku` or `jenkins`.
    pub source: String,
    /// The API's base URL [default: the public service].
    #[serde(default)]
    pub api_url: Option<String>,
    /// The token (prefer `token_env`, which keeps it out of the file).
    #[serde(default)]
    pub token: Option<String>,
    /// The variable that holds the token [default: SHIPLOG_GITLAB_TOKEN, SHIPLOG_GITHUB_TOKEN].
    #[serde(default)]
    pub token_env: Option<String>,
    /// GitLab projects (`group/app`).
    #[serde(default)]
    pub projects: Vec<String>,
    /// GitHub repositories (`owner/app`).
    #[serde(default)]
    pub repos: Vec<String>,
    /// Heroku apps.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Jenkins jobs by full name (`team/app/deploy`).
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Jenkins: the user whose API token `token` is [default: SHIPLOG_JENKINS_USER].
    #[serde(default)]
    pub user: Option<String>,
    /// Octopus: the space [default: Spaces-1] (with `projects` as `Projects-N` ids, or the
    /// whole space).
    #[serde(default)]
    pub space: Option<String>,
    /// Seconds between polls of each scope [default: 300].
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
}

fn default_interval() -> u64 {
    300
}

impl ReconcileConfig {
    /// An entry for `source` at `api_url` with `token` and nothing to poll yet.
    pub fn of(source: &str, api_url: String, token: String) -> Self {
        Self {
            source: source.to_string(),
            api_url: Some(api_url),
            token: Some(token),
            token_env: None,
            projects: Vec::new(),
            repos: Vec::new(),
            apps: Vec::new(),
            jobs: Vec::new(),
            user: None,
            space: None,
            interval_seconds: default_interval(),
        }
    }

    /// The API client and the scopes it polls; the message names the entry and what to fix.
    pub fn scopes(&self) -> Result<(Api, Vec<Scope>), String> {
        let entry = format!("[[reconcile]] source = \"{}\"", self.source);
        let variable = self
            .token_env
            .clone()
            .unwrap_or_else(|| match self.source.as_str() {
                "heroku" => "SHIPLOG_HEROKU_API_KEY".into(),
                "octopus" => "SHIPLOG_OCTOPUS_API_KEY".into(),
                source => format!("SHIPLOG_{}_TOKEN", source.to_uppercase()),
            });
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var(&variable).ok())
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| format!("{entry}: no token: set token_env (or {variable}) or token"))?;
        if self.interval_seconds == 0 {
            return Err(format!("{entry}: interval_seconds must be at least 1"));
        }
        let api_url = |default: &str| {
            self.api_url
                .as_deref()
                .unwrap_or(default)
                .trim_end_matches('/')
                .to_string()
        };
        let each = |names: &[String], scope: &dyn Fn(String) -> Scope| {
            names.iter().cloned().map(scope).collect::<Vec<_>>()
        };
        let (api, scopes) = match self.source.as_str() {
            "gitlab" => {
                let instance = gitlab::instance(&api_url(gitlab::DEFAULT_API_URL));
                let scopes = each(&self.projects, &|project| Scope::Gitlab {
                    instance: instance.clone(),
                    project,
                });
                (gitlab::api(&token), scopes)
            }
            "github" => {
                let api_url = api_url(github::DEFAULT_API_URL);
                let scopes = each(&self.repos, &|repo| Scope::Github {
                    api_url: api_url.clone(),
                    repo,
                });
                (github::api(&token), scopes)
            }
            "heroku" => {
                let api_url = api_url(heroku::DEFAULT_API_URL);
                let scopes = each(&self.apps, &|app| Scope::Heroku {
                    api_url: api_url.clone(),
                    app,
                });
                (heroku::api(&token), scopes)
            }
            "jenkins" => {
                let url = self
                    .api_url
                    .clone()
                    .ok_or_else(|| format!("{entry}: api_url (the Jenkins URL) is required"))?;
                let user = self
                    .user
                    .clone()
                    .or_else(|| std::env::var("SHIPLOG_JENKINS_USER").ok())
                    .ok_or_else(|| format!("{entry}: user (or SHIPLOG_JENKINS_USER) is required"))?;
                let url = url.trim_end_matches('/').to_string();
                let scopes = each(&self.jobs, &|job| Scope::Jenkins {
                    url: url.clone(),
                    job,
                });
                (jenkins::api(&user, &token), scopes)
            }
            "octopus" => {
                let server = self
                    .api_url
                    .clone()
                    .ok_or_else(|| format!("{entry}: api_url (the Octopus server) is required"))?;
                let server = server.trim_end_matches('/').to_string();
                let space = self.space.clone().unwrap_or_else(|| "Spaces-1".into());
                let projects: Vec<Option<String>> = match self.projects.is_empty() {
                    true => vec![None],
                    false => self.projects.iter().cloned().map(Some).collect(),
                };
                let names = std::sync::Arc::new(super::octopus::Names::default());
                let scopes = projects
                    .into_iter()
                    .map(|project| Scope::Octopus {
                        label: project.as_ref().map_or(space.clone(), |p| format!("{space}/{p}")),
                        server: server.clone(),
                        space: space.clone(),
                        project,
                        names: names.clone(),
                    })
                    .collect();
                (super::octopus::api(&token), scopes)
            }
            other => {
                return Err(format!(
                    "[[reconcile]] source = \"{other}\": reconciliation reads gitlab, github, heroku, jenkins or octopus"
                ));
            }
        };
        if scopes.is_empty() {
            return Err(format!(
                "{entry}: name what to poll: projects = [...] (gitlab), repos = [...] (github), apps = [...] (heroku) or jobs = [...] (jenkins)"
            ));
        }
        Ok((api.map_err(|e| format!("{entry}: {e}"))?, scopes))
    }
}

/// How one scope's reconciliation went last, as stored (and read by GraphQL).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeState {
    pub source: String,
    pub scope: String,
    pub instance: String,
    /// When a poll last finished without error (epoch ms).
    pub last_reconciled_at: Option<i64>,
    pub last_attempt_at: i64,
    /// Why the last poll failed, if it did.
    pub last_error: Option<String>,
    /// Records the last successful poll read.
    pub last_read: u64,
    /// Deployments the last successful poll was the first to see.
    pub last_found: u64,
    /// Deployments this scope's polls were the first to see, ever.
    #[serde(default)]
    pub missed_by_webhooks: u64,
}

/// The settings key prefix of every scope's state.
pub const STATE_PREFIX: &str = "reconcile.state.";

/// Starts one polling task per configured scope; they end when `stopping` turns true.
pub fn spawn(
    store: &Store,
    ingest: &Ingest,
    configs: &[ReconcileConfig],
    replica: &str,
    stopping: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    for config in configs {
        let (api, scopes) = config.scopes()?;
        for scope in scopes {
            let poller = Poller {
                store: store.clone(),
                ingest: ingest.clone(),
                api: api.clone(),
                scope,
                interval: Duration::from_secs(config.interval_seconds),
                replica: replica.to_string(),
            };
            tasks.push(tokio::spawn(poller.run(stopping.clone())));
        }
    }
    Ok(tasks)
}

/// The poll loop of one scope.
struct Poller {
    store: Store,
    ingest: Ingest,
    api: Api,
    scope: Scope,
    interval: Duration,
    replica: String,
}

impl Poller {
    async fn run(self, mut stopping: watch::Receiver<bool>) {
        let mut failures = 0u32;
        while !*stopping.borrow() {
            let lease = self.take_lease().await;
            let wait = match lease {
                Ok(true) => match self.poll_holding_lease().await {
                    Ok(()) => {
                        failures = 0;
                        self.interval
                    }
                    Err(()) => {
                        failures += 1;
                        Duration::from_secs(5u64.saturating_mul(1 << failures.min(10))).min(self.interval)
                    }
                },
                Ok(false) => self.interval,
                Err(error) => {
                    tracing::warn!(%error, scope = self.scope.name(), "reconciliation could not take its lease");
                    self.interval
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.changed() => {}
            }
        }
    }

    /// Takes or renews this scope's lease for an interval and a half: this replica renews it
    /// at its next poll (and during a long one); another takes over only when this one stops.
    async fn take_lease(&self) -> Result<bool, crate::store::StoreError> {
        let now = now_millis();
        let until = now + (self.interval.as_millis() as i64) * 3 / 2;
        self.store
            .take_lease(&self.scope.key("reconcile.lease"), &self.replica, until, now)
            .await
    }

    /// A poll, renewing the lease every half interval while it runs (a rate-limit wait can
    /// outlast the lease), so no other replica polls the scope meanwhile.
    async fn poll_holding_lease(&self) -> Result<(), ()> {
        let renew = async {
            loop {
                tokio::time::sleep(self.interval / 2).await;
                if let Err(error) = self.take_lease().await {
                    tracing::warn!(%error, scope = self.scope.name(), "reconciliation could not renew its lease");
                }
            }
        };
        tokio::select! {
            result = self.poll() => result,
            () = renew => Ok(()),
        }
    }

    /// One poll: read what changed, apply it, store the state and the metrics.
    async fn poll(&self) -> Result<(), ()> {
        let importer = Importer {
            ingest: &self.ingest,
            store: &self.store,
            api: &self.api,
            kind: Discovery::Reconcile,
            since: None,
        };
        let (source, name) = (self.scope.source(), self.scope.name());
        let waiting = |message: &str| tracing::info!(source, scope = name, "{message}");
        let result = importer.run(&self.scope, &|_| {}, &waiting).await;
        let key = self.scope.key("reconcile.state");
        let mut state: ScopeState = match self.store.setting(&key).await {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
            _ => ScopeState::default(),
        };
        state.source = source.to_string();
        state.scope = name.to_string();
        state.instance = self.scope.instance().to_string();
        state.last_attempt_at = now_millis();
        let outcome = match &result {
            Ok(summary) => {
                record_success(&mut state, summary);
                "ok"
            }
            Err(error) => {
                tracing::warn!(source, scope = name, %error, "reconciliation failed; retrying with backoff");
                state.last_error = Some(error.to_string());
                "error"
            }
        };
        metrics::counter!("shiplog_reconcile_polls_total", "source" => source, "outcome" => outcome)
            .increment(1);
        if let Ok(json) = serde_json::to_string(&state)
            && let Err(error) = self.store.put_setting(&key, &json).await
        {
            tracing::warn!(%error, "could not store the reconciliation state");
        }
        // Two instances of one tool (a GitLab.com group and a self-managed GitLab) can share a
        // scope's name: the instance tells their series apart.
        let labels = [
            ("source", source.to_string()),
            ("scope", name.to_string()),
            ("instance", state.instance.clone()),
        ];
        metrics::gauge!("shiplog_reconcile_missed_deployments", &labels).set(state.missed_by_webhooks as f64);
        if let Some(at) = state.last_reconciled_at {
            metrics::gauge!("shiplog_reconcile_last_success_timestamp_seconds", &labels)
                .set(at as f64 / 1000.0);
        }
        result.map(|_| ()).map_err(|_| ())
    }
}

fn record_success(state: &mut ScopeState, summary: &Summary) {
    state.last_reconciled_at = Some(state.last_attempt_at);
    state.last_error = None;
    state.last_read = summary.read;
    state.last_found = summary.new;
    state.missed_by_webhooks += summary.new;
    if summary.new > 0 {
        tracing::warn!(
            source = %state.source,
            scope = %state.scope,
            found = summary.new,
            "reconciliation found deployments no webhook announced: check the tool's webhook to shiplog"
        );
    }
}
