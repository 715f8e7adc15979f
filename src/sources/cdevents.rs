//! CDEvents (`POST /webhooks/cdevents`): CDEvents 0.3, 0.4 and 0.5 over the CloudEvents HTTP
//! binding, in binary mode (`ce-*` headers, the CDEvent as the body), structured mode
//! (`Content-Type: application/cloudevents+json`, the CDEvent in `data`) or as a bare CDEvent.
//!
//! `dev.cdevents.service.deployed|upgraded|rolledback|removed` report a deployment that
//! happened: one deployment each (the service is the system, the subject's environment the
//! environment, the artifact's purl version the version), its raw status the predicate
//! (`rolledback` is kept as such). `pipelinerun.*` and `taskrun.*` count only by the
//! `[cdevents]` rules, as Jenkins builds do. Other event types are ignored.
//!
//! Quirks kept: 0.5 renamed `context.version` to `specversion` and a run's `url` to `uri`;
//! 0.4.0 wrote `chain_id`; `outcome` gained `cancel` in 0.5; `artifactId` is not always a purl;
//! `ce-time` may be missing (the Go SDK does not set it), so the body is what is read.

use regex::Regex;
use serde_json::Value;

use super::json::{self, name, text, time, truncate};
use super::{Accepted, Auth, BuiltIn, Delivery, Parsed, Source, SourceError};
use crate::domain::{DeploymentStatus, Observation};

/// The registry's entry; `[cdevents]` is its section.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "cdevents",
    build: |section| super::built("cdevents", Cdevents::new(section.get()?)),
};

/// The `[cdevents]` table: which pipeline and task runs are deployments.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdeventsConfig {
    /// Pipeline runs whose `pipelineName` matches count as deployments.
    pub deployment_pipelines: String,
    /// Task runs whose `taskName` matches count (none by default: their pipeline run counts).
    pub deployment_tasks: Option<String>,
    /// A regex with an `environment` capture tried on the pipeline (or task) name.
    pub environment_from_name: String,
    /// The environment when the name names none.
    pub default_environment: String,
}

impl Default for CdeventsConfig {
    fn default() -> Self {
        Self {
            deployment_pipelines: r"(?i)deploy|release".into(),
            deployment_tasks: None,
            environment_from_name: r"(?i)(?:^|[-_./ ])(?P<environment>prod|production|staging|stage|stg|dev|development|qa|uat|preprod)(?:$|[-_./ ])".into(),
            default_environment: "production".into(),
        }
    }
}

/// The CDEvents source, with its compiled rules.
pub struct Cdevents {
    deployment_pipelines: Regex,
    deployment_tasks: Option<Regex>,
    environment_from_name: Regex,
    default_environment: String,
    auth: Auth,
}

impl Cdevents {
    /// Compiles the rules.
    pub fn new(config: CdeventsConfig) -> Result<Self, String> {
        let compile = |field: &str, pattern: &str| Regex::new(pattern).map_err(|e| format!("{field}: {e}"));
        Ok(Self {
            deployment_pipelines: compile("deployment_pipelines", &config.deployment_pipelines)?,
            deployment_tasks: config
                .deployment_tasks
                .as_deref()
                .map(|p| compile("deployment_tasks", p))
                .transpose()?,
            environment_from_name: compile("environment_from_name", &config.environment_from_name)?,
            default_environment: config.default_environment,
            auth: Auth::Bearer,
        })
    }
}

/// A run's `outcome` as shiplog's status.
pub fn outcome(word: &str) -> DeploymentStatus {
    match word {
        "success" => DeploymentStatus::Succeeded,
        "failure" | "error" => DeploymentStatus::Failed,
        "cancel" | "canceled" | "cancelled" => DeploymentStatus::Cancelled,
        _ => DeploymentStatus::Unknown,
    }
}

