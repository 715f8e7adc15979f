//! GitHub (`POST /webhooks/github`): repository (or organization) webhooks.
//!
//! Deployments: `deployment` and `deployment_status` events are one shiplog deployment per
//! GitHub deployment (`externalId` = the deployment id, as GitHub's API names it, so imports
//! merge with webhooks). GitHub Actions jobs that name an `environment:` create those
//! deployments themselves. Workflows without environments arrive as `workflow_run` (and
//! `workflow_job`) events, which count as deployments only by the `[github]` rules, as Jenkins
//! builds do.
//!
//! Quirks kept: `X-GitHub-Event` names the kind (the body is read when it is missing);
//! `action` is absent in GitHub Enterprise Server 3.5 payloads, and `workflow_run` `requested`
//! can already be `completed` (a run waiting for approval), so the status, not the action,
//! decides; `deployment_status.state` is a free string in GitHub's schema (`inactive`, posted on
//! an earlier deployment when a newer one succeeds, is not an outcome of it); empty strings mean
//! "none" (`environment_url: ""`); ids are integers beyond 2^31.

use regex::Regex;
use serde_json::Value;

use super::json::{self, name, sha, text, time, truncate};
use super::{Accepted, Auth, BuiltIn, Delivery, Encoding, Parsed, Signature, Source, SourceError, body_key};
use crate::domain::{DeploymentStatus, Observation};

/// The registry's entry; `[github]` is its section.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "github",
    build: |section| super::built("github", Github::new(section.get()?)),
};

/// The `[github]` table of the TOML file: which workflows (and jobs) are deployments.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubConfig {
    /// Workflow runs whose workflow name matches count as deployments.
    pub deployment_workflows: String,
    /// Workflow jobs whose name matches count as deployments (none by default: a job that
    /// deploys to an environment is a GitHub deployment already, and its workflow run counts).
    pub deployment_jobs: Option<String>,
    /// A regex with an `environment` capture tried on the workflow (or job) name.
    pub environment_from_name: String,
    /// The environment of a counted run whose name names none.
    pub default_environment: String,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            deployment_workflows: r"(?i)deploy|release".into(),
            deployment_jobs: None,
            environment_from_name: r"(?i)(?:^|[-_./ ])(?P<environment>prod|production|staging|stage|stg|dev|development|qa|uat|preprod)(?:$|[-_./ ])".into(),
            default_environment: "production".into(),
        }
    }
}

/// The GitHub source, with its compiled rules.
pub struct Github {
    deployment_workflows: Regex,
    deployment_jobs: Option<Regex>,
    environment_from_name: Regex,
    default_environment: String,
    auth: Auth,
}

impl Github {
    /// Compiles the rules.
    pub fn new(config: GithubConfig) -> Result<Self, String> {
        let compile = |field: &str, pattern: &str| Regex::new(pattern).map_err(|e| format!("{field}: {e}"));
        Ok(Self {
            deployment_workflows: compile("deployment_workflows", &config.deployment_workflows)?,
            deployment_jobs: config
                .deployment_jobs
                .as_deref()
                .map(|p| compile("deployment_jobs", p))
                .transpose()?,
            environment_from_name: compile("environment_from_name", &config.environment_from_name)?,
            default_environment: config.default_environment,
            // `sha256=` + hex HMAC-SHA256 of the raw body (the SHA-1 header is never enough).
            auth: Auth::Hmac(Signature {
                header: "X-Hub-Signature-256".into(),
                encoding: Encoding::Hex,
                prefix: "sha256=".into(),
            }),
        })
    }

    /// The environment a counted workflow or job names, else the default.
    fn environment_of(&self, name: &str) -> String {
        self.environment_from_name
            .captures(name)
            .and_then(|c| c.name("environment"))
            .map_or_else(|| self.default_environment.clone(), |m| m.as_str().to_string())
    }
}

