//! Jenkins (`POST /webhooks/jenkins`), through the Notification plugin's JSON.
//!
//! The plugin sends one message per build phase (QUEUED, STARTED, COMPLETED, FINALIZED);
//! `build.status` is absent until the build completes; `timestamp` and `duration` are epoch
//! milliseconds (STARTED: the build's start; COMPLETED: start + duration; FINALIZED: the time
//! of sending; QUEUED: 0 when the build had no executor). `name` is only the job's own name
//! (`deploy` for `team/app/deploy`, the branch for a multibranch job): the full name is read
//! from `url` (`job/team/job/app/job/deploy/`), as the plugin's source builds it. It cannot sign: the secret travels as the Basic-auth password (credentials in
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
    /// A regex with an `environment` capture group, tried on the job's full name when no
    /// parameter names the environment, for jobs `deployment_jobs` matches (so that CI jobs
    /// named `test` or `billing_ci_test` are not deployments to `test`).
    pub environment_from_job: String,
    /// A regex with a `system` capture group tried on the job name (else the full job name).
    pub system_from_job: Option<String>,
    /// Jobs whose full name matches are deployments (with `environment_from_job`'s environment,
    /// or `default_environment`); other jobs are when a parameter names the environment.
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
        // COMPLETED or FINALIZED without a result come from the notifyEndpoints step while the
        // build still runs: not an ending.
        ("STARTED" | "COMPLETED" | "FINALIZED", None) => DeploymentStatus::Running,
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
        if super::discovery(delivery.headers) != crate::domain::Discovery::Webhook {
            let record = json::object(delivery.body, "a Jenkins API build record")?;
            let (parsed, rule) = self.parse(&as_notification(&record)?, delivery.received_at)?;
            return Ok(Accepted {
                key: super::body_key(delivery.body),
                redacted: None,
                rule: Some(rule.into()),
                parsed,
            });
        }
        let value = json::object(delivery.body, "the Notification plugin's JSON")?;
        // No delivery id: a build's phase is sent once (retries re-send the same message). The
        // job's full name, not `name`: two `deploy` jobs in different folders are two jobs.
        let field = |p: &str| value.pointer(p).map(|v| v.to_string()).unwrap_or_default();
        // (As JSON text, as before: a root-level job's keys are unchanged.)
        let mut key = format!(
            "{}#{}#{}",
            job_path(&value).map_or_else(|_| field("/name"), |path| Value::String(path).to_string()),
            field("/build/number"),
            field("/build/phase")
        );
        // The notifyEndpoints step may send COMPLETED before the build has a result: the real
        // COMPLETED that follows is another delivery.
        let result = value
            .pointer("/build/status")
            .and_then(Value::as_str)
            .map(str::trim);
        let ending = matches!(
            value.pointer("/build/phase").and_then(Value::as_str),
            Some("COMPLETED" | "FINALIZED")
        );
        if ending && result.is_none_or(str::is_empty) {
            key.push_str("#no-result");
        }
        let (parsed, rule) = self.parse(&value, delivery.received_at)?;
        Ok(Accepted {
            key,
            redacted: None,
            rule: Some(rule.into()),
            parsed,
        })
    }

    fn journaled_headers(&self) -> &[&str] {
        &["content-type", "user-agent"]
    }
}

impl Jenkins {
    /// The system: a parameter, else `system_from_job`'s capture, else the job's full name (a
    /// multibranch job's project: its branch is a ref, not a system).
    fn system(&self, job: &str, multibranch: bool, parameters: &BTreeMap<String, String>) -> String {
        let project = match job.rsplit_once('/') {
            Some((project, _)) if multibranch => project,
            _ => job,
        };
        first(parameters, &self.config.system_parameters)
            .or_else(|| {
                self.system_from_job
                    .as_ref()
                    .and_then(|r| r.captures(job))
                    .and_then(|c| c.name("system"))
                    .map(|m| m.as_str().to_string())
            })
            .unwrap_or_else(|| project.to_string())
    }

