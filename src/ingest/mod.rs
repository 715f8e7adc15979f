//! The ingest pipeline: the one path every producer of deployments takes (the webhook
//! handler, the enrichment worker, replay; importers next). It reads top to bottom:
//!
//! ```text
//! verify   the source's declared Auth, against its secret          sources/auth.rs
//! accept   one pass over the body: key, journal body, observations  sources/<tool>.rs
//! enrich   (pending deliveries only, later, by the worker)          enrich/
//! map      system and environment rules                             domain/rules.rs
//! journal + apply, one commit (group commit)                        store/writer.rs, store/apply.rs
//! publish  after the commit, by the writer                          events.rs
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use entity::deliveries;
use serde_json::{Map, Value};

use crate::domain::{Decision, Discovery, MappedObservation, MappingRules, Observation};
use crate::enrich::{EnrichError, Enrichers};
use crate::sources::{
    Delivery, IMPORT_HEADER, Parsed, Registry, Secret, Source, SourceError, WRITER_HEADER, secret_setting,
};
use crate::store::writer::Writer;
use crate::store::{NewDelivery, Outcome, StoreError, Work};

pub mod replay;

/// Why a delivery was not taken. Each says what to fix; `Store` means "not stored: retry".
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No source by that name (404).
    #[error("{0}")]
    UnknownSource(String),
    /// No secret configured, or the wrong one presented (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A body that cannot be read (400), with a short code.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The database could not store it (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tool's API could not complete an imported record (the import stops; run it again).
    #[error("{0}")]
    Api(String),
}

impl From<SourceError> for IngestError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Unauthorized(message) => Self::Unauthorized(message),
            SourceError::InvalidPayload(message) => Self::Invalid {
                code: "invalid_payload",
                message,
            },
        }
    }
}

/// One delivery as received on a route.
pub struct Received<'a> {
    pub source: &'a str,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub received_at: i64,
    /// A delivery still waiting for the database then is refused, not stored.
    pub deadline: Instant,
}

/// One record an importer read from a tool's API, to be journaled and applied like a delivery.
pub struct Record {
    pub source: &'static str,
    /// Stable for the same state of the same object, so reading it again is a duplicate.
    pub key: String,
    /// The record as the source reads it (the API object, with the scope it was read for).
    pub body: String,
    /// Headers journaled with it (the GitLab instance it came from, say).
    pub headers: HeaderMap,
    pub received_at: i64,
}

/// The pipeline, shared by every producer.
#[derive(Clone)]
pub struct Ingest {
    sources: Registry,
    secrets: Arc<BTreeMap<String, Secret>>,
    enrichers: Enrichers,
    /// Replaced when the settings are read again (SIGHUP, or the file changed).
    rules: Current<MappingRules>,
    /// The catalog the GraphQL API reads, replaced with the rules.
    catalog: Current<crate::domain::Catalog>,
    writer: Writer,
    /// Wakes the enrichment worker when a delivery is journaled as pending.
    kick: Arc<tokio::sync::Notify>,
    /// Wakes the commits worker when deployments were stored or the GraphQL API queued a
    /// commit range.
    commits_kick: Arc<tokio::sync::Notify>,
}

impl Ingest {
    pub fn new(
        sources: Registry,
        secrets: BTreeMap<String, Secret>,
        enrichers: Enrichers,
        rules: Arc<MappingRules>,
        writer: Writer,
    ) -> Self {
        Self {
            sources,
            secrets: Arc::new(secrets),
            enrichers,
            rules: Current::new(rules),
            catalog: Current::new(Arc::default()),
            writer,
            kick: Arc::new(tokio::sync::Notify::new()),
            commits_kick: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The pipeline with this catalog (the one the settings checked).
    pub fn with_catalog(self, catalog: Arc<crate::domain::Catalog>) -> Self {
        self.catalog.set(catalog);
        self
    }

    /// The catalog as last read.
    pub fn catalog(&self) -> Arc<crate::domain::Catalog> {
        self.catalog.get()
    }

    /// The catalog as it will be read after each reload (the GraphQL API holds it).
    pub fn catalog_handle(&self) -> Current<crate::domain::Catalog> {
        self.catalog.clone()
    }

    /// What replaces the mapping rules and the catalog when the settings are read again.
    /// It holds only those two (not the writer), so it never keeps the pipeline from draining
    /// at shutdown.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            rules: self.rules.clone(),
            catalog: self.catalog.clone(),
        }
    }

