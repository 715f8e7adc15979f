//! Jenkins (`POST /webhooks/jenkins`), through the Notification plugin's JSON.
//!
//! The plugin sends one message per build phase (QUEUED, STARTED, COMPLETED, FINALIZED);
//! `build.status` is absent until the build completes; `timestamp` and `duration` are epoch
//! milliseconds (STARTED: the build's start; COMPLETED: start + duration; FINALIZED: the time
//! of sending). It cannot sign: the secret travels as the Basic-auth password (credentials in
//! the endpoint URL) or as a `token` query parameter, and is never journaled or logged.
//!
//! Which builds are deployments, and of which system to which environment, is configuration
//! (`[jenkins]` in the TOML file) with defaults that fit common job layouts.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use super::json::{self, sha};
use super::{Accepted, Auth, BuiltIn, Delivery, Parsed, Source, SourceError};
use crate::domain::{DeploymentStatus, MAX_NAME_LEN, MAX_TEXT_LEN, Observation};

/// The registry's entry; `[jenkins]` is its section.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "jenkins",
    build: |section| super::built("jenkins", Jenkins::new(section.get()?)),
};

/// The `[jenkins]` table of the TOML file.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JenkinsConfig {
    /// Build parameters that name the environment, first found wins.
    pub environment_parameters: Vec<String>,
    /// Build parameters that name the system, first found wins (else the job's full name).
    pub system_parameters: Vec<String>,
    /// Build parameters that carry the version.
    pub version_parameters: Vec<String>,
    /// A regex with an `environment` capture group, tried on the job name when no parameter
    /// names the environment.
    pub environment_from_job: String,
    /// A regex with a `system` capture group tried on the job name (else the full job name).
    pub system_from_job: Option<String>,
    /// Jobs whose name matches count as deployments even without an environment.
    pub deployment_jobs: String,
    /// The environment of such builds when nothing names one.
    pub default_environment: String,
}

impl Default for JenkinsConfig {
    fn default() -> Self {
        Self {
            environment_parameters: ["ENVIRONMENT", "ENV", "DEPLOY_ENV", "TARGET_ENV", "STAGE"]
                .map(String::from)
                .to_vec(),
            system_parameters: ["APP", "SERVICE", "SYSTEM"].map(String::from).to_vec(),
            version_parameters: ["VERSION", "RELEASE_VERSION", "TAG"].map(String::from).to_vec(),
            environment_from_job: r"(?i)(?:^|[-_./ ])(?P<environment>prod|production|staging|stage|stg|dev|development|qa|test|uat|preprod)(?:$|[-_./ ])".into(),
            system_from_job: None,
            deployment_jobs: r"(?i)deploy|release".into(),
            default_environment: "unknown".into(),
        }
    }
}

/// The Jenkins source, with its compiled rules.
pub struct Jenkins {
    config: JenkinsConfig,
    environment_from_job: Regex,
    system_from_job: Option<Regex>,
    deployment_jobs: Regex,
    auth: Auth,
}

/// Why the `[jenkins]` rules do not compile.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct RuleError {
    pub field: &'static str,
    pub source: regex::Error,
}

impl Jenkins {
    /// Compiles the rules.
    pub fn new(config: JenkinsConfig) -> Result<Self, RuleError> {
        let compile = |field: &'static str, pattern: &str| {
            Regex::new(pattern).map_err(|source| RuleError { field, source })
        };
        Ok(Self {
            environment_from_job: compile("environment_from_job", &config.environment_from_job)?,
            system_from_job: config
                .system_from_job
                .as_deref()
                .map(|p| compile("system_from_job", p))
                .transpose()?,
            deployment_jobs: compile("deployment_jobs", &config.deployment_jobs)?,
            config,
            // The plugin cannot sign: the secret is the password of the endpoint URL's
            // credentials, or a `token` parameter in it.
            auth: Auth::AnyOf(vec![Auth::Basic, Auth::Query("token".into())]),
        })
    }
}