/// A deployment status word as shiplog's status; `inactive` (superseded by a later
/// deployment) is no outcome of this one: UNKNOWN, which never replaces a status.
pub fn deployment_state(word: &str) -> DeploymentStatus {
    match word {
        "queued" | "pending" | "waiting" => DeploymentStatus::Queued,
        "in_progress" => DeploymentStatus::Running,
        "success" => DeploymentStatus::Succeeded,
        "failure" | "error" => DeploymentStatus::Failed,
        _ => DeploymentStatus::Unknown,
    }
}

/// A workflow run's or job's `status` and `conclusion` as shiplog's status.
pub fn run_status(status: &str, conclusion: Option<&str>) -> DeploymentStatus {
    match (status, conclusion) {
        ("completed", Some("success")) => DeploymentStatus::Succeeded,
        ("completed", Some("failure" | "timed_out" | "startup_failure")) => DeploymentStatus::Failed,
        ("completed", Some("cancelled")) => DeploymentStatus::Cancelled,
        // Skipped, neutral, stale, waiting for approval: nothing was deployed (yet).
        ("completed", _) => DeploymentStatus::Unknown,
        ("in_progress", _) => DeploymentStatus::Running,
        ("requested" | "queued" | "waiting" | "pending", _) => DeploymentStatus::Queued,
        _ => DeploymentStatus::Unknown,
    }
}

impl Source for Github {
    fn name(&self) -> &str {
        "github"
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        if super::discovery(delivery.headers) != crate::domain::Discovery::Webhook {
            let record = json::object(delivery.body, "a GitHub API deployment record")?;
            return Ok(Accepted {
                key: body_key(delivery.body),
                redacted: None,
                rule: Some("github.api_deployments".into()),
                parsed: Parsed::Deployments(vec![api_deployment(&record, delivery.received_at)?]),
            });
        }
        let event = json::object(delivery.body, "a GitHub webhook event")?;
        let kind = delivery
            .headers
            .get("x-github-event")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| kind_of(&event).to_string());
        let parsed = match kind.as_str() {
            "ping" => Parsed::Ignored("ping: the webhook reaches shiplog".into()),
            "deployment_status" if transient_and_inactive(&event) => {
                Parsed::Stopped(vec![stop(&event, delivery.received_at)?])
            }
            "deployment" | "deployment_status" => {
                Parsed::Deployments(vec![deployment(&event, &kind, delivery.received_at)?])
            }
            "workflow_run" => self.workflow_run(&event, delivery.received_at)?,
            "workflow_job" => self.workflow_job(&event, delivery.received_at)?,
            other => Parsed::Ignored(format!("`{}` events describe no deployment", truncate(other))),
        };
        Ok(Accepted {
            // A manual redelivery keeps X-GitHub-Delivery.
            key: delivery
                .headers
                .get("x-github-delivery")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 255)
                .map(|id| format!("delivery:{id}"))
                .unwrap_or_else(|| body_key(delivery.body)),
            redacted: None,
            rule: Some(
                match kind.as_str() {
                    "workflow_run" => "github.deployment_workflows",
                    "workflow_job" => "github.deployment_jobs",
                    _ => "github.deployment_events",
                }
                .into(),
            ),
            parsed,
        })
    }

    fn journaled_headers(&self) -> &[&str] {
        &[
            "content-type",
            "user-agent",
            "x-github-event",
            "x-github-delivery",
            "x-github-hook-id",
            "x-github-hook-installation-target-type",
        ]
    }
}

/// The event kind a body is, when no `X-GitHub-Event` header says.
fn kind_of(event: &Value) -> &'static str {
    if event.get("deployment_status").is_some() {
        "deployment_status"
    } else if event.get("workflow_job").is_some() {
        "workflow_job"
    } else if event.get("workflow_run").is_some() && event.get("deployment").is_none() {
        "workflow_run"
    } else if event.get("deployment").is_some() {
        "deployment"
    } else if event.get("zen").is_some() {
        "ping"
    } else {
        "unknown"
    }
}