    /// One build phase as an observation, when the rules make the build a deployment.
    fn parse(&self, value: &Value, received_at: i64) -> Result<(Parsed, &'static str), SourceError> {
        let job = job_path(value)?;
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
        if phase == "NONE" {
            return Ok((
                Parsed::Ignored(
                    "phase NONE (from the notifyEndpoints step) reports no change of the build".into(),
                ),
                "jenkins.phases",
            ));
        }
        // An empty or absent status is "no result yet", not a word.
        let result = build
            .get("status")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let parameters = parameters(build);
        let parameter = |names: &[String]| first(&parameters, names);
        let deploying = self.deployment_jobs.is_match(&job);
        let named = parameter(&self.config.environment_parameters);
        if named.is_none() && !deploying {
            return Ok((
                Parsed::Ignored(format!(
                    "job `{}` has no environment parameter and its name does not match [jenkins] deployment_jobs",
                    job.chars().take(64).collect::<String>()
                )),
                "jenkins.deployment_jobs",
            ));
        }
        let rule = if named.is_some() {
            "jenkins.environment_parameters"
        } else {
            "jenkins.deployment_jobs"
        };
        let environment = named.or_else(|| {
            self.environment_from_job
                .captures(&job)
                .and_then(|c| c.name("environment"))
                .map(|m| m.as_str().to_string())
        });
        let branch = branch_of(&job, value.get("display_name").and_then(Value::as_str));
        let system = self.system(&job, branch.is_some(), &parameters);
        let status = status(phase, result);
        let raw_status = result.unwrap_or(phase).to_string();
        let (started_at, finished_at, reported) = build_times(build, phase);
        let times_estimated = reported.is_none();
        let occurred_at = reported.unwrap_or(received_at);
        let (commit_sha, scm_branch) = scm(build);
        let git_ref = scm_branch.or(branch);
        let observation = Observation {
            tags: Default::default(),
            note: None,
            environment_url: None,
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
            times_estimated,
        };
        Ok((Parsed::Deployments(vec![observation]), rule))
    }
}

/// A record `shiplog import jenkins` read: `{"job": "team/app/deploy", "build": <an item of
/// GET /job/.../api/json?tree=allBuilds[...]>}`, as the Notification plugin would have told
/// it (COMPLETED with its result, or STARTED while it runs), so the same `[jenkins]` rules
/// decide what is a deployment. The API's `actions` are positional and hold `{}` for every
/// action not asked for: they are searched by key. A `UserIdCause` names who started it.
fn as_notification(record: &Value) -> Result<Value, SourceError> {
    let job = record
        .get("job")
        .and_then(Value::as_str)
        .filter(|j| !j.trim().is_empty())
        .ok_or_else(|| SourceError::InvalidPayload("`job` (the job's full name) is required".into()))?;
    let build = record
        .get("build")
        .filter(|b| b.is_object())
        .ok_or_else(|| SourceError::InvalidPayload("`build` must be a Jenkins build object".into()))?;
    let actions = build
        .get("actions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut parameters = serde_json::Map::new();
    let mut scm = serde_json::Map::new();
    for action in &actions {
        for parameter in action
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(name), Some(value)) = (
                parameter.get("name").and_then(Value::as_str),
                parameter.get("value"),
            ) {
                parameters.insert(name.to_string(), value.clone());
            }
        }
        if let Some(revision) = action.get("lastBuiltRevision") {
            scm.insert(
                "commit".into(),
                revision.get("SHA1").cloned().unwrap_or(Value::Null),
            );
            if let Some(branch) = revision.pointer("/branch/0/name").and_then(Value::as_str) {
                let branch = branch.strip_prefix("refs/remotes/").unwrap_or(branch);
                scm.insert("branch".into(), Value::String(branch.to_string()));
            }
        }
        for cause in action
            .get("causes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(user) = cause.get("userId").and_then(Value::as_str) {
                parameters
                    .entry("BUILD_USER_ID")
                    .or_insert_with(|| Value::String(user.to_string()));
            }
        }
    }
    let result = build.get("result").filter(|r| !r.is_null());
    let (start, duration) = (
        build.get("timestamp").and_then(Value::as_i64),
        build.get("duration").and_then(Value::as_i64),
    );
    let mut notification = serde_json::json!({
        "name": job.rsplit('/').next().unwrap_or(job),
        "url": format!("job/{}/", job.split('/').map(url_segment).collect::<Vec<_>>().join("/job/")),
        "build": {
            "full_url": build.get("url"),
            "number": build.get("number"),
            "phase": if result.is_some() { "COMPLETED" } else { "STARTED" },
            // COMPLETED's timestamp is the end (start + duration), as the plugin sends it.
            "timestamp": match (result, start, duration) {
                (Some(_), Some(t), Some(d)) => Some(t + d),
                _ => start,
            },
            "duration": duration,
            "parameters": parameters,
            "scm": scm,
        },
    });
    if let Some(result) = result {
        notification["build"]["status"] = result.clone();
    }
    Ok(notification)
}

