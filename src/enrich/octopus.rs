//! Octopus Deploy REST API: precise start and finish times, the deploying user, the release
//! version and commits, for a deployment a subscription webhook told us about. Optional:
//! without `SHIPLOG_OCTOPUS_API_KEY` the webhook's own message is enough.
//!
//! `GET /api/{space}/deployments/{id}` -> `TaskId`, `ReleaseId`, `DeployedBy`, `Created`;
//! `GET /api/tasks/{TaskId}` -> `StartTime`, `CompletedTime`;
//! `GET /api/{space}/releases/{ReleaseId}` -> `Version`, `VersionControlReference.GitCommit`,
//! `BuildInformation[].VcsCommitNumber`. The key travels as `X-Octopus-ApiKey`.

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{EnrichError, Enricher, get_json, http_client};
use crate::domain::{Observation, parse_instant};

/// An Octopus API client.
pub struct OctopusApi {
    /// Overrides the payload's `ServerUri` (a private address, a proxy).
    base: Option<String>,
    key: String,
    http: reqwest::Client,
}

impl OctopusApi {
    /// A client; `base` None means "the server that sent the webhook".
    pub fn new(base: Option<&str>, key: &str) -> Self {
        Self {
            base: base.map(|b| b.trim_end_matches('/').to_string()),
            key: key.to_string(),
            http: http_client(),
        }
    }

    async fn get(&self, base: &str, path: &str) -> Result<Option<Value>, EnrichError> {
        let url = format!("{base}{path}");
        Ok(get_json("Octopus", "SHIPLOG_OCTOPUS_API_KEY", path, || {
            self.http.get(&url).header("X-Octopus-ApiKey", &self.key)
        })
        .await?
        .body)
    }

    async fn complete(&self, base: &str, mut observation: Observation) -> Result<Observation, EnrichError> {
        let Some((space, deployment_id)) = observation.external_id.split_once('/') else {
            return Ok(observation);
        };
        let (space, deployment_id) = (space.to_string(), deployment_id.to_string());
        let Some(deployment) = self
            .get(base, &format!("/api/{space}/deployments/{deployment_id}"))
            .await?
        else {
            return Ok(observation);
        };
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let time = |v: &Value, key: &str| v.get(key).and_then(|t| parse_instant(t).ok());
        if let Some(user) = text(&deployment, "DeployedBy") {
            observation.actor = Some(user);
        }
        if let Some(task_id) = text(&deployment, "TaskId")
            && let Some(task) = self.get(base, &format!("/api/tasks/{task_id}")).await?
        {
            if let Some(start) = time(&task, "StartTime") {
                observation.started_at = Some(start);
            }
            if observation.status.is_terminal()
                && let Some(end) = time(&task, "CompletedTime")
            {
                observation.finished_at = Some(end);
                observation.occurred_at = end;
            }
        }
        if let Some(release_id) = text(&deployment, "ReleaseId")
            && let Some(release) = self
                .get(base, &format!("/api/{space}/releases/{release_id}"))
                .await?
        {
            if let Some(version) = text(&release, "Version") {
                observation.version = Some(version);
            }
            let commit = release
                .pointer("/VersionControlReference/GitCommit")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    release
                        .get("BuildInformation")
                        .and_then(Value::as_array)
                        .and_then(|items| {
                            items.iter().find_map(|i| {
                                i.get("VcsCommitNumber")
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                            })
                        })
                })
                .filter(|sha| (7..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()));
            if let Some(sha) = commit {
                observation.commit_sha = Some(sha.to_lowercase());
            }
            if let Some(reference) = release
                .pointer("/VersionControlReference/GitRef")
                .and_then(Value::as_str)
            {
                observation.git_ref = Some(reference.trim_start_matches("refs/heads/").to_string());
            }
        }
        Ok(observation)
    }
}

impl Enricher for OctopusApi {
    fn source(&self) -> &'static str {
        "octopus"
    }

    /// Asks the server that sent the event (its `ServerUri`, the observation's origin)
    /// unless `SHIPLOG_OCTOPUS_API_URL` names another.
    fn enrich(&self, observations: Vec<Observation>) -> BoxFuture<'_, Result<Vec<Observation>, EnrichError>> {
        Box::pin(async move {
            let mut done = Vec::with_capacity(observations.len());
            for observation in observations {
                let base = self.base.clone().or_else(|| observation.origin.clone());
                done.push(match base {
                    Some(base) => self.complete(&base, observation).await?,
                    None => observation,
                });
            }
            Ok(done)
        })
    }
}
