//! GitLab (`POST /webhooks/gitlab`): Deployment, Job and Pipeline hooks.
//!
//! One GitLab deployment is one job. The three hook kinds describe it differently and arrive
//! in any order, so each becomes an observation keyed by the job id (`deployable_id` in
//! deployment events, `build_id` in job events, `builds[].id` in pipeline events), and the
//! store merges them into one deployment.
//!
//! Quirks kept from GitLab's payloads:
//! - times come as `2021-04-28 21:50:00 +0200` (deployment), `2016-08-12 15:23:28 UTC`
//!   (pipeline, older job events) and ISO-8601 with milliseconds (newer job events);
//! - job events name the project `project_name: "John Smith / release-tools-fake"` (display
//!   names) and only newer versions add `project.path_with_namespace`; older ones have only
//!   `repository.homepage`, whose path is the same `namespace/project`;
//! - deployment events carry only `short_sha`, but their `commit_url` ends in the full sha;
//! - `deployable_id` is null for deployments made through the API or by `trigger` jobs: those
//!   are keyed `deployment:<deployment_id>`;
//! - job ids are unique per GitLab instance only: with `X-Gitlab-Instance` (GitLab 15.5+) an id
//!   is `<instance>#<id>`, except for `[gitlab] home_instance` (and deliveries without the
//!   header), whose ids stay bare as before.

use std::sync::Arc;

use serde_json::Value;

use super::json::{self, name, sha, text, time, truncate};
use super::{Accepted, Auth, BuiltIn, Delivery, Parsed, Source, SourceError, body_key, idempotency_key};
use crate::domain::{DeploymentStatus, Observation};

/// The registry's entry.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "gitlab",
    build: |section| {
        let config: GitlabConfig = section.get()?;
        Ok(Arc::new(Gitlab {
            auth: Auth::Header("X-Gitlab-Token".into()),
            home_instance: match config.home_instance {
                Some(home) => std::sync::OnceLock::from(home.trim_end_matches('/').to_string()),
                None => std::sync::OnceLock::new(),
            },
        }))
    },
};

/// The `[gitlab]` table of the TOML file.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitlabConfig {
    /// The instance whose job ids stay bare (`https://gitlab.example.com`, as GitLab sends it
    /// in `X-Gitlab-Instance`). When not written, shiplog learns it: the instance of the oldest
    /// GitLab delivery in the journal that names one, else the first to send one.
    pub home_instance: Option<String>,
}

/// The GitLab source.
pub struct Gitlab {
    /// GitLab sends the webhook's secret token as it is, in `X-Gitlab-Token`.
    auth: Auth,
    /// Its ids stay bare; other instances' are `<instance>#<id>`. Set from the settings, or by
    /// the first delivery that names an instance.
    home_instance: std::sync::OnceLock<String>,
}

/// GitLab's job and deployment status words, each mapped deliberately.
pub fn status(word: &str) -> DeploymentStatus {
    match word {
        // Not started yet: waiting for a runner, a resource, a schedule, a click or an approval
        // (`blocked`); `approved` keeps it waiting (the job must still run) and never moves a
        // deployment back.
        "created"
        | "pending"
        | "waiting_for_resource"
        | "preparing"
        | "scheduled"
        | "manual"
        | "blocked"
        | "approved" => DeploymentStatus::Queued,
        // `canceling` and `waiting_for_callback` come before their ends.
        "running" | "canceling" | "waiting_for_callback" => DeploymentStatus::Running,
        "success" => DeploymentStatus::Succeeded,
        "failed" => DeploymentStatus::Failed,
        // Skipped jobs never ran, a rejected approval stops one: nothing was deployed.
        "canceled" | "skipped" | "rejected" => DeploymentStatus::Cancelled,
        _ => DeploymentStatus::Unknown,
    }
}

