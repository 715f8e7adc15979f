//! Heroku (`POST /webhooks/heroku`): app webhooks for `api:release` (create and update).
//!
//! `Heroku-Webhook-Hmac-SHA256` is the base64 HMAC-SHA256 of the raw body keyed with the
//! webhook's secret; it is checked in constant time before the body is even parsed. The
//! delivery id (`webhook_metadata.delivery.id`) is stable across Heroku's retries. The
//! release number is `data.version` (the top-level `version` is the media type). The system
//! and environment come from the app's pipeline through the Platform API (`enrich/heroku.rs`);
//! without an API key, or for an app in no pipeline, the app name is the system and the
//! environment comes from the `[heroku]` rule below.

use regex::Regex;
use serde_json::Value;

use super::json::{self, text};
use super::{Accepted, Auth, BuiltIn, Delivery, Encoding, Parsed, Signature, Source, SourceError, body_key};
use crate::domain::{DeploymentStatus, MAX_NAME_LEN, Observation};

/// The registry's entry; `[heroku]` is its section.
pub const SOURCE: BuiltIn = BuiltIn {
    name: "heroku",
    build: |section| {
        super::built(
            "heroku",
            Heroku::new(section.get()?).map_err(|e| format!("environment_from_app: {e}")),
        )
    },
};

/// The `[heroku]` table of the TOML file.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HerokuConfig {
    /// For apps in no pipeline: a regex with an `environment` capture tried on the app name.
    pub environment_from_app: String,
    /// For apps in no pipeline whose name names no environment.
    pub default_environment: String,
    /// How long a pipeline coupling is cached, in seconds.
    pub coupling_cache_seconds: u64,
}

impl Default for HerokuConfig {
    fn default() -> Self {
        Self {
            environment_from_app: r"(?i)-(?P<environment>prod|production|staging|stage|stg|dev|development|qa|test|review)(?:-|$)".into(),
            default_environment: "production".into(),
            coupling_cache_seconds: 300,
        }
    }
}

/// The Heroku source.
pub struct Heroku {
    config: HerokuConfig,
    environment_from_app: Regex,
    auth: Auth,
}

impl Heroku {
    /// Compiles the rule.
    pub fn new(config: HerokuConfig) -> Result<Self, regex::Error> {
        Ok(Self {
            environment_from_app: Regex::new(&config.environment_from_app)?,
            config,
            auth: Auth::Hmac(Signature {
                header: "Heroku-Webhook-Hmac-SHA256".into(),
                encoding: Encoding::Base64,
                prefix: String::new(),
            }),
        })
    }
}

/// Heroku's release status words.
pub fn status(word: &str) -> DeploymentStatus {
    match word {
        // A release with a release phase is pending while the phase runs.
        "pending" => DeploymentStatus::Running,
        "succeeded" => DeploymentStatus::Succeeded,
        "failed" => DeploymentStatus::Failed,
        // The release phase never completed in time: the release never went live.
        "expired" => DeploymentStatus::Cancelled,
        _ => DeploymentStatus::Unknown,
    }
}

impl Source for Heroku {
    fn name(&self) -> &str {
        "heroku"
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        if super::discovery(delivery.headers) != crate::domain::Discovery::Webhook {
            // `shiplog import heroku`: `{"release": <GET /apps/{app}/releases item>}`, the same
            // representation as the webhook's `data`.
            let record = json::object(delivery.body, "a Heroku API release record")?;
            let release = record.get("release").filter(|r| r.is_object()).ok_or_else(|| {
                SourceError::InvalidPayload("`release` must be a Heroku release object".into())
            })?;
            let event = serde_json::json!({ "resource": "release", "data": release });
            return Ok(Accepted {
                key: body_key(delivery.body),
                redacted: None,
                rule: Some("heroku.api_releases".into()),
                parsed: self.parse(&event, delivery.received_at)?,
            });
        }
        let event = json::object(delivery.body, "a Heroku webhook event")?;
        // Heroku's retries keep the delivery id.
        let key = event
            .pointer("/webhook_metadata/delivery/id")
            .and_then(Value::as_str)
            .map(|id| format!("delivery:{id}"))
            .unwrap_or_else(|| body_key(delivery.body));
        Ok(Accepted {
            key,
            redacted: None,
            rule: None,
            parsed: self.parse(&event, delivery.received_at)?,
        })
    }

