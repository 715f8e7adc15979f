//! Argo CD (`POST /webhooks/argocd`): Argo CD notifications, rendered from the template the
//! README ships (`argocd-notifications-cm`: service `webhook.shiplog`, template `shiplog`,
//! trigger `shiplog`). Argo CD sends whatever an operator's template renders, so shiplog
//! reads one documented body: the application, its destination and source, the operation
//! state, the sync and health status, the last history entry, the images.
//!
//! One sync operation is one deployment: its id is the Argo CD instance's URL, the
//! application's namespace and name, and the operation's `startedAt`. That start is known from
//! the first notification (`Running`), stays the same through retries, and equals the history
//! entry's `deployStartedAt` afterwards; the history id only exists once a sync succeeded.
//!
//! Quirks kept: the body is Go's `text/template` output (every value goes through `toJson`,
//! so a missing field is `null`); `operationState` is absent before an operation starts (then
//! there is no deployment to report: ignored, answered 2xx, because Argo CD resends 4xx
//! answers at every reconcile); a failed sync being retried reports `Running` with a
//! `finishedAt`; a revision is a git sha, or a Helm chart's version.

use std::collections::BTreeMap;

use serde_json::Value;

use super::json::{self, name, sha, text, time, truncate};
use super::{Accepted, Auth, BuiltIn, Delivery, Parsed, Source, SourceError, body_key};
use crate::domain::catalog::{REPOSITORY_TAG, Repository};
use crate::domain::{DeploymentStatus, MAX_NAME_LEN, Observation};

/// The registry's entry; `[argocd]` is its section.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "argocd",
    build: |section| {
        Ok(std::sync::Arc::new(Argocd {
            config: section.get()?,
            auth: Auth::Bearer,
        }))
    },
};

/// The `[argocd]` table: which names the system and the environment.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArgocdConfig {
    /// An application label that names the system (else the application's name).
    pub system_label: Option<String>,
    /// Application labels that name the environment, first set wins.
    pub environment_labels: Vec<String>,
    /// Else the environment is the destination's `namespace`, its `cluster` (name or server),
    /// or `cluster/namespace`.
    pub environment_from: EnvironmentFrom,
}

/// Where an environment comes from when no label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvironmentFrom {
    Namespace,
    Cluster,
    #[serde(rename = "cluster/namespace")]
    ClusterNamespace,
}

impl Default for ArgocdConfig {
    fn default() -> Self {
        Self {
            system_label: None,
            environment_labels: vec!["environment".into(), "env".into()],
            environment_from: EnvironmentFrom::Namespace,
        }
    }
}

/// The Argo CD source.
pub struct Argocd {
    config: ArgocdConfig,
    /// The service's `Authorization: Bearer $shiplog-token` header.
    auth: Auth,
}

/// An operation phase, with the application's health after a successful sync: a sync is
/// deployed when the application is healthy, and failed when it is degraded.
pub fn status(phase: &str, health: Option<&str>) -> DeploymentStatus {
    match (phase, health) {
        ("Succeeded", Some("Degraded")) => DeploymentStatus::Failed,
        ("Succeeded", Some("Progressing")) => DeploymentStatus::Running,
        ("Succeeded", _) => DeploymentStatus::Succeeded,
        // A failed sync being retried is `Running` again.
        ("Running" | "Terminating", _) => DeploymentStatus::Running,
        ("Failed" | "Error", _) => DeploymentStatus::Failed,
        _ => DeploymentStatus::Unknown,
    }
}

impl Source for Argocd {
    fn name(&self) -> &str {
        "argocd"
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        let body = json::object(
            delivery.body,
            "the body of shiplog's Argo CD notification template",
        )?;
        let Some(phase) = text(&body, "/operation/phase") else {
            return Ok(Accepted {
                key: body_key(delivery.body),
                redacted: None,
                rule: None,
                parsed: Parsed::Ignored(
                    "no sync operation in this notification (Argo CD has not started one)".into(),
                ),
            });
        };
        let health = text(&body, "/health/status");
        let observation = self.observation(&body, &phase, health.as_deref(), delivery.received_at)?;
        Ok(Accepted {
            // Argo CD sends no delivery id, and renders `sentAt` anew on each retry: the
            // notification is its operation and what it reports.
            key: format!(
                "{}:{}:{}",
                observation.external_id,
                phase,
                health.as_deref().unwrap_or("-")
            ),
            redacted: None,
            rule: None,
            parsed: Parsed::Deployments(vec![observation]),
        })
    }
}

