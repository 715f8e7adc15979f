//! CircleCI (`POST /webhooks/circleci`): outbound webhooks, `workflow-completed` and
//! `job-completed`.
//!
//! Which workflows (or jobs) are deployments, of what and to where, is configuration
//! (`[circleci]`, like Jenkins' rules): by default a workflow whose name says deploy or release
//! is a deployment of the project, to the environment its name names (or the default). Both
//! events fire when something finished, so a CircleCI deployment is born terminal.
//!
//! Quirks kept: `circleci-signature` lists comma-separated `v1=<hex>` signatures (only `v1`
//! exists); two payload families, `pipeline.vcs` (GitHub OAuth, Bitbucket Cloud) and
//! `pipeline.trigger_parameters` (GitLab, GitHub App, Bitbucket Data Center); times with
//! milliseconds or microseconds, and Go's `2024-12-18 17:23:29.361740256 +0000 UTC` in
//! `trigger_parameters.circleci.event_time`; `canceled` with one l; empty strings for "none"
//! (`workflow.url`, `project.name`); a job event's `workflow.status` is absent.

use regex::Regex;
use serde_json::Value;

use super::json::{self, name, sha, text, time, truncate};
use super::{Accepted, Auth, BuiltIn, Delivery, Encoding, Parsed, Signature, Source, SourceError, body_key};
use crate::domain::catalog::{REPOSITORY_TAG, Repository};
use crate::domain::{DeploymentStatus, Observation};

/// The registry's entry; `[circleci]` is its section.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "circleci",
    build: |section| super::built("circleci", Circleci::new(section.get()?)),
};

/// The `[circleci]` table: which workflows and jobs are deployments.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircleciConfig {
    /// Workflows whose name matches count as deployments.
    pub deployment_workflows: String,
    /// Jobs whose name matches count as deployments (none by default: their workflow counts).
    pub deployment_jobs: Option<String>,
    /// A regex with an `environment` capture tried on the workflow (or job) name.
    pub environment_from_name: String,
    /// The environment when the name names none.
    pub default_environment: String,
}

impl Default for CircleciConfig {
    fn default() -> Self {
        Self {
            deployment_workflows: r"(?i)deploy|release".into(),
            deployment_jobs: None,
            environment_from_name: r"(?i)(?:^|[-_./ ])(?P<environment>prod|production|staging|stage|stg|dev|development|qa|uat|preprod)(?:$|[-_./ ])".into(),
            default_environment: "production".into(),
        }
    }
}

/// The CircleCI source, with its compiled rules.
pub struct Circleci {
    deployment_workflows: Regex,
    deployment_jobs: Option<Regex>,
    environment_from_name: Regex,
    default_environment: String,
    auth: Auth,
}

impl Circleci {
    /// Compiles the rules.
    pub fn new(config: CircleciConfig) -> Result<Self, String> {
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
            auth: Auth::Hmac(Signature {
                header: "circleci-signature".into(),
                encoding: Encoding::Hex,
                prefix: "v1=".into(),
            }),
        })
    }
}

/// A workflow's or job's status word. `unauthorized` (a restricted context refused the
/// pipeline) means nothing ran: CANCELLED, so it does not count as a failed change in DORA.
pub fn status(word: &str) -> DeploymentStatus {
    match word {
        "success" => DeploymentStatus::Succeeded,
        // `error`: the workflow could not run (a configuration error): the change broke it.
        "failed" | "error" | "failing" | "infrastructure_fail" | "timedout" => DeploymentStatus::Failed,
        "canceled" | "cancelled" | "unauthorized" | "not_run" => DeploymentStatus::Cancelled,
        "running" => DeploymentStatus::Running,
        "on_hold" | "queued" | "blocked" | "not_running" => DeploymentStatus::Queued,
        _ => DeploymentStatus::Unknown,
    }
}