    /// The sources this pipeline serves.
    pub fn sources(&self) -> &Registry {
        &self.sources
    }

    /// The writer (its health, for `/readyz`).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// What the enrichment worker waits on.
    pub fn kick(&self) -> Arc<tokio::sync::Notify> {
        self.kick.clone()
    }

    /// What wakes the commits worker (see `commits`).
    pub fn commits_kick(&self) -> Arc<tokio::sync::Notify> {
        self.commits_kick.clone()
    }

    /// A webhook delivery: verify, accept, map (or leave pending for enrichment), journal and
    /// apply in one commit. The live events go out after the commit.
    pub async fn receive(&self, received: Received<'_>) -> Result<Outcome, IngestError> {
        let source = self.source(received.source)?;
        if let Some(reserved) = [IMPORT_HEADER, WRITER_HEADER]
            .into_iter()
            .find(|name| received.headers.contains_key(*name))
        {
            return Err(IngestError::Invalid {
                code: "reserved_header",
                message: format!(
                    "{reserved} marks records shiplog's importers or write API made; a webhook may not send it"
                ),
            });
        }
        let secret = self.secrets.get(source.name()).ok_or_else(|| {
            IngestError::Unauthorized(format!(
                "{} is not set on this shiplog, so it accepts no {} deliveries",
                secret_setting(source.name()),
                source.name()
            ))
        })?;
        let delivery = Delivery {
            headers: received.headers,
            query: received.query,
            body: received.body,
            received_at: received.received_at,
        };
        source
            .auth()
            .verify(&delivery, secret, &secret_setting(source.name()))?;
        let text = std::str::from_utf8(received.body).map_err(|_| IngestError::Invalid {
            code: "invalid_encoding",
            message: "the body is not UTF-8 text".into(),
        })?;
        let (key, body, work, decision) = match source.accept(&delivery) {
            Ok(accepted) => {
                // Journal first, answer, then ask the tool's API: an outage never loses a delivery.
                let enrich = self.enrichers.get(source.name()).is_some();
                let rule = rule_of(source.name(), accepted.rule.as_deref());
                let (work, decision) =
                    self.decide(source.name(), &rule, accepted.parsed, enrich, Discovery::Webhook);
                let body = accepted.redacted.unwrap_or_else(|| text.to_string());
                (accepted.key, body, work, decision)
            }
            Err(SourceError::InvalidPayload(error)) if source.dead_letters() && is_json(received.body) => {
                let key = crate::sources::body_key(received.body);
                let decision = Decision::none("failed", "none: the body was not understood", &error);
                (key, scrub(text, secret), Work::Fail(error), decision)
            }
            Err(error) => return Err(error.into()),
        };
        let new = NewDelivery {
            source: source.name().to_string(),
            delivery_key: key,
            received_at: received.received_at,
            body,
            headers: journal_headers(source.as_ref(), received.headers),
            decision: Some(decision.to_json()),
        };
        let outcome = self.writer.submit_by(new, work, received.deadline).await?;
        if matches!(outcome, Outcome::Pending { .. }) {
            self.kick.notify_one();
        }
        Ok(self.applied(outcome))
    }

