//! Octopus Deploy (`POST /webhooks/octopus`): subscription webhooks.
//!
//! Payload: `{Timestamp, EventType, Payload: {ServerUri, Subscription, Event}}`. Deployment
//! events are `Event.Category` DeploymentQueued / Started / Resumed / Succeeded / Failed /
//! Canceled; other categories are journaled as ignored. The deployment is `Deployments-N`
//! in `RelatedDocumentIds`, within the event's space. Project, release version, environment
//! and tenant names are read from `Event.Message` at the spans `MessageReferences` gives, so
//! shiplog needs no API key; with one, `enrich/octopus.rs` adds precise times, the user and
//! commits.
//!
//! Quirks kept: .NET timestamps with seven fractional digits; numbers that are sometimes
//! strings (`"TotalEventsInBatch": "3"`, span offsets); enums that were numbers in older
//! versions (`"Type": 0`) and strings later (`"Type": "Event"`); spans count UTF-16 code
//! units, as .NET strings do. Octopus echoes the subscription's custom header, our secret,
//! inside `Subscription.EventNotificationSubscription.WebhookHeaderValue`: [`Source::redact`]
//! removes it before the body is journaled.

use std::sync::Arc;

use serde_json::Value;

use super::json;
use super::{Accepted, Auth, BuiltIn, Delivery, Parsed, Source, SourceError, body_key};
use crate::domain::{DeploymentStatus, MAX_NAME_LEN, Observation, parse_instant};

/// The registry's entry.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "octopus",
    build: |_| {
        Ok(Arc::new(Octopus {
            auth: Auth::AnyOf(vec![Auth::Header("X-Shiplog-Secret".into()), Auth::Bearer]),
        }))
    },
};

/// The Octopus source.
pub struct Octopus {
    /// The secret travels in the subscription's custom header (or as a bearer token).
    auth: Auth,
}

/// Where Octopus echoes the subscription's header value (our secret).
const ECHO: &str = "/Payload/Subscription/EventNotificationSubscription/WebhookHeaderValue";

/// What replaces the echoed secret in the journal.
pub const REDACTED: &str = "[redacted by shiplog]";

/// Deployment event categories and their statuses; None for categories that are not about a
/// deployment's progress.
pub fn status(category: &str) -> Option<DeploymentStatus> {
    Some(match category {
        "DeploymentQueued" => DeploymentStatus::Queued,
        "DeploymentStarted" | "DeploymentResumed" => DeploymentStatus::Running,
        "DeploymentSucceeded" => DeploymentStatus::Succeeded,
        "DeploymentFailed" => DeploymentStatus::Failed,
        "DeploymentCanceled" | "DeploymentCancelled" => DeploymentStatus::Cancelled,
        _ => return None,
    })
}

/// A number or a numeric string.
fn number(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The text of `message` at a span counted in UTF-16 code units.
fn span(message: &[u16], start: i64, length: i64) -> Option<String> {
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    let text = String::from_utf16(message.get(start..end)?).ok()?;
    let text = text.trim().to_string();
    (!text.is_empty() && text.len() <= MAX_NAME_LEN).then_some(text)
}

impl Source for Octopus {
    fn name(&self) -> &str {
        "octopus"
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        if super::discovery(delivery.headers) != crate::domain::Discovery::Webhook {
            let record = json::object(delivery.body, "an Octopus API deployment record")?;
            return Ok(Accepted {
                key: body_key(delivery.body),
                redacted: None,
                rule: Some("octopus.api_deployments".into()),
                parsed: Parsed::Deployments(vec![api_deployment(&record, delivery.received_at)?]),
            });
        }
        let body = json::object(delivery.body, "an Octopus subscription payload")?;
        // Octopus may send an event more than once: the event id is the key.
        let key = body
            .pointer("/Payload/Event/Id")
            .and_then(Value::as_str)
            .map(|id| format!("event:{id}"))
            .unwrap_or_else(|| body_key(delivery.body));
        Ok(Accepted {
            key,
            redacted: redact(&body, delivery.body),
            rule: None,
            parsed: parse(&body, delivery.received_at)?,
        })
    }

    fn journaled_headers(&self) -> &[&str] {
        &["content-type", "user-agent"]
    }
}

/// The body without the secret Octopus echoes back; None when it echoes none.
fn redact(value: &Value, body: &[u8]) -> Option<String> {
    let echoed = value
        .pointer(ECHO)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())?;
    // Replace the JSON string literal in place, so the rest of the body stays byte for byte.
    let literal = serde_json::to_string(echoed).ok()?;
    let text = std::str::from_utf8(body).ok()?;
    let replacement = serde_json::to_string(REDACTED).ok()?;
    if text.contains(&literal) {
        return Some(text.replace(&literal, &replacement));
    }
    // Escaped differently than serde would: rewrite the whole document instead.
    let mut value = value.clone();
    if let Some(slot) = value.pointer_mut(ECHO) {
        *slot = Value::String(REDACTED.into());
    }
    serde_json::to_string(&value).ok()
}