impl Source for Cdevents {
    fn name(&self) -> &str {
        "cdevents"
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        let body = json::object(delivery.body, "a CDEvent, or a CloudEvent holding one")?;
        let event = cdevent(delivery, body)?;
        let source = name(text(&event, "/context/source"), "context.source")?;
        let id = name(text(&event, "/context/id"), "context.id")?;
        let kind = name(text(&event, "/context/type"), "context.type")?;
        let parsed = self.parse(&event, &kind, &source, &id, delivery.received_at)?;
        Ok(Accepted {
            // An event's id is unique within its source, and kept when it is sent again.
            key: format!("{source}#{id}"),
            redacted: None,
            rule: Some(
                match kind
                    .strip_prefix("dev.cdevents.")
                    .and_then(|k| k.split('.').next())
                {
                    Some("pipelinerun") => "cdevents.deployment_pipelines",
                    Some("taskrun") => "cdevents.deployment_tasks",
                    _ => "cdevents.service_events",
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
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-time",
        ]
    }
}

/// The CDEvent of a request: `data` of a structured CloudEvent, else the body itself.
fn cdevent(delivery: &Delivery<'_>, body: Value) -> Result<Value, SourceError> {
    let content_type = delivery
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/cloudevents-batch") {
        return Err(SourceError::InvalidPayload(
            "batched CloudEvents are not accepted: send one event per request (binary or structured mode)"
                .into(),
        ));
    }
    let structured = content_type.starts_with("application/cloudevents")
        || (body.get("context").is_none() && body.get("specversion").is_some());
    if !structured {
        return Ok(body);
    }
    if let Some(data) = body.get("data").filter(|d| d.is_object()) {
        return Ok(data.clone());
    }
    if let Some(encoded) = body.get("data_base64").and_then(Value::as_str) {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| SourceError::InvalidPayload(format!("`data_base64` is not base64: {e}")))?;
        return json::object(&bytes, "a CDEvent in `data_base64`");
    }
    Err(SourceError::InvalidPayload(
        "a structured CloudEvent must carry the CDEvent in `data` (or `data_base64`)".into(),
    ))
}

impl Cdevents {
    fn parse(
        &self,
        event: &Value,
        kind: &str,
        source: &str,
        id: &str,
        received_at: i64,
    ) -> Result<Parsed, SourceError> {
        // dev.cdevents.<subject>.<predicate>.<version>
        let mut parts = kind.strip_prefix("dev.cdevents.").unwrap_or_default().split('.');
        let (subject, predicate) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let stamped = time(event, "/context/timestamp")?;
        let at = stamped.unwrap_or(received_at);
        let parsed = match (subject, predicate) {
            ("service", "deployed" | "upgraded" | "rolledback" | "removed") => {
                service(event, predicate, format!("{source}#{id}"), at).map(|o| Parsed::Deployments(vec![o]))
            }
            ("pipelinerun", "queued" | "started" | "finished") => self.run(
                event,
                predicate,
                "/subject/content/pipelineName",
                Some(&self.deployment_pipelines),
                at,
            ),
            ("taskrun", "started" | "finished") => self.run(
                event,
                predicate,
                "/subject/content/taskName",
                self.deployment_tasks.as_ref(),
                at,
            ),
            _ => Ok(Parsed::Ignored(format!(
                "`{}` events describe no deployment",
                truncate(kind)
            ))),
        };
        // Without the context's timestamp the receive time stands in.
        parsed.map(|parsed| match parsed {
            Parsed::Deployments(observations) => Parsed::Deployments(
                observations
                    .into_iter()
                    .map(|o| Observation {
                        times_estimated: stamped.is_none(),
                        ..o
                    })
                    .collect(),
            ),
            ignored => ignored,
        })
    }