impl Argocd {
    fn observation(
        &self,
        body: &Value,
        phase: &str,
        health: Option<&str>,
        received_at: i64,
    ) -> Result<Observation, SourceError> {
        let app = name(text(body, "/app/name"), "app.name")?;
        let namespace = text(body, "/app/namespace");
        let instance = text(body, "/argocdUrl").map(|url| url.trim_end_matches('/').to_string());
        let started = time(body, "/operation/startedAt")?;
        let start_text = name(text(body, "/operation/startedAt"), "operation.startedAt")?;
        let status = status(phase, health);
        let finished = time(body, "/operation/finishedAt")?.filter(|_| status.is_terminal());
        let occurred_at = match status {
            DeploymentStatus::Running => started,
            _ => finished
                .or(time(body, "/health/lastTransitionTime")?)
                .or(time(body, "/sentAt")?),
        };
        let times_estimated = occurred_at.is_none();
        let occurred_at = occurred_at.unwrap_or(received_at);
        let labels = labels(body);
        let external_id = operation_id(instance.as_deref(), namespace.as_deref(), &app, &start_text);
        let revision = [
            "/operation/syncResultRevision",
            "/operation/revision",
            "/sync/revision",
        ]
        .iter()
        .find_map(|pointer| text(body, pointer));
        let commit_sha = sha(revision.clone());
        // The application's labels are its tags (those a tag can hold: Kubernetes label keys
        // with a prefix, `app.kubernetes.io/name`, are; empty values are not).
        let mut tags = crate::domain::tags::usable(labels.clone());
        // The Git repository synced (not a Helm chart repository): what the revisions are of.
        if let Some(repository) = text(body, "/source/repoURL")
            .filter(|_| text(body, "/source/chart").is_none())
            .and_then(|url| Repository::from_url(&url))
        {
            tags.insert(REPOSITORY_TAG.to_string(), repository.key());
        }
        Ok(Observation {
            tags,
            note: None,
            environment_url: None,
            external_id: truncated_id(external_id)?,
            system: name(
                self.config
                    .system_label
                    .as_ref()
                    .and_then(|label| labels.get(label).cloned())
                    .or(Some(app.clone())),
                "app.name",
            )?,
            environment: name(self.environment(body, &labels), "destination.namespace")?,
            environment_tier: None,
            status,
            raw_status: match health {
                Some(health) if phase == "Succeeded" => format!("{phase}/{health}"),
                _ => phase.to_string(),
            },
            occurred_at,
            started_at: started,
            finished_at: finished,
            // A Helm chart's version is a version, not a commit.
            version: revision
                .filter(|_| commit_sha.is_none())
                .or_else(|| image_tag(body)),
            commit_sha,
            git_ref: text(body, "/source/targetRevision"),
            url: instance
                .as_ref()
                .zip(namespace.as_ref())
                .map(|(instance, namespace)| format!("{instance}/applications/{namespace}/{app}")),
            actor: text(body, "/operation/initiatedBy").or_else(|| {
                body.pointer("/operation/automated")
                    .and_then(Value::as_bool)
                    .filter(|automated| *automated)
                    .map(|_| "automated".to_string())
            }),
            tenant: None,
            committed_at: None,
            origin: instance,
            times_estimated,
        })
    }

    /// The environment: a label, else the destination as configured.
    fn environment(&self, body: &Value, labels: &BTreeMap<String, String>) -> Option<String> {
        if let Some(labelled) = self.config.environment_labels.iter().find_map(|l| labels.get(l)) {
            return Some(labelled.clone());
        }
        let cluster = text(body, "/destination/name").or_else(|| text(body, "/destination/server"));
        let namespace = text(body, "/destination/namespace");
        match self.config.environment_from {
            EnvironmentFrom::Namespace => namespace.or(cluster),
            EnvironmentFrom::Cluster => cluster.or(namespace),
            EnvironmentFrom::ClusterNamespace => match (cluster, namespace) {
                (Some(cluster), Some(namespace)) => Some(format!("{cluster}/{namespace}")),
                (cluster, namespace) => cluster.or(namespace),
            },
        }
    }
}

/// The tag of the first image the application runs (`nginx:1.25` -> `1.25`).
fn image_tag(body: &Value) -> Option<String> {
    let image = body.pointer("/images/0").and_then(Value::as_str)?;
    let (_, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !tag.is_empty()).then(|| tag.to_string())
}

/// The id, or a clear error when an instance URL, namespace and name make it too long.
fn truncated_id(id: String) -> Result<String, SourceError> {
    if id.len() <= MAX_NAME_LEN {
        Ok(id)
    } else {
        Err(SourceError::InvalidPayload(format!(
            "the operation's id `{}...` is longer than {MAX_NAME_LEN} bytes",
            truncate(&id)
        )))
    }
}

/// One sync operation: the instance, namespace and app, and when the operation started.
fn operation_id(instance: Option<&str>, namespace: Option<&str>, app: &str, started: &str) -> String {
    let path = [instance.unwrap_or(""), namespace.unwrap_or(""), app].join("/");
    format!("{}@{started}", path.trim_start_matches('/'))
}

/// The Application's labels (text values only).
fn labels(body: &Value) -> BTreeMap<String, String> {
    body.pointer("/app/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_is_deployed_when_healthy_and_failed_when_degraded() {
        assert_eq!(status("Succeeded", Some("Healthy")), DeploymentStatus::Succeeded);
        assert_eq!(status("Succeeded", None), DeploymentStatus::Succeeded);
        assert_eq!(status("Succeeded", Some("Degraded")), DeploymentStatus::Failed);
        assert_eq!(
            status("Succeeded", Some("Progressing")),
            DeploymentStatus::Running
        );
        assert_eq!(status("Running", Some("Healthy")), DeploymentStatus::Running);
        assert_eq!(status("Error", None), DeploymentStatus::Failed);
        assert_eq!(status("Failed", None), DeploymentStatus::Failed);
        assert_eq!(status("Paused", None), DeploymentStatus::Unknown);
    }

    #[test]
    fn image_tags_are_versions_and_registry_ports_are_not() {
        let body = serde_json::json!({ "images": ["registry:5000/app:1.4.2"] });
        assert_eq!(image_tag(&body).as_deref(), Some("1.4.2"));
        let untagged = serde_json::json!({ "images": ["registry:5000/app"] });
        assert_eq!(image_tag(&untagged), None);
    }
}