impl Source for Gitlab {
    fn name(&self) -> &str {
        "gitlab"
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        if super::discovery(delivery.headers) != crate::domain::Discovery::Webhook {
            let record = json::object(delivery.body, "a GitLab API deployment record")?;
            let parsed = Parsed::Deployments(vec![api_deployment(&record, delivery.received_at)?]);
            return Ok(Accepted {
                key: body_key(delivery.body),
                redacted: None,
                rule: Some("gitlab.api_deployments".into()),
                parsed: self.namespaced(delivery.headers, parsed),
            });
        }
        let event = json::object(delivery.body, "a GitLab webhook event")?;
        let parsed = match event.get("object_kind").and_then(Value::as_str) {
            Some("deployment") => Parsed::Deployments(vec![deployment_event(&event, delivery.received_at)?]),
            Some("build") => job_event(&event, delivery.received_at)?,
            Some("pipeline") => pipeline_event(&event, delivery.received_at)?,
            Some(kind) => Parsed::Ignored(format!("`{}` events describe no deployment", truncate(kind))),
            None => Parsed::Ignored(
                "no `object_kind`: not a GitLab event shiplog reads (custom webhook templates are not supported)".into(),
            ),
        };
        Ok(Accepted {
            // Idempotency-Key (GitLab 17.4+) is stable when GitLab re-sends a delivery; older
            // versions re-send the same body. X-Gitlab-Webhook-UUID is new on every request.
            key: idempotency_key(delivery.headers).unwrap_or_else(|| body_key(delivery.body)),
            redacted: None,
            rule: Some(
                match event.get("object_kind").and_then(Value::as_str) {
                    Some("deployment") => "gitlab.deployment_events",
                    Some("build") => "gitlab.jobs_with_an_environment",
                    Some("pipeline") => "gitlab.pipeline_jobs_with_an_environment",
                    _ => "gitlab.event_kinds",
                }
                .into(),
            ),
            parsed: self.namespaced(delivery.headers, parsed),
        })
    }

    fn journaled_headers(&self) -> &[&str] {
        &[
            "content-type",
            "user-agent",
            "idempotency-key",
            "x-gitlab-event",
            "x-gitlab-instance",
            "x-gitlab-event-uuid",
            "x-gitlab-webhook-uuid",
        ]
    }
}

impl Gitlab {
    /// Ids scoped to the instance that sent them (`X-Gitlab-Instance`), but for the home one.
    fn namespaced(&self, headers: &axum::http::HeaderMap, parsed: Parsed) -> Parsed {
        let instance = headers
            .get("x-gitlab-instance")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_end_matches('/'))
            .filter(|v| !v.is_empty())
            .filter(|v| self.home_instance.get_or_init(|| v.to_string()) != v);
        match (instance, parsed) {
            (Some(instance), Parsed::Deployments(observations)) => Parsed::Deployments(
                observations
                    .into_iter()
                    .map(|o| Observation {
                        external_id: format!("{instance}#{}", o.external_id),
                        ..o
                    })
                    .collect(),
            ),
            (_, parsed) => parsed,
        }
    }
}

/// A GitLab id: a number (string ids are accepted, as some proxies re-encode them).
fn id(value: &Value, pointer: &str, what: &str) -> Result<String, SourceError> {
    match value.pointer(pointer) {
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Ok(s.clone()),
        _ => Err(SourceError::InvalidPayload(format!(
            "`{what}` must be a job id (a number)"
        ))),
    }
}

/// `namespace/project` from a project URL (`https://gitlab.com/group/sub/project`).
fn path_from_url(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let (_, path) = rest.split_once('/')?;
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    (!path.is_empty()).then(|| path.to_string())
}

/// A full 40-hex sha at the end of a commit URL.
fn sha_from_commit_url(url: &str) -> Option<String> {
    let last = url.rsplit('/').next()?;
    (last.len() == 40 && last.bytes().all(|b| b.is_ascii_hexdigit())).then(|| last.to_lowercase())
}

/// When a status happened, when GitLab says: the finish for terminal statuses, the start for
/// running, else the creation time. A job skipped or canceled before it ran has only its
/// creation time: not when it ended, so `None` here; it only stands in (`times_estimated`).
fn occurred(
    status: DeploymentStatus,
    created: Option<i64>,
    started: Option<i64>,
    finished: Option<i64>,
) -> Option<i64> {
    match status {
        s if s.is_terminal() => finished.or(started),
        DeploymentStatus::Running => started,
        _ => created,
    }
}

