//! Sources: one file per deployment tool. A source declares how its secret travels
//! ([`Auth`]) and turns one delivery into everything the ingest pipeline needs in one call
//! ([`Source::accept`]): the delivery key, the body as it may be journaled, and the
//! observations (or why the delivery describes no deployment), reading the body once.
//! Sources are pure and synchronous: no database, network or clock here (the receive time is
//! passed in), so a fixture always gives the same output.
//!
//! [`BUILT_IN`] is the only list of sources: secrets, configuration sections, the contract
//! and fixture test suites and the seed's mix all come from it. Adding a source is a file
//! here, a line there, a fixture folder and, when it has settings, its section.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::domain::Observation;

pub mod argocd;
pub mod auth;
pub mod cdevents;
pub mod circleci;
pub mod declared;
pub mod devlake;
pub mod generic;
pub mod github;
pub mod gitlab;
pub mod heroku;
pub mod jenkins;
pub(crate) mod json;
pub mod octopus;

pub use auth::{Auth, Encoding, Secret, Signature, constant_time_eq};

/// The journaled header that marks a record an importer (or reconciliation) read from a
/// tool's API rather than a webhook: `import` or `reconcile`; `api` marks a deployment recorded
/// through shiplog's own write API. Webhooks may not send it.
pub const IMPORT_HEADER: &str = "x-shiplog-kind";

/// The journaled header that says which write token recorded a deployment through the write
/// API (a fingerprint, never the token). Webhooks may not send it.
pub const WRITER_HEADER: &str = "x-shiplog-writer";

/// How a journaled delivery came: a webhook, unless shiplog's importer marked it.
pub fn discovery(headers: &HeaderMap) -> crate::domain::Discovery {
    use crate::domain::Discovery;
    match headers.get(IMPORT_HEADER).and_then(|v| v.to_str().ok()) {
        Some("import") => Discovery::Import,
        Some("reconcile") => Discovery::Reconcile,
        Some("api") => Discovery::Api,
        _ => Discovery::Webhook,
    }
}

/// Every source shiplog has in code, by route name.
pub const BUILT_IN: &[BuiltIn] = &[
    argocd::SOURCE,
    cdevents::SOURCE,
    circleci::SOURCE,
    devlake::SOURCE,
    generic::SOURCE,
    github::SOURCE,
    gitlab::SOURCE,
    heroku::SOURCE,
    jenkins::SOURCE,
    octopus::SOURCE,
];

/// One entry of [`BUILT_IN`]: a route name and how to build the source from its settings.
pub struct BuiltIn {
    /// The name in the route (`/webhooks/{name}`), in `deployments.source`, in the secret's
    /// setting (`SHIPLOG_<NAME>_SECRET`, `[secrets] <name>`) and of its TOML section (`[name]`).
    pub name: &'static str,
    pub build: fn(&Section<'_>) -> Result<Arc<dyn Source>, String>,
}

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
    /// The tool stopped environments (GitLab's `stop` action, GitHub's `inactive` on a
    /// transient environment): they leave the board until something is deployed there again.
    Stopped(Vec<EnvironmentStop>),
}

/// An environment a tool said it stopped, in the tool's words.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStop {
    /// The system whose environment it was (the tool's name, as in its deployments).
    pub system: String,
    pub environment: String,
    /// When it stopped, epoch ms.
    pub at: i64,
}