/// One subscription event as an observation, when it is about a deployment.
fn parse(body: &Value, received_at: i64) -> Result<Parsed, SourceError> {
    let event = body
        .pointer("/Payload/Event")
        .filter(|e| e.is_object())
        .ok_or_else(|| {
            SourceError::InvalidPayload(
                "`Payload.Event` is required: send Octopus's subscription webhook payload".into(),
            )
        })?;
    let category = event.get("Category").and_then(Value::as_str).unwrap_or_default();
    let Some(status) = status(category) else {
        return Ok(Parsed::Ignored(format!(
            "`{}` events describe no deployment",
            category.chars().take(64).collect::<String>()
        )));
    };
    let related: Vec<&str> = event
        .get("RelatedDocumentIds")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let deployment = related
        .iter()
        .find(|id| id.starts_with("Deployments-"))
        .ok_or_else(|| SourceError::InvalidPayload("`RelatedDocumentIds` names no `Deployments-N`".into()))?;
    let space = event
        .get("SpaceId")
        .and_then(Value::as_str)
        .or_else(|| {
            body.pointer("/Payload/Subscription/SpaceId")
                .and_then(Value::as_str)
        })
        .unwrap_or("Spaces-1");
    let names = message_names(event);
    let project = names.get("Projects").cloned().or_else(|| {
        related
            .iter()
            .find(|id| id.starts_with("Projects-"))
            .map(|s| s.to_string())
    });
    let environment = names.get("Environments").cloned().or_else(|| {
        related
            .iter()
            .find(|id| id.starts_with("Environments-"))
            .map(|s| s.to_string())
    });
    let times_estimated = event.get("Occurred").or(body.get("Timestamp")).is_none();
    let occurred = match event.get("Occurred").or(body.get("Timestamp")) {
        Some(value) => {
            parse_instant(value).map_err(|e| SourceError::InvalidPayload(format!("`Event.Occurred`: {e}")))?
        }
        None => received_at,
    };
    let server = body
        .pointer("/Payload/ServerUri")
        .and_then(Value::as_str)
        .map(|s| s.trim_end_matches('/').to_string());
    Ok(Parsed::Deployments(vec![Observation {
        tags: Default::default(),
        note: None,
        environment_url: None,
        external_id: format!("{space}/{deployment}"),
        system: project.ok_or_else(|| SourceError::InvalidPayload("the event names no project".into()))?,
        environment: environment
            .ok_or_else(|| SourceError::InvalidPayload("the event names no environment".into()))?,
        environment_tier: None,
        status,
        raw_status: category.to_string(),
        occurred_at: occurred,
        started_at: (status == DeploymentStatus::Running).then_some(occurred),
        finished_at: status.is_terminal().then_some(occurred),
        commit_sha: None,
        git_ref: None,
        version: names.get("Releases").cloned(),
        url: server
            .as_ref()
            .map(|s| format!("{s}/app#/{space}/deployments/{deployment}")),
        actor: deployer(event),
        tenant: names.get("Tenants").cloned(),
        committed_at: None,
        origin: server,
        times_estimated,
    }]))
}

/// A task's `State` (`Octopus.Client` `TaskState`) as a status.
pub fn task_status(state: &str) -> DeploymentStatus {
    match state {
        "Queued" => DeploymentStatus::Queued,
        // Cancelling comes before Canceled.
        "Executing" | "Cancelling" => DeploymentStatus::Running,
        "Success" => DeploymentStatus::Succeeded,
        "Failed" | "TimedOut" => DeploymentStatus::Failed,
        "Canceled" => DeploymentStatus::Cancelled,
        _ => DeploymentStatus::Unknown,
    }
}

