//! Apache DevLake's deployment webhook (`POST /webhooks/devlake`, and DevLake's own path
//! `/api/rest/plugins/webhook/connections/{id}/deployments`, so a team moving off DevLake
//! changes only the host and the key): the body of DevLake's "register a deployment" call, as
//! its docs and code publish it, with `Authorization: Bearer <key>`.
//!
//! A DevLake deployment lists one commit per repository (`deploymentCommits`); each entry is
//! one shiplog deployment of that repository (the system: its path, `owner/repo`), all under
//! the one DevLake id: `externalId` is `<DevLake id>:<repository path>`. `environment` is
//! DevLake's tier (`PRODUCTION|STAGING|TESTING|DEVELOPMENT`, checked as DevLake checks it);
//! `originalEnvironment`, when sent, is the environment's own name. A person's curl step sends
//! this, so a body shiplog cannot read is answered 400 with what to fix.
//!
//! Quirks kept: dates with `+0000` offsets; no Content-Type (the docs' curl sends none);
//! `result` is free text (DevLake defaults it to SUCCESS); commit shas are not checked as hex
//! by DevLake (`"c1"` in its sample), so only real shas become `commitSha`; the older forms
//! (one commit in snake_case fields, DevLake 0.21's snake_case items) are read too.

use serde_json::Value;

use super::json::{self, name, sha, text, time, truncate};
use super::{Accepted, Auth, BuiltIn, Delivery, Parsed, Source, SourceError};
use crate::domain::catalog::{REPOSITORY_TAG, Repository};
use crate::domain::{DeploymentStatus, Observation};

/// The registry's entry.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "devlake",
    build: |_| Ok(std::sync::Arc::new(Devlake { auth: Auth::Bearer })),
};

/// The DevLake source.
pub struct Devlake {
    /// DevLake's API key travels as a bearer token.
    auth: Auth,
}

/// DevLake's `result` words (`SUCCESS` when none is sent, as DevLake defaults it).
pub fn result(word: &str) -> DeploymentStatus {
    match word.to_ascii_uppercase().as_str() {
        "SUCCESS" => DeploymentStatus::Succeeded,
        "FAILURE" => DeploymentStatus::Failed,
        "ABORT" => DeploymentStatus::Cancelled,
        // MANUAL is in DevLake's list without a meaning it documents: kept as the word.
        _ => DeploymentStatus::Unknown,
    }
}

/// DevLake's environment tiers.
const TIERS: &[&str] = &["PRODUCTION", "STAGING", "TESTING", "DEVELOPMENT"];

impl Source for Devlake {
    fn name(&self) -> &str {
        "devlake"
    }

    /// A person's curl step sends this: a 400 with the message tells them at once.
    fn dead_letters(&self) -> bool {
        false
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        let body = json::object(
            delivery.body,
            "DevLake's deployment: id, startedDate, finishedDate, deploymentCommits",
        )?;
        let observations = parse(&body)?;
        Ok(Accepted {
            // DevLake replaces a deployment posted again with the same id; shiplog merges it,
            // and a body posted twice is one delivery.
            key: super::body_key(delivery.body),
            redacted: None,
            rule: None,
            parsed: Parsed::Deployments(observations),
        })
    }

    fn routes(&self) -> &[&str] {
        &[
            "/api/rest/plugins/webhook/connections/{connection}/deployments",
            "/api/rest/plugins/webhook/{connection}/deployments",
            "/rest/plugins/webhook/connections/{connection}/deployments",
        ]
    }
}