/// Text that is there and not empty.
fn present(value: &Value, pointer: &str) -> Option<String> {
    text(value, pointer).filter(|t| !t.is_empty())
}

/// A GitHub id (an integer, or its digits).
fn id(value: &Value, pointer: &str) -> Result<String, SourceError> {
    match value.pointer(pointer) {
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Ok(s.clone()),
        _ => Err(SourceError::InvalidPayload(format!(
            "`{}` must be an id (a number)",
            json::dotted(pointer)
        ))),
    }
}

/// A record `shiplog import github` (or reconciliation) read: `{"repository": "owner/app",
/// "deployment": <GET /repos/{owner}/{repo}/deployments item>, "statuses": <its GET
/// .../statuses answer, newest first>}`, read as the `deployment_status` event of its newest
/// status (`inactive` aside: GitHub posts it when a newer deployment succeeds), or as the
/// `deployment` event when it has none.
fn api_deployment(record: &Value, received_at: i64) -> Result<Observation, SourceError> {
    let latest = record
        .get("statuses")
        .and_then(Value::as_array)
        .and_then(|statuses| {
            statuses
                .iter()
                .find(|s| s.get("state").and_then(Value::as_str) != Some("inactive"))
        });
    let event = serde_json::json!({
        "deployment": record.get("deployment"),
        "deployment_status": latest,
        "repository": { "full_name": record.get("repository") },
    });
    let kind = if latest.is_some() {
        "deployment_status"
    } else {
        "deployment"
    };
    deployment(&event, kind, received_at)
}

/// An `inactive` status on a deployment to a transient environment (a review app): GitHub's
/// word that the environment is gone. On a lasting environment `inactive` only says a newer
/// deployment replaced this one.
fn transient_and_inactive(event: &Value) -> bool {
    text(event, "/deployment_status/state").as_deref() == Some("inactive")
        && event
            .pointer("/deployment/transient_environment")
            .and_then(Value::as_bool)
            == Some(true)
}

/// The environment a transient deployment's `inactive` status stopped.
fn stop(event: &Value, received_at: i64) -> Result<crate::sources::EnvironmentStop, SourceError> {
    let (system, environment) = where_deployed(event)?;
    Ok(crate::sources::EnvironmentStop {
        system,
        environment,
        at: time(event, "/deployment_status/created_at")?.unwrap_or(received_at),
    })
}

/// A deployment event's system (the repository) and environment.
fn where_deployed(event: &Value) -> Result<(String, String), SourceError> {
    Ok((
        name(text(event, "/repository/full_name"), "repository.full_name")?,
        name(
            present(event, "/deployment/environment")
                .or_else(|| present(event, "/deployment_status/environment")),
            "deployment.environment",
        )?,
    ))
}

/// A `deployment` or `deployment_status` event about the deployment it carries.
fn deployment(event: &Value, kind: &str, received_at: i64) -> Result<Observation, SourceError> {
    let external_id = id(event, "/deployment/id")?;
    let (status, raw_status, at) = if kind == "deployment_status" {
        let state = name(text(event, "/deployment_status/state"), "deployment_status.state")?;
        (
            deployment_state(&state),
            state,
            time(event, "/deployment_status/created_at")?,
        )
    } else {
        // A deployment was created: nothing ran yet.
        (
            DeploymentStatus::Queued,
            "created".to_string(),
            time(event, "/deployment/created_at")?,
        )
    };
    let times_estimated = at.is_none();
    let occurred_at = at.unwrap_or(received_at);
    let production = event
        .pointer("/deployment/production_environment")
        .and_then(Value::as_bool);
    let (system, environment) = where_deployed(event)?;
    Ok(Observation {
        tags: Default::default(),
        note: None,
        environment_url: present(event, "/deployment_status/environment_url")
            .filter(|u| u.starts_with("http")),
        external_id,
        system,
        environment,
        environment_tier: production.and_then(|p| p.then(|| "production".to_string())),
        status,
        raw_status,
        occurred_at,
        started_at: (status == DeploymentStatus::Running).then_some(occurred_at),
        finished_at: status.is_terminal().then_some(occurred_at),
        commit_sha: sha(text(event, "/deployment/sha")),
        git_ref: present(event, "/deployment/ref"),
        version: None,
        url: ["log_url", "target_url", "environment_url"]
            .iter()
            .find_map(|field| present(event, &format!("/deployment_status/{field}"))),
        actor: present(event, "/deployment/creator/login")
            .or_else(|| present(event, "/deployment_status/creator/login"))
            .or_else(|| present(event, "/sender/login")),
        tenant: None,
        committed_at: None,
        origin: None,
        times_estimated,
    })
}