/// A Jenkins `Result` (or, before completion, the phase) as a status.
pub fn status(phase: &str, result: Option<&str>) -> DeploymentStatus {
    match (phase, result) {
        (_, Some("SUCCESS")) => DeploymentStatus::Succeeded,
        // Completed with test failures: the build (and its deploy steps) ran to the end.
        (_, Some("UNSTABLE")) => DeploymentStatus::Succeeded,
        (_, Some("FAILURE")) => DeploymentStatus::Failed,
        (_, Some("ABORTED" | "NOT_BUILT")) => DeploymentStatus::Cancelled,
        (_, Some(_)) => DeploymentStatus::Unknown,
        ("QUEUED", None) => DeploymentStatus::Queued,
        ("STARTED", None) => DeploymentStatus::Running,
        _ => DeploymentStatus::Unknown,
    }
}

impl Source for Jenkins {
    fn name(&self) -> &str {
        "jenkins"
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        let value = json::object(delivery.body, "the Notification plugin's JSON")?;
        // No delivery id: a build's phase is sent once (retries re-send the same message).
        let field = |p: &str| value.pointer(p).map(|v| v.to_string()).unwrap_or_default();
        let key = format!(
            "{}#{}#{}",
            field("/name"),
            field("/build/number"),
            field("/build/phase")
        );
        Ok(Accepted {
            key,
            redacted: None,
            parsed: self.parse(&value, delivery.received_at)?,
        })
    }

    fn journaled_headers(&self) -> &[&str] {
        &["content-type", "user-agent"]
    }
}

impl Jenkins {
    /// One build phase as an observation, when the rules make the build a deployment.
    fn parse(&self, value: &Value, received_at: i64) -> Result<Parsed, SourceError> {
        let job = job_name(value)?;
        let build = value
            .get("build")
            .filter(|b| b.is_object())
            .ok_or_else(|| SourceError::InvalidPayload("`build` is required (an object)".into()))?;
        let number = build_number(build)?;
        let phase = build.get("phase").and_then(Value::as_str).ok_or_else(|| {
            SourceError::InvalidPayload(
                "`build.phase` is required (QUEUED, STARTED, COMPLETED, FINALIZED)".into(),
            )
        })?;
        let result = build.get("status").and_then(Value::as_str);
        let parameters = parameters(build);
        let parameter = |names: &[String]| {
            names
                .iter()
                .find_map(|n| parameters.get(&n.to_uppercase()).cloned())
        };
        let environment = parameter(&self.config.environment_parameters).or_else(|| {
            self.environment_from_job
                .captures(&job)
                .and_then(|c| c.name("environment"))
                .map(|m| m.as_str().to_string())
        });
        let counts = environment.is_some() || self.deployment_jobs.is_match(&job);
        if !counts {
            return Ok(Parsed::Ignored(format!(
                "job `{}` names no environment and does not look like a deployment ([jenkins] rules)",
                job.chars().take(64).collect::<String>()
            )));
        }
        let system = parameter(&self.config.system_parameters)
            .or_else(|| {
                self.system_from_job
                    .as_ref()
                    .and_then(|r| r.captures(&job))
                    .and_then(|c| c.name("system"))
                    .map(|m| m.as_str().to_string())
            })
            .unwrap_or_else(|| job.clone());
        let status = status(phase, result);
        let raw_status = result.unwrap_or(phase).to_string();
        let timestamp = build.get("timestamp").and_then(Value::as_i64);
        let duration = build.get("duration").and_then(Value::as_i64).filter(|d| *d >= 0);
        let (started_at, finished_at) = phase_times(phase, timestamp, duration);
        let occurred_at = finished_at.or(started_at).or(timestamp).unwrap_or(received_at);
        let (commit_sha, git_ref) = scm(build);
        Ok(Parsed::Deployments(vec![Observation {
            external_id: format!("{job}#{number}"),
            system: system.chars().take(MAX_NAME_LEN).collect(),
            environment: environment
                .unwrap_or_else(|| self.config.default_environment.clone())
                .chars()
                .take(MAX_NAME_LEN)
                .collect(),
            environment_tier: None,
            status,
            raw_status,
            occurred_at,
            started_at,
            finished_at: if status.is_terminal() { finished_at } else { None },
            commit_sha,
            git_ref,
            version: parameter(&self.config.version_parameters),
            url: build.get("full_url").and_then(Value::as_str).map(str::to_string),
            actor: parameter(&["BUILD_USER_ID".to_string(), "BUILD_USER".to_string()]),
            tenant: None,
            committed_at: None,
            origin: None,
        }]))
    }
}