/// `object_kind: deployment`.
fn deployment_event(event: &Value, received_at: i64) -> Result<Observation, SourceError> {
    // A deployment without a job (made through the API, or by a `trigger` job) has its own id.
    let job = match event.get("deployable_id") {
        None | Some(Value::Null) => format!("deployment:{}", id(event, "/deployment_id", "deployment_id")?),
        Some(_) => id(event, "/deployable_id", "deployable_id")?,
    };
    let raw_status = name(text(event, "/status"), "status")?;
    let status = status(&raw_status);
    let changed = time(event, "/status_changed_at")?;
    let system = name(
        text(event, "/project/path_with_namespace")
            .or_else(|| text(event, "/project/web_url").and_then(|u| path_from_url(&u))),
        "project.path_with_namespace",
    )?;
    let environment = name(text(event, "/environment"), "environment")?;
    let commit_sha = text(event, "/commit_url")
        .and_then(|url| sha_from_commit_url(&url))
        .or_else(|| sha(text(event, "/short_sha")));
    Ok(Observation {
        external_id: job,
        system,
        environment,
        environment_tier: text(event, "/environment_tier"),
        status,
        raw_status,
        occurred_at: changed.unwrap_or(received_at),
        tags: Default::default(),
        note: None,
        environment_url: text(event, "/environment_external_url").filter(|u| u.starts_with("http")),
        times_estimated: changed.is_none(),
        started_at: None,
        finished_at: status.is_terminal().then_some(changed).flatten(),
        commit_sha,
        git_ref: text(event, "/ref"),
        version: None,
        url: text(event, "/deployable_url"),
        actor: text(event, "/user/username").or_else(|| text(event, "/user/name")),
        tenant: None,
        committed_at: None,
        origin: None,
    })
}

/// A record `shiplog import gitlab` (or reconciliation) read: `{"project": "group/app",
/// "deployment": <an item of GET /projects/:id/deployments, as GitLab answers it>}` (the API's
/// deployment does not name its project). The id is the job's, as the webhooks give it.
fn api_deployment(record: &Value, received_at: i64) -> Result<Observation, SourceError> {
    let deployment = record
        .get("deployment")
        .filter(|d| d.is_object())
        .ok_or_else(|| {
            SourceError::InvalidPayload("`deployment` must be a GitLab API deployment object".into())
        })?;
    let job = match deployment.pointer("/deployable/id") {
        None | Some(Value::Null) => format!("deployment:{}", id(deployment, "/id", "deployment.id")?),
        Some(_) => id(deployment, "/deployable/id", "deployment.deployable.id")?,
    };
    let raw_status = name(text(deployment, "/status"), "deployment.status")?;
    let status = status(&raw_status);
    let updated = time(deployment, "/updated_at")?;
    let started = time(deployment, "/deployable/started_at")?;
    // The deployment's status changed last at `updated_at`: its end when terminal.
    let finished = status
        .is_terminal()
        .then(|| time(deployment, "/deployable/finished_at").map(|f| f.or(updated)))
        .transpose()?
        .flatten();
    let at = occurred(
        status,
        time(deployment, "/created_at")?,
        started.or(updated),
        finished,
    );
    Ok(Observation {
        external_id: job,
        system: name(text(record, "/project"), "project")?,
        environment: name(
            text(deployment, "/environment/name"),
            "deployment.environment.name",
        )?,
        environment_tier: text(deployment, "/environment/tier"),
        status,
        raw_status,
        occurred_at: at.unwrap_or(received_at),
        tags: Default::default(),
        note: None,
        environment_url: None,
        times_estimated: at.is_none(),
        started_at: started,
        finished_at: finished,
        commit_sha: sha(text(deployment, "/sha")),
        git_ref: text(deployment, "/ref"),
        version: None,
        url: text(deployment, "/deployable/web_url"),
        actor: text(deployment, "/user/username").or_else(|| text(deployment, "/user/name")),
        tenant: None,
        committed_at: time(deployment, "/deployable/commit/committed_date")?
            .or(time(deployment, "/deployable/commit/created_at")?),
        origin: None,
    })
}

/// The project path of a job event, wherever this GitLab version put it.
fn job_project(event: &Value) -> Option<String> {
    text(event, "/project/path_with_namespace")
        .or_else(|| text(event, "/project/web_url").and_then(|u| path_from_url(&u)))
        .or_else(|| text(event, "/repository/homepage").and_then(|u| path_from_url(&u)))
        .or_else(|| text(event, "/repository/git_http_url").and_then(|u| path_from_url(&u)))
}