    /// A record read from a tool's API by `shiplog import` or reconciliation: accepted by its
    /// source (which reads the API's shape), mapped, journaled with its kind and applied in one
    /// commit, as a delivery. One it cannot read is journaled as failed (replay recovers it).
    pub async fn import(&self, record: Record, kind: Discovery) -> Result<Outcome, IngestError> {
        let source = self.source(record.source)?;
        let mut headers = record.headers;
        headers.insert(IMPORT_HEADER, HeaderValue::from_static(kind.as_str()));
        let delivery = Delivery {
            headers: &headers,
            query: None,
            body: record.body.as_bytes(),
            received_at: record.received_at,
        };
        let (work, decision) = match source.accept(&delivery) {
            Ok(accepted) => {
                let rule = rule_of(source.name(), accepted.rule.as_deref());
                // An import asks the tool's API at once (Heroku's couplings): nothing waits.
                let parsed = match (accepted.parsed, self.enrichers.get(source.name())) {
                    (Parsed::Deployments(observations), Some(enricher))
                        if enricher.enriches_api_records() =>
                    {
                        Parsed::Deployments(
                            enricher
                                .enrich(observations)
                                .await
                                .map_err(|e| IngestError::Api(e.to_string()))?,
                        )
                    }
                    (parsed, _) => parsed,
                };
                self.decide(source.name(), &rule, parsed, false, kind)
            }
            Err(SourceError::InvalidPayload(error)) => {
                let decision = Decision::none("failed", "none: the API record was not understood", &error);
                (Work::Fail(error), decision)
            }
            Err(error) => return Err(error.into()),
        };
        let new = NewDelivery {
            source: source.name().to_string(),
            delivery_key: record.key,
            received_at: record.received_at,
            body: record.body,
            headers: journal_headers(source.as_ref(), &headers),
            decision: Some(decision.to_json()),
        };
        Ok(self.applied(self.writer.submit(new, work).await?))
    }

    /// Wakes the commits worker when deployments were stored (it places them in their history).
    fn applied(&self, outcome: Outcome) -> Outcome {
        if matches!(outcome, Outcome::Applied { .. }) {
            self.commits_kick.notify_one();
        }
        outcome
    }

    /// Finishes a pending delivery from the journal: accept it again (sources are pure), ask
    /// the tool's API, map, apply. `Err` is why this attempt failed, with the wait the API
    /// asked for.
    pub async fn finish(&self, delivery: &deliveries::Model) -> Result<Outcome, Attempt> {
        let source = self
            .sources
            .get(&delivery.source)
            .ok_or_else(|| Attempt::failed(format!("no source `{}` in this shiplog", delivery.source)))?;
        let headers = journaled_headers(&delivery.headers);
        let journaled = Delivery {
            headers: &headers,
            query: None,
            body: delivery.body.as_bytes(),
            received_at: delivery.received_at,
        };
        let accepted = source
            .accept(&journaled)
            .map_err(|e| Attempt::failed(e.to_string()))?;
        let parsed = match accepted.parsed {
            Parsed::Deployments(observations) => {
                Parsed::Deployments(match self.enrichers.get(&delivery.source) {
                    Some(enricher) => enricher.enrich(observations).await.map_err(Attempt::from)?,
                    None => observations,
                })
            }
            ignored => ignored,
        };
        let rule = rule_of(&delivery.source, accepted.rule.as_deref());
        let kind = crate::sources::discovery(&headers);
        let (work, decision) = self.decide(&delivery.source, &rule, parsed, false, kind);
        self.writer
            .finish(delivery.id, work, Some(decision.to_json()))
            .await
            .map(|outcome| self.applied(outcome))
            .map_err(|e| Attempt::failed(e.to_string()))
    }

    /// What to do with what a source read, and the decision to journal with it: map the
    /// observations (or leave them pending for the tool's API when `enrich`), or ignore.
    fn decide(
        &self,
        source: &str,
        rule: &str,
        parsed: Parsed,
        enrich: bool,
        discovered_by: Discovery,
    ) -> (Work, Decision) {
        match parsed {
            Parsed::Deployments(observations) => {
                let mut mapped = self.map(observations);
                mapped.iter_mut().for_each(|m| m.discovered_by = discovered_by);
                let outcome = if enrich { "pending" } else { "processed" };
                let decision = Decision::of_deployments(outcome, rule, source, &mapped, &self.rules());
                (
                    if enrich {
                        Work::Pending
                    } else {
                        Work::Apply(mapped)
                    },
                    decision,
                )
            }
            Parsed::Ignored(reason) => {
                let decision = Decision::none("ignored", rule, &reason);
                (Work::Ignore(reason), decision)
            }
            Parsed::Stopped(stops) => {
                let stopped: Vec<(String, i64)> = stops
                    .iter()
                    .map(|stop| (self.rules().environment(&stop.environment), stop.at))
                    .collect();
                let said: Vec<String> = stops
                    .iter()
                    .zip(&stopped)
                    .map(|(stop, (environment, _))| {
                        format!("{} stopped {environment} (`{}`)", stop.system, stop.environment)
                    })
                    .collect();
                let decision = Decision::none("processed", rule, &said.join("; "));
                (Work::Stop(stopped), decision)
            }
        }
    }