/// The job's name, as the plugin sends it.
fn job_name(value: &Value) -> Result<String, SourceError> {
    match value.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() && name.len() <= MAX_NAME_LEN => {
            Ok(name.trim().to_string())
        }
        Some(Value::String(name)) if name.len() > MAX_NAME_LEN => Err(SourceError::InvalidPayload(format!(
            "`name` is longer than {MAX_NAME_LEN} bytes"
        ))),
        _ => Err(SourceError::InvalidPayload(
            "`name` (the job's full name) is required: send the Notification plugin's JSON format".into(),
        )),
    }
}

/// The build number (a number, or digits in a string).
fn build_number(build: &Value) -> Result<String, SourceError> {
    match build.get("number") {
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Ok(s.clone()),
        _ => Err(SourceError::InvalidPayload(
            "`build.number` is required (a number)".into(),
        )),
    }
}

/// The build's parameters by upper-cased name (text, numbers and booleans as text).
fn parameters(build: &Value) -> BTreeMap<String, String> {
    build
        .get("parameters")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.trim().to_string(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    (!text.is_empty() && text.len() <= MAX_TEXT_LEN).then(|| (k.to_uppercase(), text))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The commit and branch the build's SCM section names (Jenkins reports remote branches,
/// `origin/master`).
fn scm(build: &Value) -> (Option<String>, Option<String>) {
    let scm = build.get("scm");
    let scm_text = |field: &str| {
        scm.and_then(|s| s.get(field))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let branch = scm_text("branch").map(|b| b.strip_prefix("origin/").map(str::to_string).unwrap_or(b));
    (sha(scm_text("commit")), branch)
}

/// The start and finish a phase's `timestamp` (and `duration`) tell.
fn phase_times(phase: &str, timestamp: Option<i64>, duration: Option<i64>) -> (Option<i64>, Option<i64>) {
    match (phase, timestamp, duration) {
        ("STARTED", Some(t), _) => (Some(t), None),
        ("COMPLETED", Some(t), Some(d)) => (Some(t - d), Some(t)),
        ("COMPLETED", Some(t), None) => (None, Some(t)),
        // FINALIZED's timestamp is the time of sending, after post-build steps.
        ("FINALIZED", Some(t), _) => (None, Some(t)),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_phase_until_a_result_exists() {
        assert_eq!(status("QUEUED", None), DeploymentStatus::Queued);
        assert_eq!(status("STARTED", None), DeploymentStatus::Running);
        assert_eq!(status("COMPLETED", Some("SUCCESS")), DeploymentStatus::Succeeded);
        assert_eq!(status("COMPLETED", Some("UNSTABLE")), DeploymentStatus::Succeeded);
        assert_eq!(status("COMPLETED", Some("FAILURE")), DeploymentStatus::Failed);
        assert_eq!(status("FINALIZED", Some("ABORTED")), DeploymentStatus::Cancelled);
        assert_eq!(
            status("COMPLETED", Some("NOT_BUILT")),
            DeploymentStatus::Cancelled
        );
        assert_eq!(status("COMPLETED", None), DeploymentStatus::Unknown);
    }

    #[test]
    fn the_default_job_rules_capture_environments() {
        let jenkins = Jenkins::new(JenkinsConfig::default()).unwrap();
        let env = |job: &str| {
            jenkins
                .environment_from_job
                .captures(job)
                .and_then(|c| c.name("environment"))
                .map(|m| m.as_str().to_string())
        };
        assert_eq!(env("billing-deploy-prod").as_deref(), Some("prod"));
        assert_eq!(env("team/billing/deploy_staging").as_deref(), Some("staging"));
        assert_eq!(env("production-smoke").as_deref(), Some("production"));
        assert_eq!(env("asgard"), None);
        assert_eq!(env("protest"), None);
    }
}
