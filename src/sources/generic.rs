//! shiplog's own webhook format, for any tool that can run curl at the end of a pipeline.
//!
//! ```json
//! { "id": "build-1234", "system": "billing", "environment": "production",
//!   "status": "succeeded", "startedAt": "2026-11-26T14:00:00Z",
//!   "finishedAt": "2026-11-26T14:03:00Z", "commitSha": "9f2c...", "ref": "main",
//!   "version": "1.4.2", "url": "https://ci.example.com/build/1234", "actor": "ada" }
//! ```
//! `id`, `system`, `environment` and `status` are required. Times are ISO-8601 or epoch
//! milliseconds. `committedAt` (when the deployed commit was made) feeds DORA's lead time. The secret travels as `Authorization: Bearer <secret>`.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Accepted, Auth, BuiltIn, Delivery, Parsed, Source, SourceError, body_key, idempotency_key};
use crate::domain::{DeploymentStatus, MAX_NAME_LEN, MAX_TEXT_LEN, Observation, parse_instant};

/// The registry's entry.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "generic",
    build: |_| Ok(Arc::new(Generic { auth: Auth::Bearer })),
};

/// The generic source (`POST /webhooks/generic`).
pub struct Generic {
    auth: Auth,
}

/// The status words the generic format accepts, and what each means.
const STATUS_WORDS: &[(&str, DeploymentStatus)] = &[
    ("queued", DeploymentStatus::Queued),
    ("running", DeploymentStatus::Running),
    ("succeeded", DeploymentStatus::Succeeded),
    ("failed", DeploymentStatus::Failed),
    ("cancelled", DeploymentStatus::Cancelled),
    // The American spelling is common enough in pipelines to accept silently.
    ("canceled", DeploymentStatus::Cancelled),
];

const KNOWN_FIELDS: &[&str] = &[
    "id",
    "system",
    "environment",
    "status",
    "startedAt",
    "finishedAt",
    "commitSha",
    "ref",
    "version",
    "url",
    "actor",
    "committedAt",
    "tags",
    "description",
];

impl Source for Generic {
    fn name(&self) -> &str {
        "generic"
    }

    /// A person's curl step sends this: a 400 with the message tells them at once.
    fn dead_letters(&self) -> bool {
        false
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        Ok(Accepted {
            key: idempotency_key(delivery.headers).unwrap_or_else(|| body_key(delivery.body)),
            redacted: None,
            rule: None,
            parsed: parse(delivery)?,
        })
    }

    fn generates_secret(&self) -> bool {
        true
    }
}

/// Reads a generic delivery, naming every problem at once.
fn parse(delivery: &Delivery<'_>) -> Result<Parsed, SourceError> {
    let value: Value = serde_json::from_slice(delivery.body)
        .map_err(|e| SourceError::InvalidPayload(format!("the body is not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(SourceError::InvalidPayload(
            "the body must be a JSON object with id, system, environment and status".into(),
        ));
    };
    let mut problems = Vec::new();
    let external_id = required(&object, "id", &mut problems);
    let system = required(&object, "system", &mut problems);
    let environment = required(&object, "environment", &mut problems);
    let raw_status = required(&object, "status", &mut problems);
    let status = raw_status
        .as_deref()
        .and_then(|word| status_of(word, &mut problems));
    let started_at = instant(&object, "startedAt", &mut problems);
    let finished_at = instant(&object, "finishedAt", &mut problems);
    let committed_at = instant(&object, "committedAt", &mut problems);
    let commit_sha = optional_text(&object, "commitSha", &mut problems);
    let git_ref = optional_text(&object, "ref", &mut problems);
    let version = optional_text(&object, "version", &mut problems);
    let url = optional_text(&object, "url", &mut problems);
    let actor = optional_text(&object, "actor", &mut problems);
    // `tags` and `description` were fields shiplog ignored before it read them: what it cannot
    // use of them is left out (and logged), never a reason to refuse the deployment.
    let note = object
        .get("description")
        .and_then(Value::as_str)
        .map(|d| d.trim().chars().take(MAX_TEXT_LEN).collect::<String>())
        .filter(|d| !d.is_empty());
    let tags = tags(&object);
    if let Some(sha) = &commit_sha
        && (sha.len() < 4 || sha.len() > 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        problems.push(format!("`commitSha` is `{}`; use a hex git sha", truncated(sha)));
    }
    if let (Some(start), Some(finish)) = (started_at, finished_at)
        && finish < start
    {
        problems.push("`finishedAt` is before `startedAt`".into());
    }
    let unknown: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|key| !KNOWN_FIELDS.contains(key))
        .collect();
    if !unknown.is_empty() {
        tracing::debug!(?unknown, "generic delivery has fields shiplog does not read");
    }
    match (external_id, system, environment, raw_status, status) {
        (Some(external_id), Some(system), Some(environment), Some(raw_status), Some(status))
            if problems.is_empty() =>
        {
            let occurred_at = match status {
                DeploymentStatus::Running => started_at,
                s if s.is_terminal() => finished_at,
                _ => None,
            };
            let times_estimated = occurred_at.is_none();
            let occurred_at = occurred_at.unwrap_or(delivery.received_at);
            Ok(Parsed::Deployments(vec![Observation {
                tags,
                note,
                environment_url: None,
                external_id,
                system,
                environment,
                environment_tier: None,
                status,
                raw_status,
                occurred_at,
                started_at,
                finished_at: finished_at.filter(|_| status.is_terminal()),
                commit_sha: commit_sha.map(|sha| sha.to_lowercase()),
                git_ref,
                version,
                url,
                actor,
                tenant: None,
                committed_at,
                origin: None,
                times_estimated,
            }]))
        }
        _ => Err(SourceError::InvalidPayload(problems.join("; "))),
    }
}