/// Every problem with the body at once, DevLake's checks included.
fn parse(body: &Value) -> Result<Vec<Observation>, SourceError> {
    let commits = commits(body);
    let legacy = commits.is_empty() && body.get("commit_sha").is_some();
    let mut problems = Vec::new();
    let id = text(body, "/id").or_else(|| text(body, "/pipeline_id"));
    let started = either(body, "/startedDate", "/start_time", &mut problems);
    let finished = either(body, "/finishedDate", "/end_time", &mut problems);
    if id.is_none() && !legacy {
        problems.push("`id` is required".into());
    }
    if started.is_none() {
        problems.push("`startedDate` is required".into());
    }
    let tier = text(body, "/environment").unwrap_or_else(|| "PRODUCTION".into());
    if !TIERS.contains(&tier.as_str()) {
        problems.push(format!(
            "`environment` is `{}`; use one of {} (send the environment's own name as `originalEnvironment`)",
            truncate(&tier),
            TIERS.join(", ")
        ));
    }
    let commits = if legacy { vec![body.clone()] } else { commits };
    if commits.is_empty() {
        problems.push("`deploymentCommits` must list at least one commit (repoUrl, commitSha)".into());
    }
    let raw_result = text(body, "/result").unwrap_or_else(|| "SUCCESS".into());
    let environment = text(body, "/originalEnvironment").unwrap_or_else(|| tier.to_lowercase());
    let mut observations = Vec::new();
    for (index, commit) in commits.iter().enumerate() {
        let repository = text(commit, "/repoUrl").or_else(|| text(commit, "/repo_url"));
        let Some(repository) = repository else {
            problems.push(format!("`deploymentCommits[{index}].repoUrl` is required"));
            continue;
        };
        if text(commit, "/commitSha")
            .or_else(|| text(commit, "/commit_sha"))
            .is_none()
        {
            problems.push(format!("`deploymentCommits[{index}].commitSha` is required"));
        }
        let path = repository_path(&repository);
        let raw_status = text(commit, "/result").unwrap_or_else(|| raw_result.clone());
        let status = result(&raw_status);
        let finished_at = finished.or(started);
        observations.push(Observation {
            external_id: format!("{}:{path}", id.clone().unwrap_or_else(|| "legacy".into())),
            system: path,
            environment: environment.clone(),
            environment_tier: Some(tier.to_lowercase()),
            status,
            raw_status,
            occurred_at: finished_at.unwrap_or_default(),
            started_at: started,
            finished_at: finished_at.filter(|_| status.is_terminal()),
            commit_sha: sha(text(commit, "/commitSha").or_else(|| text(commit, "/commit_sha"))),
            git_ref: text(commit, "/refName").or_else(|| text(commit, "/ref_name")),
            // DevLake has no version field (its titles are free text).
            version: None,
            url: text(body, "/url"),
            actor: None,
            tenant: None,
            committed_at: None,
            origin: None,
            tags: Repository::from_url(&repository)
                .map(|r| (REPOSITORY_TAG.to_string(), r.key()))
                .into_iter()
                .collect(),
            note: None,
            environment_url: None,
            times_estimated: false,
        });
    }
    for observation in &observations {
        for (what, value) in [("id", &observation.external_id), ("repoUrl", &observation.system)] {
            if let Err(SourceError::InvalidPayload(problem)) = name(Some(value.clone()), what) {
                problems.push(problem);
            }
        }
    }
    if problems.is_empty() {
        Ok(observations)
    } else {
        Err(SourceError::InvalidPayload(problems.join("; ")))
    }
}

/// The commits of a deployment (current and 0.21 key names).
fn commits(body: &Value) -> Vec<Value> {
    ["/deploymentCommits", "/deployment_commits"]
        .iter()
        .find_map(|pointer| body.pointer(pointer).and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// A time under its current name or its old one; a bad one is a problem.
fn either(body: &Value, current: &str, old: &str, problems: &mut Vec<String>) -> Option<i64> {
    let pointer = if body.pointer(current).is_some() {
        current
    } else {
        old
    };
    match time(body, pointer) {
        Ok(at) => at,
        Err(SourceError::InvalidPayload(problem) | SourceError::Unauthorized(problem)) => {
            problems.push(problem);
            None
        }
    }
}

/// `owner/repo` from a repository URL (`https://github.com/owner/repo.git`,
/// `git@github.com:owner/repo.git`); anything else as it is.
pub fn repository_path(url: &str) -> String {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, path)| path),
        None => url
            .split_once(':')
            .filter(|(host, _)| host.contains('@'))
            .map(|(_, path)| path),
    };
    match rest.map(|path| path.trim_end_matches('/').trim_end_matches(".git")) {
        Some(path) if !path.is_empty() => path.to_string(),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_become_their_paths() {
        assert_eq!(
            repository_path("https://github.com/apache/incubator-devlake.git"),
            "apache/incubator-devlake"
        );
        assert_eq!(
            repository_path("git@gitlab.com:group/sub/app.git"),
            "group/sub/app"
        );
        assert_eq!(repository_path("required-repo-url"), "required-repo-url");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let body = serde_json::json!({ "environment": "prod", "deploymentCommits": [{}] });
        let problems = parse(&body).unwrap_err().to_string();
        for expected in [
            "`id` is required",
            "`startedDate` is required",
            "`environment` is `prod`",
            "repoUrl` is required",
        ] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
    }
}