    fn journaled_headers(&self) -> &[&str] {
        &[
            "content-type",
            "user-agent",
            "heroku-webhook-id",
            "heroku-webhook-sent-at",
        ]
    }
}

impl Heroku {
    /// One release event as an observation.
    fn parse(&self, event: &Value, received_at: i64) -> Result<Parsed, SourceError> {
        let resource = event.get("resource").and_then(Value::as_str).unwrap_or_default();
        if resource != "release" {
            return Ok(Parsed::Ignored(format!(
                "`{}` events describe no deployment (subscribe the webhook to api:release)",
                resource.chars().take(64).collect::<String>()
            )));
        }
        let text = |pointer: &str| text(event, pointer);
        let release = text("/data/id")
            .ok_or_else(|| SourceError::InvalidPayload("`data.id` (the release id) is required".into()))?;
        let app = text("/data/app/name")
            .filter(|a| a.len() <= MAX_NAME_LEN)
            .ok_or_else(|| SourceError::InvalidPayload("`data.app.name` is required".into()))?;
        let raw_status = text("/data/status")
            .ok_or_else(|| SourceError::InvalidPayload("`data.status` is required".into()))?;
        let status = status(&raw_status);
        let time = |pointer: &str| json::time(event, pointer);
        let created = time("/data/created_at")?;
        let updated = time("/data/updated_at")?;
        // The slug's commit when Heroku includes the slug; else "Deploy 1a2b3c4" in the description.
        let commit_sha = text("/data/slug/commit").filter(|s| is_sha(s)).or_else(|| {
            text("/data/description")
                .and_then(|d| d.strip_prefix("Deploy ").map(str::to_string))
                .filter(|s| is_sha(s))
        });
        let environment = self
            .environment_from_app
            .captures(&app)
            .and_then(|c| c.name("environment"))
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| self.config.default_environment.clone());
        Ok(Parsed::Deployments(vec![Observation {
            external_id: release.clone(),
            system: app.clone(),
            environment,
            environment_tier: None,
            status,
            raw_status,
            occurred_at: if status.is_terminal() {
                updated.or(created)
            } else {
                created
            }
            .unwrap_or(received_at),
            // Heroku describes a rollback release as "Rollback to v41": its own word for one.
            tags: text("/data/description")
                .filter(|d| d.starts_with("Rollback to "))
                .map(|_| ("rollback".to_string(), "true".to_string()))
                .into_iter()
                .collect(),
            note: text("/data/description").map(|d| d.chars().take(crate::domain::MAX_TEXT_LEN).collect()),
            environment_url: None,
            times_estimated: if status.is_terminal() {
                updated.is_none()
            } else {
                created.is_none()
            },
            started_at: created,
            finished_at: if status.is_terminal() { updated } else { None },
            commit_sha: commit_sha.map(|s| s.to_lowercase()),
            git_ref: None,
            version: text("/data/version").map(|v| format!("v{v}")),
            url: Some(format!("https://dashboard.heroku.com/apps/{app}/activity")),
            actor: text("/data/user/email"),
            tenant: None,
            committed_at: None,
            origin: None,
        }]))
    }
}

fn is_sha(text: &str) -> bool {
    (7..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn the_published_test_vector_verifies() {
        // From SOURCES.md: secret `foobar`, body `a wild payload appeared`.
        let mut headers = HeaderMap::new();
        headers.insert(
            "heroku-webhook-hmac-sha256",
            "luDEVkRg2AxxcflGmamyN5mOPleyccUZdkg+C0MoRBY=".parse().unwrap(),
        );
        let body = b"a wild payload appeared";
        let delivery = Delivery {
            headers: &headers,
            query: None,
            body,
            received_at: 0,
        };
        let heroku = Heroku::new(HerokuConfig::default()).unwrap();
        let auth = heroku.auth();
        assert!(
            auth.verify(&delivery, &super::super::Secret::new("foobar"), "S")
                .is_ok()
        );
        assert!(
            auth.verify(&delivery, &super::super::Secret::new("foobaz"), "S")
                .is_err()
        );
    }

    #[test]
    fn release_statuses_are_mapped() {
        assert_eq!(status("pending"), DeploymentStatus::Running);
        assert_eq!(status("succeeded"), DeploymentStatus::Succeeded);
        assert_eq!(status("failed"), DeploymentStatus::Failed);
        assert_eq!(status("expired"), DeploymentStatus::Cancelled);
        assert_eq!(status("odd"), DeploymentStatus::Unknown);
    }
}