/// The status a word means, or a problem naming the words there are.
fn status_of(word: &str, problems: &mut Vec<String>) -> Option<DeploymentStatus> {
    let found = STATUS_WORDS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(word.trim()))
        .map(|(_, status)| *status);
    if found.is_none() {
        problems.push(format!(
            "`status` is `{}`; use one of queued, running, succeeded, failed, cancelled",
            truncated(word)
        ));
    }
    found
}

fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}

fn required(object: &Map<String, Value>, field: &str, problems: &mut Vec<String>) -> Option<String> {
    match object.get(field) {
        None | Some(Value::Null) => {
            problems.push(format!("`{field}` is required"));
            None
        }
        Some(Value::String(text)) if text.trim().is_empty() => {
            problems.push(format!("`{field}` must not be empty"));
            None
        }
        Some(Value::String(text)) if text.len() > MAX_NAME_LEN => {
            problems.push(format!("`{field}` is longer than {MAX_NAME_LEN} bytes"));
            None
        }
        Some(Value::String(text)) => Some(text.trim().to_string()),
        // Tools often send numeric ids; keep them as their decimal text.
        Some(Value::Number(number)) if field == "id" => Some(number.to_string()),
        Some(other) => {
            problems.push(format!("`{field}` must be a string, got {}", kind(other)));
            None
        }
    }
}

fn optional_text(object: &Map<String, Value>, field: &str, problems: &mut Vec<String>) -> Option<String> {
    match object.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.len() > MAX_TEXT_LEN => {
            problems.push(format!("`{field}` is longer than {MAX_TEXT_LEN} bytes"));
            None
        }
        Some(Value::String(text)) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
        Some(Value::Number(number)) if field == "version" => Some(number.to_string()),
        Some(other) => {
            problems.push(format!("`{field}` must be a string, got {}", kind(other)));
            None
        }
    }
}

/// `tags`: an object of string (or number, or boolean) values; what is not a usable tag is
/// left out.
fn tags(object: &Map<String, Value>) -> std::collections::BTreeMap<String, String> {
    let Some(Value::Object(map)) = object.get("tags") else {
        if object.get("tags").is_some_and(|v| !v.is_null()) {
            tracing::debug!("generic delivery's `tags` is not an object; left out");
        }
        return Default::default();
    };
    crate::domain::tags::usable(map.iter().filter_map(|(key, value)| match value {
        Value::String(text) => Some((key.clone(), text.clone())),
        Value::Number(_) | Value::Bool(_) => Some((key.clone(), value.to_string())),
        _ => None,
    }))
}

fn instant(object: &Map<String, Value>, field: &str, problems: &mut Vec<String>) -> Option<i64> {
    match object.get(field) {
        None | Some(Value::Null) => None,
        Some(value) => match parse_instant(value) {
            Ok(millis) => Some(millis),
            Err(error) => {
                problems.push(format!("`{field}`: {error}"));
                None
            }
        },
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn parse(body: &str) -> Result<Parsed, SourceError> {
        let headers = HeaderMap::new();
        super::parse(&Delivery {
            headers: &headers,
            query: None,
            body: body.as_bytes(),
            received_at: 1000,
        })
    }

    #[test]
    fn a_full_delivery_becomes_one_observation() {
        let parsed = parse(
            r#"{"id":"b-1","system":"billing","environment":"prod","status":"succeeded",
                "startedAt":"2026-11-26T14:00:00Z","finishedAt":1795701780000,
                "commitSha":"9F2C1A","ref":"main","version":"1.2","url":"https://ci/1","actor":"ada"}"#,
        )
        .unwrap();
        let Parsed::Deployments(observations) = parsed else {
            panic!("not deployments")
        };
        let observation = &observations[0];
        assert_eq!(observation.status, DeploymentStatus::Succeeded);
        assert_eq!(observation.occurred_at, 1_795_701_780_000);
        assert_eq!(observation.commit_sha.as_deref(), Some("9f2c1a"));
        assert_eq!(observation.environment, "prod");
    }

    #[test]
    fn every_problem_is_named_in_one_message() {
        let SourceError::InvalidPayload(message) =
            parse(r#"{"id":"x","status":"done","startedAt":"soon"}"#).unwrap_err()
        else {
            panic!("wrong error")
        };
        assert!(message.contains("`system` is required"), "{message}");
        assert!(message.contains("`environment` is required"), "{message}");
        assert!(message.contains("`status` is `done`"), "{message}");
        assert!(message.contains("`startedAt`"), "{message}");
    }

    #[test]
    fn a_running_delivery_happens_at_its_start() {
        let Parsed::Deployments(observations) = parse(
            r#"{"id":7,"system":"s","environment":"e","status":"Running","startedAt":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap() else {
            panic!("not deployments")
        };
        assert_eq!(observations[0].external_id, "7");
        assert_eq!(observations[0].occurred_at, 1_767_225_600_000);
        assert_eq!(observations[0].finished_at, None);
    }
}