fn project_web_url(event: &Value) -> Option<String> {
    text(event, "/project/web_url").or_else(|| text(event, "/repository/homepage"))
}

/// Environments are deployments only when the job starts one (not `stop`, `prepare`, ...).
fn deploys(environment: &Value) -> Result<bool, String> {
    match environment.get("action").and_then(Value::as_str) {
        None | Some("start") => Ok(true),
        Some(action) => Err(format!(
            "the job's environment action is `{}`, not a deployment",
            truncate(action)
        )),
    }
}

/// `object_kind: build` (a Job Hook).
fn job_event(event: &Value, received_at: i64) -> Result<Parsed, SourceError> {
    let environment = match event.get("environment") {
        Some(env @ Value::Object(_)) => env,
        _ => {
            return Ok(Parsed::Ignored(
                "the job has no environment: not a deployment".into(),
            ));
        }
    };
    if environment.get("action").and_then(Value::as_str) == Some("stop") {
        return stop_job(event, environment, received_at);
    }
    if let Err(reason) = deploys(environment) {
        return Ok(Parsed::Ignored(reason));
    }
    let job = id(event, "/build_id", "build_id")?;
    let raw_status = name(text(event, "/build_status"), "build_status")?;
    // A rejected approval fails the job: nothing was deployed.
    let rejected = text(event, "/build_failure_reason").as_deref() == Some("deployment_rejected");
    let status = if rejected {
        DeploymentStatus::Cancelled
    } else {
        status(&raw_status)
    };
    let raw_status = if rejected {
        format!("{raw_status} (deployment_rejected)")
    } else {
        raw_status
    };
    let created = time(event, "/build_created_at")?;
    let started = time(event, "/build_started_at")?;
    let finished = time(event, "/build_finished_at")?;
    let tag = event.get("tag").and_then(Value::as_bool).unwrap_or(false);
    let git_ref = text(event, "/ref");
    Ok(Parsed::Deployments(vec![Observation {
        url: project_web_url(event).map(|web| format!("{}/-/jobs/{job}", web.trim_end_matches('/'))),
        external_id: job,
        system: name(job_project(event), "project.path_with_namespace")?,
        environment: name(text(environment, "/name"), "environment.name")?,
        environment_tier: text(environment, "/deployment_tier"),
        status,
        raw_status,
        occurred_at: occurred(status, created, started, finished)
            .or(created)
            .unwrap_or(received_at),
        tags: Default::default(),
        note: None,
        environment_url: None,
        times_estimated: occurred(status, created, started, finished).is_none(),
        started_at: started,
        finished_at: if status.is_terminal() { finished } else { None },
        commit_sha: sha(text(event, "/sha")),
        version: if tag { git_ref.clone() } else { None },
        git_ref,
        actor: text(event, "/user/username").or_else(|| text(event, "/user/name")),
        tenant: None,
        committed_at: None,
        origin: None,
    }]))
}

/// A job with `environment.action: stop` (the environment's `on_stop` job): once it
/// succeeded, the environment is stopped (GitLab marks it so too).
fn stop_job(event: &Value, environment: &Value, received_at: i64) -> Result<Parsed, SourceError> {
    let raw_status = name(text(event, "/build_status"), "build_status")?;
    if status(&raw_status) != DeploymentStatus::Succeeded {
        return Ok(Parsed::Ignored(format!(
            "a stop job that is `{}`: the environment stops when it succeeds",
            truncate(&raw_status)
        )));
    }
    Ok(Parsed::Stopped(vec![crate::sources::EnvironmentStop {
        system: name(job_project(event), "project.path_with_namespace")?,
        environment: name(text(environment, "/name"), "environment.name")?,
        at: time(event, "/build_finished_at")?.unwrap_or(received_at),
    }]))
}