    /// The map step: shiplog's names beside the tool's words.
    pub fn map(&self, observations: Vec<Observation>) -> Vec<MappedObservation> {
        let rules = self.rules();
        observations.into_iter().map(|o| rules.map(o)).collect()
    }

    /// The mapping rules (replay re-maps stored raw names with them).
    pub fn rules(&self) -> Arc<MappingRules> {
        self.rules.get()
    }

    fn source(&self, name: &str) -> Result<&Arc<dyn Source>, IngestError> {
        self.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.names().collect();
            IngestError::UnknownSource(format!(
                "there is no source `{}`; shiplog receives /webhooks/{{{}}}",
                name.chars().take(64).collect::<String>(),
                known.join(",")
            ))
        })
    }
}

/// A failed attempt at finishing a pending delivery.
#[derive(Debug)]
pub struct Attempt {
    pub error: String,
    /// How long the tool's API asked us to wait, if it said.
    pub retry_after: Option<std::time::Duration>,
}

impl Attempt {
    fn failed(error: String) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl From<EnrichError> for Attempt {
    fn from(error: EnrichError) -> Self {
        Self {
            retry_after: error.retry_after(),
            error: error.to_string(),
        }
    }
}

/// The rule a source names, else its one rule: every deployment event it reads.
fn rule_of(source: &str, named: Option<&str>) -> String {
    named.map_or_else(|| format!("{source}.deployment_events"), str::to_string)
}

/// Whether a body is JSON at all (what is not stays a 400 on every route).
fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// A dead letter's body as it may be journaled: the source could not read it, so it could not
/// take out a secret the tool echoes back; every copy of the secret goes here instead.
fn scrub(text: &str, secret: &Secret) -> String {
    let secret = secret.expose();
    if secret.len() < 8 {
        return text.to_string();
    }
    text.replace(secret, crate::sources::octopus::REDACTED)
}

/// The headers a source keeps in the journal, as a JSON object.
fn journal_headers(source: &dyn Source, headers: &HeaderMap) -> String {
    let kept: Map<String, Value> = source
        .journaled_headers()
        .iter()
        .chain(&[IMPORT_HEADER, WRITER_HEADER])
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some((name.to_string(), Value::String(value.to_string())))
        })
        .collect();
    Value::Object(kept).to_string()
}

/// The journaled headers back as a header map, for accepting a journaled delivery again.
pub(crate) fn journaled_headers(json: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) {
        for (name, value) in map {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                headers.insert(name, value);
            }
        }
    }
    headers
}

/// Replaces a pipeline's mapping rules and catalog (see [`Ingest::reloader`]).
#[derive(Clone, Debug)]
pub struct Reloader {
    rules: Current<MappingRules>,
    catalog: Current<crate::domain::Catalog>,
}

impl Reloader {
    /// New mapping rules and catalog (the settings were read again): deliveries from now on
    /// are mapped with them; stored history moves only with `shiplog replay`.
    pub fn reload(&self, rules: MappingRules, catalog: Arc<crate::domain::Catalog>) {
        self.rules.set(Arc::new(rules));
        self.catalog.set(catalog);
    }
}

/// A value every reader sees whole, replaced whole by a reload.
#[derive(Clone, Debug)]
pub struct Current<T>(Arc<std::sync::RwLock<Arc<T>>>);

impl<T> Current<T> {
    pub fn new(value: Arc<T>) -> Self {
        Self(Arc::new(std::sync::RwLock::new(value)))
    }

    pub fn get(&self) -> Arc<T> {
        // A writer never panics holding the lock (it only swaps an Arc), so a poisoned lock
        // still holds a whole value.
        match self.0.read() {
            Ok(value) => value.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, value: Arc<T>) {
        match self.0.write() {
            Ok(mut current) => *current = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}
