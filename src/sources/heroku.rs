//! Heroku (`POST /webhooks/heroku`): app webhooks for `api:release` (create and update).
//!
//! `Heroku-Webhook-Hmac-SHA256` is the base64 HMAC-SHA256 of the raw body keyed with the
//! webhook's secret; it is checked in constant time before the body is even parsed. The
//! delivery id (`webhook_metadata.delivery.id`) is stable across Heroku's retries. The
//! release number is `data.version` (the top-level `version` is the media type). The system
//! and environment come from the app's pipeline through the Platform API (`enrich/heroku.rs`);
//! without an API key, or for an app in no pipeline, the app name is the system and the
//! environment comes from the `[heroku]` rule below.

use base64::Engine;
use hmac::{Hmac, Mac};
use regex::Regex;
use serde_json::Value;
use sha2::Sha256;

use super::{Delivery, Parsed, Secret, Source, SourceError, body_hash, constant_time_eq};
use crate::domain::{DeploymentStatus, MAX_NAME_LEN, Observation, parse_instant};

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
}

impl Heroku {
    /// Compiles the rule.
    pub fn new(config: HerokuConfig) -> Result<Self, regex::Error> {
        Ok(Self {
            environment_from_app: Regex::new(&config.environment_from_app)?,
            config,
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
    fn name(&self) -> &'static str {
        "heroku"
    }

    fn verify(&self, delivery: &Delivery<'_>, secret: &Secret) -> Result<(), SourceError> {
        let Some(signature) = delivery.headers.get("heroku-webhook-hmac-sha256") else {
            return Err(SourceError::Unauthorized(
                "no Heroku-Webhook-Hmac-SHA256 header: create the webhook with --secret SHIPLOG_HEROKU_SECRET".into(),
            ));
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .map_err(|_| SourceError::Unauthorized("SHIPLOG_HEROKU_SECRET cannot key an HMAC".into()))?;
        mac.update(delivery.body);
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        if constant_time_eq(expected.as_bytes(), signature.as_bytes().trim_ascii()) {
            Ok(())
        } else {
            Err(SourceError::Unauthorized(
                "the Heroku-Webhook-Hmac-SHA256 signature does not match the body signed with SHIPLOG_HEROKU_SECRET".into(),
            ))
        }
    }

    fn delivery_key(&self, delivery: &Delivery<'_>) -> String {
        let value: Value = serde_json::from_slice(delivery.body).unwrap_or(Value::Null);
        value
            .pointer("/webhook_metadata/delivery/id")
            .and_then(Value::as_str)
            .map(|id| format!("delivery:{id}"))
            .unwrap_or_else(|| format!("sha256:{}", body_hash(delivery.body)))
    }

    fn parse(&self, delivery: &Delivery<'_>) -> Result<Parsed, SourceError> {
        let event: Value = serde_json::from_slice(delivery.body)
            .map_err(|e| SourceError::InvalidPayload(format!("the body is not JSON: {e}")))?;
        if !event.is_object() {
            return Err(SourceError::InvalidPayload(
                "the body must be a JSON object (a Heroku webhook event)".into(),
            ));
        }
        let resource = event.get("resource").and_then(Value::as_str).unwrap_or_default();
        if resource != "release" {
            return Ok(Parsed::Ignored(format!(
                "`{}` events describe no deployment (subscribe the webhook to api:release)",
                resource.chars().take(64).collect::<String>()
            )));
        }
        let text = |pointer: &str| {
            event.pointer(pointer).and_then(|v| match v {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let release = text("/data/id")
            .ok_or_else(|| SourceError::InvalidPayload("`data.id` (the release id) is required".into()))?;
        let app = text("/data/app/name")
            .filter(|a| a.len() <= MAX_NAME_LEN)
            .ok_or_else(|| SourceError::InvalidPayload("`data.app.name` is required".into()))?;
        let raw_status = text("/data/status")
            .ok_or_else(|| SourceError::InvalidPayload("`data.status` is required".into()))?;
        let status = status(&raw_status);
        let time = |pointer: &str| -> Result<Option<i64>, SourceError> {
            match event.pointer(pointer) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => parse_instant(v).map(Some).map_err(|e| {
                    SourceError::InvalidPayload(format!(
                        "`{}`: {e}",
                        pointer.trim_start_matches('/').replace('/', ".")
                    ))
                }),
            }
        };
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
            .unwrap_or(delivery.received_at),
            started_at: created,
            finished_at: if status.is_terminal() { updated } else { None },
            commit_sha: commit_sha.map(|s| s.to_lowercase()),
            git_ref: None,
            version: text("/data/version").map(|v| format!("v{v}")),
            url: Some(format!("https://dashboard.heroku.com/apps/{app}/activity")),
            actor: text("/data/user/email"),
            tenant: None,
            committed_at: None,
        }]))
    }

    fn journaled_headers(&self) -> &'static [&'static str] {
        &[
            "content-type",
            "user-agent",
            "heroku-webhook-id",
            "heroku-webhook-sent-at",
        ]
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
        assert!(heroku.verify(&delivery, &Secret::new("foobar")).is_ok());
        assert!(heroku.verify(&delivery, &Secret::new("foobaz")).is_err());
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