impl Source for Circleci {
    fn name(&self) -> &str {
        "circleci"
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        let event = json::object(delivery.body, "a CircleCI webhook event")?;
        // The header names the kind; an old sample's body said `workflow-completed` for a job.
        let kind = delivery
            .headers
            .get("circleci-event-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| text(&event, "/type"))
            .unwrap_or_default();
        let parsed = match kind.as_str() {
            "job-completed" if event.get("job").is_some() => self.job(&event, delivery.received_at)?,
            "workflow-completed" | "job-completed" => self.workflow(&event, delivery.received_at)?,
            other => Parsed::Ignored(format!("`{}` events describe no deployment", truncate(other))),
        };
        Ok(Accepted {
            // The payload's `id` is the event's: CircleCI may send one more than once.
            key: text(&event, "/id")
                .filter(|id| id.len() <= 255)
                .map(|id| format!("event:{id}"))
                .unwrap_or_else(|| body_key(delivery.body)),
            redacted: None,
            rule: Some(
                match kind.as_str() {
                    "job-completed" if event.get("job").is_some() => "circleci.deployment_jobs",
                    _ => "circleci.deployment_workflows",
                }
                .into(),
            ),
            parsed,
        })
    }

    fn journaled_headers(&self) -> &[&str] {
        &["content-type", "user-agent", "circleci-event-type"]
    }
}

impl Circleci {
    fn workflow(&self, event: &Value, received_at: i64) -> Result<Parsed, SourceError> {
        let workflow = name(text(event, "/workflow/name"), "workflow.name")?;
        if !self.deployment_workflows.is_match(&workflow) {
            return Ok(ignored("workflow", &workflow, "deployment_workflows"));
        }
        let raw_status = name(text(event, "/workflow/status"), "workflow.status")?;
        self.observation(event, &workflow, "/workflow", raw_status, received_at)
    }

    fn job(&self, event: &Value, received_at: i64) -> Result<Parsed, SourceError> {
        let job = name(text(event, "/job/name"), "job.name")?;
        if !self
            .deployment_jobs
            .as_ref()
            .is_some_and(|rule| rule.is_match(&job))
        {
            return Ok(ignored("job", &job, "deployment_jobs"));
        }
        let raw_status = name(text(event, "/job/status"), "job.status")?;
        self.observation(event, &job, "/job", raw_status, received_at)
    }