    /// A pipeline or task run: a deployment when the rule matches its name.
    fn run(
        &self,
        event: &Value,
        predicate: &str,
        name_at: &str,
        rule: Option<&Regex>,
        at: i64,
    ) -> Result<Parsed, SourceError> {
        // The binding document's example names the task `task`.
        let named = name(
            text(event, name_at).or_else(|| text(event, "/subject/content/task")),
            &json::dotted(name_at),
        )?;
        if !rule.is_some_and(|rule| rule.is_match(&named)) {
            return Ok(Parsed::Ignored(format!(
                "`{}` does not look like a deployment ([cdevents] rules)",
                truncate(&named)
            )));
        }
        let (status, raw_status) = match predicate {
            "queued" => (DeploymentStatus::Queued, "queued".to_string()),
            "started" => (DeploymentStatus::Running, "started".to_string()),
            _ => {
                let word = text(event, "/subject/content/outcome").unwrap_or_else(|| "finished".into());
                (outcome(&word), word)
            }
        };
        let run_source = text(event, "/subject/source").or_else(|| text(event, "/context/source"));
        let run = name(text(event, "/subject/id"), "subject.id")?;
        let environment = self
            .environment_from_name
            .captures(&named)
            .and_then(|c| c.name("environment"))
            .map_or_else(|| self.default_environment.clone(), |m| m.as_str().to_string());
        Ok(Parsed::Deployments(vec![Observation {
            external_id: name(
                Some(format!("{}#{run}", run_source.unwrap_or_default())),
                "subject.id",
            )?,
            system: named,
            environment,
            environment_tier: None,
            status,
            raw_status,
            occurred_at: at,
            started_at: (status == DeploymentStatus::Running).then_some(at),
            finished_at: status.is_terminal().then_some(at),
            commit_sha: None,
            git_ref: None,
            version: None,
            url: text(event, "/subject/content/uri").or_else(|| text(event, "/subject/content/url")),
            actor: None,
            tenant: None,
            committed_at: None,
            origin: None,
            tags: Default::default(),
            note: None,
            environment_url: None,
            times_estimated: false,
        }]))
    }
}

/// A service event: a deployment that happened (or, `removed`, a service taken away).
fn service(event: &Value, predicate: &str, external_id: String, at: i64) -> Result<Observation, SourceError> {
    Ok(Observation {
        external_id: name(Some(external_id), "context.id")?,
        system: name(text(event, "/subject/id"), "subject.id")?,
        environment: name(
            text(event, "/subject/content/environment/id"),
            "subject.content.environment.id",
        )?,
        environment_tier: None,
        status: DeploymentStatus::Succeeded,
        raw_status: predicate.to_string(),
        occurred_at: at,
        started_at: None,
        finished_at: Some(at),
        commit_sha: None,
        git_ref: None,
        version: text(event, "/subject/content/artifactId").map(|artifact| purl_version(&artifact)),
        url: None,
        actor: None,
        tenant: None,
        committed_at: None,
        origin: None,
        // The tool's own word for a rollback (`Deployment.isRollback`).
        tags: if predicate == "rolledback" {
            std::iter::once(("rollback".to_string(), "true".to_string())).collect()
        } else {
            Default::default()
        },
        note: None,
        environment_url: None,
        times_estimated: false,
    })
}

/// The version of a purl (`pkg:oci/myapp@sha256%3A0b31...` -> `sha256:0b31...`), without its
/// qualifiers; an artifact id that is no purl is the version as it is.
pub fn purl_version(artifact: &str) -> String {
    let Some(rest) = artifact.strip_prefix("pkg:") else {
        return artifact.to_string();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    match rest.rsplit_once('@') {
        Some((_, version)) => percent_encoding::percent_decode_str(version)
            .decode_utf8_lossy()
            .into_owned(),
        None => artifact.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_versions_are_decoded_and_other_ids_kept() {
        assert_eq!(
            purl_version("pkg:oci/myapp@sha256%3A0b31b1c0?repository_url=mycr.io"),
            "sha256:0b31b1c0"
        );
        assert_eq!(
            purl_version("pkg:golang/mygit.com/myorg/myapp@234fd47e07d1004f0aed9c"),
            "234fd47e07d1004f0aed9c"
        );
        assert_eq!(
            purl_version("six-1.14.0-py2.py3-none-any.whl"),
            "six-1.14.0-py2.py3-none-any.whl"
        );
    }

    #[test]
    fn outcomes_of_every_version_are_mapped() {
        assert_eq!(outcome("success"), DeploymentStatus::Succeeded);
        assert_eq!(outcome("failure"), DeploymentStatus::Failed);
        assert_eq!(outcome("error"), DeploymentStatus::Failed);
        assert_eq!(outcome("cancel"), DeploymentStatus::Cancelled);
        assert_eq!(outcome("maybe"), DeploymentStatus::Unknown);
    }
}