impl Github {
    /// A workflow run: a deployment when its workflow's name says so.
    fn workflow_run(&self, event: &Value, received_at: i64) -> Result<Parsed, SourceError> {
        let run = event
            .get("workflow_run")
            .filter(|r| r.is_object())
            .ok_or_else(|| SourceError::InvalidPayload("`workflow_run` is required (an object)".into()))?;
        // The run's name is the workflow's; some payloads leave it empty.
        let workflow = name(
            present(run, "/name")
                .or_else(|| present(event, "/workflow/name"))
                .or_else(|| present(run, "/path")),
            "workflow_run.name",
        )?;
        if !self.deployment_workflows.is_match(&workflow) {
            return Ok(Parsed::Ignored(format!(
                "workflow `{}` does not look like a deployment ([github] deployment_workflows)",
                truncate(&workflow)
            )));
        }
        let attempt = text(run, "/run_attempt").unwrap_or_else(|| "1".into());
        let status_word = name(text(run, "/status"), "workflow_run.status")?;
        let conclusion = present(run, "/conclusion");
        let status = run_status(&status_word, conclusion.as_deref());
        let updated = time(run, "/updated_at")?;
        let started = time(run, "/run_started_at")?;
        let occurred_at = if status == DeploymentStatus::Running {
            started.or(updated)
        } else {
            updated
        };
        let times_estimated = occurred_at.is_none();
        let occurred_at = occurred_at.unwrap_or(received_at);
        Ok(Parsed::Deployments(vec![Observation {
            tags: workflow_tag(Some(workflow.clone())),
            note: None,
            environment_url: None,
            // Each attempt of a run is a deployment of its own (a re-run keeps the run's id).
            external_id: format!("run:{}:{attempt}", id(run, "/id")?),
            system: name(text(event, "/repository/full_name"), "repository.full_name")?,
            environment: self.environment_of(&workflow),
            environment_tier: None,
            status,
            raw_status: conclusion.unwrap_or(status_word),
            occurred_at,
            started_at: started.filter(|_| status != DeploymentStatus::Queued),
            finished_at: status.is_terminal().then_some(occurred_at),
            commit_sha: sha(text(run, "/head_sha")),
            git_ref: present(run, "/head_branch"),
            version: None,
            url: present(run, "/html_url"),
            actor: present(run, "/triggering_actor/login").or_else(|| present(run, "/actor/login")),
            tenant: None,
            committed_at: time(run, "/head_commit/timestamp")?,
            origin: None,
            times_estimated,
        }]))
    }