    /// The deployment a workflow (or job, at `entity`) finished.
    fn observation(
        &self,
        event: &Value,
        named: &str,
        entity: &str,
        raw_status: String,
        received_at: i64,
    ) -> Result<Parsed, SourceError> {
        let status = status(&raw_status);
        let at = |field: &str| time(event, &format!("{entity}/{field}"));
        let started = if entity == "/job" {
            at("started_at")?
        } else {
            at("created_at")?
        };
        let stopped = at("stopped_at")?;
        let happened = time(event, "/happened_at")?;
        let times_estimated = stopped.or(happened).is_none();
        let occurred_at = stopped.or(happened).unwrap_or(received_at);
        let pipeline = event.get("pipeline").cloned().unwrap_or(Value::Null);
        let environment = self
            .environment_from_name
            .captures(named)
            .and_then(|c| c.name("environment"))
            .map_or_else(|| self.default_environment.clone(), |m| m.as_str().to_string());
        // Job and workflow events both carry the workflow.
        let tags = present(event, "/workflow/name")
            .and_then(|workflow| crate::domain::tags::checked("workflow", &workflow).ok())
            .into_iter()
            .chain(repository(event, &pipeline).map(|r| (REPOSITORY_TAG.to_string(), r.key())))
            .collect();
        Ok(Parsed::Deployments(vec![Observation {
            tags,
            note: None,
            environment_url: None,
            external_id: name(
                text(event, &format!("{entity}/id")),
                &format!("{}.id", &entity[1..]),
            )?,
            system: name(
                present(event, "/project/name").or_else(|| present(event, "/project/slug")),
                "project.slug",
            )?,
            environment,
            environment_tier: None,
            status,
            raw_status,
            occurred_at,
            started_at: started,
            finished_at: status.is_terminal().then_some(occurred_at),
            commit_sha: commit(&pipeline),
            git_ref: git_ref(&pipeline),
            version: None,
            url: present(event, "/workflow/url"),
            actor: actor(&pipeline),
            tenant: None,
            committed_at: time(&pipeline, "/vcs/commit/committed_at")?,
            origin: None,
            times_estimated,
        }]))
    }
}

fn ignored(what: &str, named: &str, rule: &str) -> Parsed {
    Parsed::Ignored(format!(
        "{what} `{}` does not look like a deployment ([circleci] {rule})",
        truncate(named)
    ))
}

/// The repository the pipeline built: the VCS's URL (GitHub OAuth projects), the GitLab
/// trigger's (GitHub App and GitLab projects), else an OAuth project's slug (`gh/org/repo`,
/// `github/org/repo`; a GitHub App project's slug is ids, not a repository).
fn repository(event: &Value, pipeline: &Value) -> Option<Repository> {
    [
        "/vcs/target_repository_url",
        "/vcs/origin_repository_url",
        "/trigger_parameters/gitlab/web_url",
        "/trigger_parameters/gitlab/repo_url",
        "/trigger_parameters/git/checkout_url",
    ]
    .iter()
    .find_map(|pointer| present(pipeline, pointer).and_then(|url| Repository::from_url(&url)))
    .or_else(|| {
        let slug = present(event, "/project/slug")?;
        let (vcs, path) = slug.split_once('/')?;
        let host = match vcs {
            "gh" | "github" => "github",
            "gl" | "gitlab" => "gitlab",
            _ => return None,
        };
        Repository::parse(&format!("{host}:{path}")).ok()
    })
}

/// Text that is there and not empty.
fn present(value: &Value, pointer: &str) -> Option<String> {
    text(value, pointer).filter(|t| !t.is_empty())
}

/// The commit, from whichever payload family this is.
fn commit(pipeline: &Value) -> Option<String> {
    [
        "/vcs/revision",
        "/trigger_parameters/git/checkout_sha",
        "/trigger_parameters/gitlab/checkout_sha",
        "/trigger_parameters/gitlab/commit_sha",
        "/trigger_parameters/github_app/commit_sha",
    ]
    .iter()
    .find_map(|pointer| sha(present(pipeline, pointer)))
}

/// The branch or tag, bare (`refs/heads/` removed).
fn git_ref(pipeline: &Value) -> Option<String> {
    [
        "/vcs/branch",
        "/vcs/tag",
        "/trigger_parameters/git/branch",
        "/trigger_parameters/git/tag",
        "/trigger_parameters/git/ref",
        "/trigger_parameters/github_app/ref",
    ]
    .iter()
    .find_map(|pointer| present(pipeline, pointer))
    .map(|r| {
        r.strip_prefix("refs/heads/")
            .or_else(|| r.strip_prefix("refs/tags/"))
            .map_or(r.clone(), str::to_string)
    })
}

/// Who triggered the pipeline: the provider's user name, else the commit's author.
fn actor(pipeline: &Value) -> Option<String> {
    [
        "/trigger_parameters/gitlab/user_username",
        "/trigger_parameters/github_app/user_username",
        "/trigger_parameters/git/author_login",
        "/vcs/commit/author/name",
    ]
    .iter()
    .find_map(|pointer| present(pipeline, pointer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_word_is_mapped() {
        assert_eq!(status("success"), DeploymentStatus::Succeeded);
        assert_eq!(status("failed"), DeploymentStatus::Failed);
        assert_eq!(status("error"), DeploymentStatus::Failed);
        assert_eq!(status("canceled"), DeploymentStatus::Cancelled);
        assert_eq!(status("unauthorized"), DeploymentStatus::Cancelled);
        assert_eq!(status("exploded"), DeploymentStatus::Unknown);
    }

    #[test]
    fn go_formatted_event_times_parse() {
        let value = serde_json::json!({ "t": "2024-12-18 17:23:29.361740256 +0000 UTC" });
        assert_eq!(time(&value, "/t").unwrap(), Some(1_734_542_609_361));
    }
}