/// A record `shiplog import octopus` read: `{"server": URL, "space": "Spaces-1",
/// "deployment": <GET /api/{space}/deployments item>, "task": <its GET /api/tasks/{TaskId}>,
/// "release": <its GET .../releases/{ReleaseId}>, "project", "environment", "tenant": the
/// names of its ids}`. The id is the webhooks' (`space/Deployments-N`); `DeployedBy` is the
/// deployer unless it is Octopus's own `system` account.
fn api_deployment(record: &Value, received_at: i64) -> Result<Observation, SourceError> {
    let text = |pointer: &str| json::text(record, pointer);
    let deployment = text("/deployment/Id")
        .ok_or_else(|| SourceError::InvalidPayload("`deployment.Id` is required".into()))?;
    let space = text("/space")
        .or_else(|| text("/deployment/SpaceId"))
        .unwrap_or_else(|| "Spaces-1".into());
    let raw_status = text("/task/State").unwrap_or_else(|| "Queued".into());
    let status = task_status(&raw_status);
    let time = |pointer: &str| json::time(record, pointer);
    let (queued, started, completed) = (
        time("/task/QueueTime")?.or(time("/deployment/Created")?),
        time("/task/StartTime")?,
        time("/task/CompletedTime")?,
    );
    let at = match status {
        s if s.is_terminal() => completed,
        DeploymentStatus::Running => started,
        _ => queued,
    };
    let server = text("/server").map(|s| s.trim_end_matches('/').to_string());
    let commit = text("/release/VersionControlReference/GitCommit").or_else(|| {
        record
            .pointer("/release/BuildInformation")
            .and_then(Value::as_array)
            .and_then(|items| items.iter().find_map(|i| json::text(i, "/VcsCommitNumber")))
    });
    let deployer = text("/deployment/DeployedBy").filter(|d| !d.eq_ignore_ascii_case("system"));
    Ok(Observation {
        external_id: format!("{space}/{deployment}"),
        system: json::name(text("/project"), "project")?,
        environment: json::name(text("/environment"), "environment")?,
        environment_tier: None,
        status,
        raw_status,
        occurred_at: at.unwrap_or(received_at),
        tags: Default::default(),
        note: None,
        environment_url: None,
        times_estimated: at.is_none(),
        started_at: started,
        finished_at: if status.is_terminal() { completed } else { None },
        commit_sha: json::sha(commit),
        git_ref: text("/release/VersionControlReference/GitRef")
            .map(|r| r.trim_start_matches("refs/heads/").to_string()),
        version: text("/release/Version"),
        url: server
            .as_ref()
            .map(|s| format!("{s}/app#/{space}/deployments/{deployment}")),
        actor: deployer,
        tenant: text("/tenant"),
        committed_at: None,
        origin: server,
    })
}

/// The names `Event.Message` holds at the spans `MessageReferences` gives, by document kind
/// (`Projects`, `Environments`, `Releases`, `Tenants`).
fn message_names(event: &Value) -> std::collections::HashMap<String, String> {
    let message: Vec<u16> = event
        .get("Message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .encode_utf16()
        .collect();
    let mut names = std::collections::HashMap::new();
    for reference in event
        .get("MessageReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = reference.get("ReferencedDocumentId").and_then(Value::as_str) else {
            continue;
        };
        let (Some(start), Some(length)) = (
            number(reference.get("StartIndex")),
            number(reference.get("Length")),
        ) else {
            continue;
        };
        if let (Some(kind), Some(text)) = (id.split('-').next(), span(&message, start, length)) {
            names.entry(kind.to_string()).or_insert(text);
        }
    }
    names
}

/// Who deployed, when the event says: the account that raised it, unless that is Octopus's own
/// `system` account (Started, Succeeded and Failed events are all raised by it; the
/// deployment's own user comes from DeploymentQueued, or from the API with a key).
fn deployer(event: &Value) -> Option<String> {
    let text = |key: &str| {
        event
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let system = text("UserId").is_some_and(|id| id.eq_ignore_ascii_case("users-system"))
        || text("Username").is_some_and(|name| name.eq_ignore_ascii_case("system"));
    (!system).then(|| text("Username").map(str::to_string)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_count_utf16_code_units() {
        let message: Vec<u16> = "Déploy 😀 to Prod".encode_utf16().collect();
        // "😀" is two UTF-16 units, so "to" starts at 10.
        assert_eq!(span(&message, 10, 2).as_deref(), Some("to"));
        assert_eq!(span(&message, 13, 4).as_deref(), Some("Prod"));
        assert_eq!(span(&message, 15, 40), None);
        assert_eq!(span(&message, -1, 2), None);
    }

    #[test]
    fn deployment_categories_are_mapped_and_others_are_not() {
        assert_eq!(status("DeploymentQueued"), Some(DeploymentStatus::Queued));
        assert_eq!(status("DeploymentSucceeded"), Some(DeploymentStatus::Succeeded));
        assert_eq!(status("DeploymentCanceled"), Some(DeploymentStatus::Cancelled));
        assert_eq!(status("Created"), None);
    }

    #[test]
    fn numbers_may_be_strings() {
        assert_eq!(number(Some(&serde_json::json!("33"))), Some(33));
        assert_eq!(number(Some(&serde_json::json!(33))), Some(33));
        assert_eq!(number(Some(&serde_json::json!(null))), None);
    }
}