/// `object_kind: pipeline`: one observation per job with an environment.
fn pipeline_event(event: &Value, received_at: i64) -> Result<Parsed, SourceError> {
    let builds = event
        .get("builds")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let system = job_project(event);
    let web = project_web_url(event);
    let tag = event
        .pointer("/object_attributes/tag")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let git_ref = text(event, "/object_attributes/ref");
    let commit_sha = sha(text(event, "/object_attributes/sha"));
    // The pipeline's commit carries its time (the other kinds do not).
    let committed_at = time(event, "/commit/timestamp")?;
    let mut observations = Vec::new();
    for (index, build) in builds.iter().enumerate() {
        let Some(environment @ Value::Object(_)) = build.get("environment") else {
            continue;
        };
        if deploys(environment).is_err() {
            continue;
        }
        let at = |field: &str| -> Result<Option<i64>, SourceError> {
            time(build, &format!("/{field}")).map_err(|e| match e {
                SourceError::InvalidPayload(m) => SourceError::InvalidPayload(format!("builds[{index}].{m}")),
                other => other,
            })
        };
        let job = id(build, "/id", &format!("builds[{index}].id"))?;
        let raw_status = name(text(build, "/status"), &format!("builds[{index}].status"))?;
        let status = status(&raw_status);
        let (created, started, finished) = (at("created_at")?, at("started_at")?, at("finished_at")?);
        observations.push(Observation {
            url: web
                .as_ref()
                .map(|web| format!("{}/-/jobs/{job}", web.trim_end_matches('/'))),
            external_id: job,
            system: name(system.clone(), "project.path_with_namespace")?,
            environment: name(
                text(environment, "/name"),
                &format!("builds[{index}].environment.name"),
            )?,
            environment_tier: text(environment, "/deployment_tier"),
            status,
            raw_status,
            occurred_at: occurred(status, created, started, finished)
                .or(created)
                .or(time(event, "/object_attributes/created_at")?)
                .unwrap_or(received_at),
            tags: Default::default(),
            note: None,
            environment_url: None,
            times_estimated: occurred(status, created, started, finished).is_none(),
            started_at: started,
            finished_at: if status.is_terminal() { finished } else { None },
            commit_sha: commit_sha.clone(),
            git_ref: git_ref.clone(),
            version: if tag { git_ref.clone() } else { None },
            actor: text(build, "/user/username")
                .or_else(|| text(event, "/user/username"))
                .or_else(|| text(build, "/user/name")),
            tenant: None,
            committed_at,
            origin: None,
        });
    }
    if observations.is_empty() {
        Ok(Parsed::Ignored(
            "the pipeline has no job with an environment".into(),
        ))
    } else {
        Ok(Parsed::Deployments(observations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_word_is_mapped_deliberately() {
        let words = [
            ("created", DeploymentStatus::Queued),
            ("pending", DeploymentStatus::Queued),
            ("waiting_for_resource", DeploymentStatus::Queued),
            ("preparing", DeploymentStatus::Queued),
            ("scheduled", DeploymentStatus::Queued),
            ("manual", DeploymentStatus::Queued),
            ("blocked", DeploymentStatus::Queued),
            ("approved", DeploymentStatus::Queued),
            ("running", DeploymentStatus::Running),
            ("canceling", DeploymentStatus::Running),
            ("waiting_for_callback", DeploymentStatus::Running),
            ("success", DeploymentStatus::Succeeded),
            ("failed", DeploymentStatus::Failed),
            ("canceled", DeploymentStatus::Cancelled),
            ("skipped", DeploymentStatus::Cancelled),
            ("rejected", DeploymentStatus::Cancelled),
            ("exploded", DeploymentStatus::Unknown),
        ];
        for (word, expected) in words {
            assert_eq!(status(word), expected, "{word}");
        }
    }

    #[test]
    fn project_paths_come_out_of_urls() {
        assert_eq!(
            path_from_url("https://gitlab.com/jsmithy2/release-tools-fake").as_deref(),
            Some("jsmithy2/release-tools-fake")
        );
        assert_eq!(
            path_from_url("http://192.168.64.1:3005/gitlab-org/sub/x.git").as_deref(),
            Some("gitlab-org/sub/x")
        );
        assert_eq!(
            sha_from_commit_url("http://h/root/p/-/commit/279484c09fbe69ededfced8c1bb6e6d24616b468")
                .as_deref(),
            Some("279484c09fbe69ededfced8c1bb6e6d24616b468")
        );
        assert_eq!(sha(Some("0000000000000000000000000000000000000000".into())), None);
    }
}