    /// A workflow job: a deployment only when `[github] deployment_jobs` names it, and not
    /// when it deploys to an environment (its GitHub deployment reports it).
    fn workflow_job(&self, event: &Value, received_at: i64) -> Result<Parsed, SourceError> {
        if event.get("deployment").is_some_and(Value::is_object) {
            return Ok(Parsed::Ignored(
                "the job deploys to an environment: its deployment_status events report it".into(),
            ));
        }
        let job = event
            .get("workflow_job")
            .filter(|j| j.is_object())
            .ok_or_else(|| SourceError::InvalidPayload("`workflow_job` is required (an object)".into()))?;
        let job_name = name(present(job, "/name"), "workflow_job.name")?;
        if !self
            .deployment_jobs
            .as_ref()
            .is_some_and(|rule| rule.is_match(&job_name))
        {
            return Ok(Parsed::Ignored(format!(
                "job `{}` is not a deployment ([github] deployment_jobs)",
                truncate(&job_name)
            )));
        }
        let status_word = name(text(job, "/status"), "workflow_job.status")?;
        let conclusion = present(job, "/conclusion");
        let status = run_status(&status_word, conclusion.as_deref());
        let started = time(job, "/started_at")?;
        let completed = time(job, "/completed_at")?;
        let created = time(job, "/created_at")?;
        // A job that never ran has only its creation time: not when it ended.
        let reported = match status {
            s if s.is_terminal() => completed,
            DeploymentStatus::Running => started,
            _ => created,
        };
        let times_estimated = reported.is_none();
        let occurred_at = reported.or(created).unwrap_or(received_at);
        Ok(Parsed::Deployments(vec![Observation {
            tags: workflow_tag(present(job, "/workflow_name")),
            note: None,
            environment_url: None,
            external_id: format!("job:{}", id(job, "/id")?),
            system: name(text(event, "/repository/full_name"), "repository.full_name")?,
            environment: self.environment_of(&job_name),
            environment_tier: None,
            status,
            raw_status: conclusion.unwrap_or(status_word),
            occurred_at,
            started_at: started.filter(|_| status != DeploymentStatus::Queued),
            finished_at: completed.filter(|_| status.is_terminal()),
            commit_sha: sha(text(job, "/head_sha")),
            git_ref: present(job, "/head_branch"),
            version: None,
            url: present(job, "/html_url"),
            actor: present(event, "/sender/login"),
            tenant: None,
            committed_at: None,
            origin: None,
            times_estimated,
        }]))
    }
}

/// The `workflow` tag of a run or job, when it has a name a tag can hold.
fn workflow_tag(workflow: Option<String>) -> std::collections::BTreeMap<String, String> {
    workflow
        .and_then(|name| crate::domain::tags::checked("workflow", &name).ok())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_state_is_mapped_and_inactive_changes_nothing() {
        for (word, expected) in [
            ("queued", DeploymentStatus::Queued),
            ("pending", DeploymentStatus::Queued),
            ("waiting", DeploymentStatus::Queued),
            ("in_progress", DeploymentStatus::Running),
            ("success", DeploymentStatus::Succeeded),
            ("failure", DeploymentStatus::Failed),
            ("error", DeploymentStatus::Failed),
            ("inactive", DeploymentStatus::Unknown),
        ] {
            assert_eq!(deployment_state(word), expected, "{word}");
        }
        assert_eq!(
            DeploymentStatus::Unknown.progress(),
            0,
            "UNKNOWN never replaces a status"
        );
    }

    #[test]
    fn runs_are_decided_by_status_and_conclusion_never_by_action() {
        assert_eq!(
            run_status("completed", Some("success")),
            DeploymentStatus::Succeeded
        );
        assert_eq!(
            run_status("completed", Some("timed_out")),
            DeploymentStatus::Failed
        );
        assert_eq!(
            run_status("completed", Some("startup_failure")),
            DeploymentStatus::Failed
        );
        assert_eq!(
            run_status("completed", Some("cancelled")),
            DeploymentStatus::Cancelled
        );
        assert_eq!(
            run_status("completed", Some("action_required")),
            DeploymentStatus::Unknown
        );
        assert_eq!(
            run_status("completed", Some("skipped")),
            DeploymentStatus::Unknown
        );
        assert_eq!(run_status("in_progress", None), DeploymentStatus::Running);
        assert_eq!(run_status("requested", None), DeploymentStatus::Queued);
    }
}