/// A delivery a source has read: everything the pipeline needs, from one pass over the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The key that is the same when the tool re-sends the same delivery.
    pub key: String,
    /// The body as it may be journaled when it differs from the one received: tools that echo
    /// our secret back get it removed.
    pub redacted: Option<String>,
    pub parsed: Parsed,
    /// The rule that decided (`jenkins.deployment_jobs`), where the source has more than one
    /// way to decide; `None` is the source's one rule (every deployment event it reads).
    pub rule: Option<String>,
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
    fn name(&self) -> &str;
    /// How the tool sends the secret.
    fn auth(&self) -> &Auth;
    /// Reads one delivery: its key, its journal body, its observations.
    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError>;
    /// Request headers worth keeping in the journal (lower-case names; never secrets).
    fn journaled_headers(&self) -> &[&str] {
        &["content-type", "user-agent", "idempotency-key"]
    }
    /// Paths besides `/webhooks/{name}` that reach this source (axum route syntax), for tools
    /// whose senders already post somewhere else (DevLake's own API path).
    fn routes(&self) -> &[&str] {
        &[]
    }
    /// Whether an authenticated JSON body this source cannot read is stored as a failed
    /// delivery and answered 202 (a dead letter), rather than refused with 400. Tools stop
    /// sending after refusals (GitLab disables the hook), and a newer version of a tool may
    /// send what this one does not know yet; a person's curl step (the generic webhook) is
    /// better told at once.
    fn dead_letters(&self) -> bool {
        true
    }
    /// Whether shiplog makes up a secret for this source on its first start when none is
    /// configured (the generic webhook, so the README's first curl works).
    fn generates_secret(&self) -> bool {
        false
    }
}

/// A source's settings section of the TOML file (`[jenkins]`), absent when not written.
#[derive(Clone, Copy)]
pub struct Section<'a> {
    pub name: &'a str,
    pub value: Option<&'a toml::Value>,
}

impl Section<'_> {
    /// The section as its settings type (the defaults when it is absent); an error names the
    /// section and the problem.
    pub fn get<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, String> {
        match self.value {
            None => Ok(T::default()),
            Some(value) => value
                .clone()
                .try_into()
                .map_err(|error| format!("[{}]: {error}", self.name)),
        }
    }
}

/// All sources shiplog serves, by route name.
#[derive(Clone)]
pub struct Registry {
    sources: BTreeMap<String, Arc<dyn Source>>,
}

impl Registry {
    /// Every built-in source, each with its section of the settings (`sections` by name).
    pub fn new(sections: &BTreeMap<String, toml::Value>) -> Result<Self, String> {
        Self::with_declared(sections, &BTreeMap::new())
    }

    /// The built-in sources and the ones declared in `[sources]` (compiled; a mistake names
    /// the source, the key and the problem).
    pub fn with_declared(
        sections: &BTreeMap<String, toml::Value>,
        declared: &BTreeMap<String, toml::Value>,
    ) -> Result<Self, String> {
        let mut sources = BTreeMap::new();
        for built_in in BUILT_IN {
            let section = Section {
                name: built_in.name,
                value: sections.get(built_in.name),
            };
            sources.insert(built_in.name.to_string(), (built_in.build)(&section)?);
        }
        for source in declared::all(declared)? {
            sources.insert(source.name().to_string(), source);
        }
        Ok(Self { sources })
    }

    /// The source behind a route name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Source>> {
        self.sources.get(name)
    }

    /// Every source's name.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.sources.keys().map(String::as_str)
    }

    /// Every source.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Source>> + '_ {
        self.sources.values()
    }
}

/// A source built from its compiled settings, or the settings' error naming its section.
pub(crate) fn built<S: Source, E: std::fmt::Display>(
    section: &str,
    source: Result<S, E>,
) -> Result<Arc<dyn Source>, String> {
    match source {
        Ok(source) => Ok(Arc::new(source)),
        Err(error) => Err(format!("[{section}] {error}")),
    }
}

/// The environment variable that holds a source's secret (dashes become underscores).
pub fn secret_setting(source: &str) -> String {
    format!("SHIPLOG_{}_SECRET", source.to_uppercase().replace('-', "_"))
}

/// The hex SHA-256 of a body: the delivery key of last resort, stable for identical bodies.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// `sha256:<hex>` of the body, the key when a tool sends no delivery id.
pub fn body_key(body: &[u8]) -> String {
    format!("sha256:{}", body_hash(body))
}

/// The `Idempotency-Key` header when present and sane.
pub fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("idempotency-key")?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= 255).then(|| value.to_string())
}
