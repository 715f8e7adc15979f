//! Sources: one file per deployment tool. Each verifies its deliveries, names their delivery
//! key and parses them into [`Observation`]s. Parsers are pure and synchronous: no database,
//! network or clock here (the receive time is passed in), so a fixture always gives the same
//! output.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::Observation;

pub mod generic;
pub mod gitlab;
pub mod heroku;
pub mod jenkins;
pub mod octopus;

/// One webhook request as a source sees it.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    /// When shiplog received it, epoch ms: the time of events the tool does not date.
    pub received_at: i64,
}

/// What a delivery turned out to be.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Parsed {
    /// Observations of one or more deployments.
    Deployments(Vec<Observation>),
    /// A valid delivery that describes no deployment (journaled as ignored, with the reason).
    Ignored(String),
}

/// Why a source refused a delivery. Every message tells the sender what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// Missing or wrong secret (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A body we cannot read (400).
    #[error("{0}")]
    InvalidPayload(String),
}

/// A deployment tool shiplog receives webhooks from.
pub trait Source: Send + Sync + 'static {
    /// The name in the route (`/webhooks/{name}`) and in `deployments.source`.
    fn name(&self) -> &'static str;
    /// Checks the delivery carries the configured secret; constant time.
    fn verify(&self, delivery: &Delivery<'_>, secret: &Secret) -> Result<(), SourceError>;
    /// The key that is the same when the tool re-sends the same delivery.
    fn delivery_key(&self, delivery: &Delivery<'_>) -> String;
    /// Parses the body into observations.
    fn parse(&self, delivery: &Delivery<'_>) -> Result<Parsed, SourceError>;
    /// The body as it may be journaled: tools that echo our secret back get it removed here.
    /// None keeps the body as received.
    fn redact(&self, _body: &[u8]) -> Option<Vec<u8>> {
        None
    }
    /// Request headers worth keeping in the journal (lower-case names; never secrets).
    fn journaled_headers(&self) -> &'static [&'static str] {
        &["content-type", "user-agent", "idempotency-key"]
    }
}

/// A configured shared secret. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the rare places that must send or sign with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares a presented value with the secret in constant time. Both sides are hashed
    /// first, so not even the secret's length leaks through timing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

/// Compares two byte strings in constant time; both are hashed first so their lengths do not
/// leak through timing either.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// All sources shiplog knows, by route name.
#[derive(Clone)]
pub struct Registry {
    sources: BTreeMap<&'static str, Arc<dyn Source>>,
}

impl Registry {
    /// Every built-in source, with its configuration. A new tool adds one line here.
    pub fn new(config: &SourcesConfig) -> Result<Self, jenkins::RuleError> {
        let sources: Vec<Arc<dyn Source>> = vec![
            Arc::new(generic::Generic),
            Arc::new(gitlab::Gitlab),
            Arc::new(jenkins::Jenkins::new(config.jenkins.clone())?),
            Arc::new(
                heroku::Heroku::new(config.heroku.clone()).map_err(|source| jenkins::RuleError {
                    field: "heroku.environment_from_app",
                    source,
                })?,
            ),
            Arc::new(octopus::Octopus),
        ];
        Ok(Self {
            sources: sources.into_iter().map(|s| (s.name(), s)).collect(),
        })
    }

    /// The source behind a route name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Source>> {
        self.sources.get(name)
    }

    /// Every source's name.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sources.keys().copied()
    }
}

/// Per-source settings from the TOML file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct SourcesConfig {
    /// `[jenkins]`: which builds are deployments, and of what.
    pub jenkins: jenkins::JenkinsConfig,
    /// `[heroku]`: environments of apps in no pipeline.
    pub heroku: heroku::HerokuConfig,
}

/// The route names of every built-in source.
pub const SOURCE_NAMES: &[&str] = &["generic", "gitlab", "heroku", "jenkins", "octopus"];

/// The environment variable that holds a source's secret.
pub fn secret_setting(source: &str) -> String {
    format!("SHIPLOG_{}_SECRET", source.to_uppercase())
}

/// Reads `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if scheme.eq_ignore_ascii_case(b"bearer ") {
        Some(trim_ascii(&value[7..]))
    } else {
        None
    }
}

/// Reads the password of `Authorization: Basic base64(user:password)` (any user name).
pub fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine;
    let value = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
    value.get(..6).filter(|s| s.eq_ignore_ascii_case(b"basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value[6..].trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// The hex SHA-256 of a body: the delivery key of last resort, stable for identical bodies.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The `Idempotency-Key` header when present and sane.
pub fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("idempotency-key")?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= 255).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_the_exact_value_and_never_print() {
        let secret = Secret::new("s3cret");
        assert!(secret.matches(b"s3cret"));
        assert!(!secret.matches(b"s3cre"));
        assert!(!secret.matches(b"s3cret "));
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "bearer abc ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some(&b"abc"[..]));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