/// A job name's segment as the plugin puts it in `url` (what `job_path` decodes once): a
/// branch named `feature%2Ffoo` is `feature%252Ffoo` there.
fn url_segment(segment: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

/// The first of `names` that is a parameter of the build.
fn first(parameters: &BTreeMap<String, String>, names: &[String]) -> Option<String> {
    names
        .iter()
        .find_map(|n| parameters.get(&n.to_uppercase()).cloned())
}

/// The job's full name: the item names in `url` (`job/team/job/app/job/deploy/` is
/// `team/app/deploy`), each percent-decoded once as Jenkins encoded it; `name` (the last item
/// only) when there is no `url`.
fn job_path(value: &Value) -> Result<String, SourceError> {
    let Some(url) = value.get("url").and_then(Value::as_str) else {
        return job_name(value);
    };
    let mut items = Vec::new();
    let mut segments = url.split('/').filter(|s| !s.is_empty());
    while let Some(segment) = segments.next() {
        if segment == "job"
            && let Some(item) = segments.next()
        {
            items.push(
                percent_encoding::percent_decode_str(item)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
    }
    let path = items.join("/");
    match path.len() {
        0 => job_name(value),
        n if n > MAX_NAME_LEN => Err(SourceError::InvalidPayload(format!(
            "the job's full name (from `url`) is longer than {MAX_NAME_LEN} bytes"
        ))),
        _ => Ok(path),
    }
}

/// The branch a multibranch job builds, when its name shows it is one: an item name with a
/// character branch-api encodes (`feature%2Ffoo`), a change request (`PR-12`, `MR-3`), or a
/// display name ending `(#12)`. Decoded as branch-api's NameEncoder decodes (`feature/foo`).
fn branch_of(path: &str, display: Option<&str>) -> Option<String> {
    let (_, item) = path.rsplit_once('/')?;
    const ENCODED: [&str; 9] = ["%2F", "%23", "%25", "%3F", "%5B", "%5D", "%5C", "%2E", "%00"];
    let encoded = ENCODED.iter().any(|e| item.to_ascii_uppercase().contains(e));
    let change = ["PR-", "MR-"].iter().any(|p| {
        item.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    let titled = display.is_some_and(|d| {
        d.trim_end()
            .strip_suffix(')')
            .and_then(|d| d.rsplit_once("(#"))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    (encoded || change || titled).then(|| name_decode(item))
}

/// branch-api's NameEncoder.decode: its escapes back to characters, in one pass.
fn name_decode(item: &str) -> String {
    let mut out = String::new();
    let mut rest = item;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).map(str::to_ascii_uppercase);
        let decoded = match code.as_deref() {
            Some("2F") => Some("/"),
            Some("23") => Some("#"),
            Some("25") => Some("%"),
            Some("3F") => Some("?"),
            Some("5B") => Some("["),
            Some("5D") => Some("]"),
            Some("5C") => Some("\\"),
            Some("2E") => Some("."),
            Some("00") => Some(""),
            _ => None,
        };
        match decoded {
            Some(text) => {
                out.push_str(text);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
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

/// A phase's start and finish, and when it happened, as far as the message tells. QUEUED's
/// timestamp is 0 when the build had no executor: no time.
fn build_times(build: &Value, phase: &str) -> (Option<i64>, Option<i64>, Option<i64>) {
    let timestamp = build.get("timestamp").and_then(Value::as_i64).filter(|t| *t > 0);
    let duration = build.get("duration").and_then(Value::as_i64).filter(|d| *d >= 0);
    let (started_at, finished_at) = phase_times(phase, timestamp, duration);
    (started_at, finished_at, finished_at.or(started_at).or(timestamp))
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
    fn an_imported_branch_build_is_the_webhooks_deployment() {
        let every_job = JenkinsConfig {
            deployment_jobs: ".".into(),
            ..JenkinsConfig::default()
        };
        let source = Jenkins::new(every_job).unwrap();
        let webhook: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/jenkins/multibranch_app_feature-foo_completed_failure.derived.json"
        ))
        .unwrap();
        // The branch `feature/foo` is the job `feature%2Ffoo` (its name as `jobs[name]` gives it).
        let record = serde_json::json!({ "job": "app/feature%2Ffoo", "build": {
            "number": 7, "result": "FAILURE", "timestamp": 1_700_000_000_000_i64, "duration": 1000, "actions": [{}] } });
        let observation = |value: &Value| match source.parse(value, 0).unwrap().0 {
            Parsed::Deployments(found) => found[0].clone(),
            other => panic!("{other:?}"),
        };
        let (imported, sent) = (
            observation(&as_notification(&record).unwrap()),
            observation(&webhook),
        );
        assert_eq!(imported.external_id, sent.external_id);
        assert_eq!(
            (imported.system.as_str(), imported.git_ref.as_deref()),
            ("app", Some("feature/foo"))
        );
    }

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
        assert_eq!(status("COMPLETED", None), DeploymentStatus::Running);
        assert_eq!(status("SOMETHING", None), DeploymentStatus::Unknown);
    }

    #[test]
    fn the_full_name_comes_from_the_url_and_a_multibranch_job_names_its_branch() {
        let path = |url: &str| job_path(&serde_json::json!({ "name": "x", "url": url })).unwrap();
        assert_eq!(path("job/team/job/app/job/deploy/"), "team/app/deploy");
        assert_eq!(path("job/ops/job/Deploy%20Billing/"), "ops/Deploy Billing");
        // Decoded once: the branch's own encoding stays for NameEncoder.
        assert_eq!(path("job/app/job/feature%252Ffoo/"), "app/feature%2Ffoo");
        assert_eq!(job_path(&serde_json::json!({ "name": "solo" })).unwrap(), "solo");
        assert_eq!(
            branch_of("app/feature%2Ffoo", None).as_deref(),
            Some("feature/foo")
        );
        assert_eq!(branch_of("app/PR-12", None).as_deref(), Some("PR-12"));
        assert_eq!(
            branch_of("app/PR-12", Some("Fix login timeout (#12)")).as_deref(),
            Some("PR-12")
        );
        assert_eq!(branch_of("team/app/deploy", Some("deploy")), None);
        assert_eq!(branch_of("deploy", None), None);
        assert_eq!(name_decode("a%25b%2Fc%zz"), "a%b/c%zz");
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
        // CI jobs are not deployments by their name alone.
        assert!(!jenkins.deployment_jobs.is_match("billing_ci_test"));
        assert!(!jenkins.deployment_jobs.is_match("test"));
        assert_eq!(env("team/billing/deploy_staging").as_deref(), Some("staging"));
        assert_eq!(env("production-smoke").as_deref(), Some("production"));
        assert_eq!(env("asgard"), None);
        assert_eq!(env("protest"), None);
    }
}
