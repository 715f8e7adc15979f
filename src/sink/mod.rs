//! CDEvents out: every deployment that finishes, from any source, sent to a CDEvents sink as
//! `service.deployed` (the system's first success in that environment), `service.upgraded`
//! or `service.rolledback`. The journal is the outbox: the sender reads committed deployment
//! events after a stored cursor and moves the cursor only past what the sink accepted, so a
//! sink that is down delays events, never loses them, and never slows ingest. One replica
//! sends (a lease).

use std::time::Duration;

use entity::{deployment_events, deployments};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::domain::{format_millis, now_millis};
use crate::store::{Store, StoreError};

/// `[cdevents_sink]`.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Where events are POSTed (none: no sink).
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// `context.source` of the events shiplog sends.
    pub source: Option<String>,
}

/// The CDEvents spec version the events follow.
pub const SPEC_VERSION: &str = "0.4.1";
const CURSOR: &str = "cdevents.sink.cursor";
const LEASE: &str = "cdevents.sink.lease";
/// Events younger than this are left for the next read: ids can commit out of order.
const SETTLE_MS: i64 = 2_000;
const PAGE: u64 = 50;

/// Starts the sender when a sink is configured.
pub fn spawn(
    store: &Store,
    config: &SinkConfig,
    replica: &str,
    stopping: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let url = config.url.clone().filter(|u| !u.trim().is_empty())?;
    let sender = Sender {
        store: store.clone(),
        url,
        token: config.token.clone().filter(|t| !t.is_empty()),
        source: config.source.clone().unwrap_or_else(|| "/shiplog".into()),
        replica: replica.to_string(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?,
    };
    Some(tokio::spawn(sender.run(stopping.clone())))
}

struct Sender {
    store: Store,
    url: String,
    token: Option<String>,
    source: String,
    replica: String,
    client: reqwest::Client,
}

impl Sender {
    async fn run(self, mut stopping: watch::Receiver<bool>) {
        let mut failures = 0u32;
        while !*stopping.borrow() {
            let wait = match self.round().await {
                Ok(sent) => {
                    failures = 0;
                    if sent {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(500)
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, failures, "the CDEvents sink did not take an event; retrying");
                    Duration::from_millis(250u64.saturating_mul(1 << failures.min(8)))
                        .min(Duration::from_secs(60))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.changed() => {}
            }
        }
    }

    /// Sends what waits after the cursor; whether anything was sent.
    async fn round(&self) -> Result<bool, String> {
        let now = now_millis();
        let held = self
            .store
            .take_lease(LEASE, &self.replica, now + 30_000, now)
            .await
            .map_err(|e| e.to_string())?;
        if !held {
            return Ok(false);
        }
        let cursor = match self.store.setting(CURSOR).await.map_err(|e| e.to_string())? {
            Some(text) => text.parse::<i64>().unwrap_or(0),
            // The first start sends what finishes from now on, not the whole history.
            None => {
                let start = self.store.last_event_id().await.map_err(|e| e.to_string())?;
                self.store
                    .put_setting(CURSOR, &start.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                start
            }
        };
        let finished = self
            .store
            .finished_after(cursor, now - SETTLE_MS, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        for (event, deployment) in &finished {
            let body = self.event(event, deployment).await.map_err(|e| e.to_string())?;
            self.post(&body).await?;
            metrics::counter!("shiplog_cdevents_sent_total").increment(1);
            self.store
                .put_setting(CURSOR, &event.id.to_string())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(!finished.is_empty())
    }

    async fn post(&self, body: &Value) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .json(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("{}: {e}", self.url))?;
        if response.status().is_success() {
            Ok(())
        } else {
            metrics::counter!("shiplog_cdevents_send_failures_total").increment(1);
            Err(format!("{} answered {}", self.url, response.status()))
        }
    }

    /// The CDEvent of one finished deployment.
    async fn event(
        &self,
        event: &deployment_events::Model,
        deployment: &deployments::Model,
    ) -> Result<Value, StoreError> {
        let history = self.store.in_history(deployment).await?;
        let predicate = match (&history.previous, &history.rolled_back) {
            (None, _) => "deployed",
            (Some(_), Some(_)) => "rolledback",
            (Some(_), None) => "upgraded",
        };
        let (system, environment) = self.store.names_of(deployment).await?;
        Ok(cdevent(
            (&self.source, predicate),
            event,
            deployment,
            (&system, &environment),
        ))
    }
}

/// A `service.<predicate>` CDEvent (spec 0.4.1, event version 0.2.0).
pub fn cdevent(
    (source, predicate): (&str, &str),
    event: &deployment_events::Model,
    deployment: &deployments::Model,
    (system, environment): (&str, &str),
) -> Value {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // A package URL keeps `.`, `-`, `_` and `~` as they are.
    const PURL: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'~');
    let encode = |text: &str| utf8_percent_encode(text, PURL).to_string();
    let artifact = match crate::store::history::shipped(deployment) {
        Some((_, shipped)) => format!("pkg:generic/{}@{}", encode(system), encode(shipped)),
        None => format!("pkg:generic/{}", encode(system)),
    };
    json!({
        "context": {
            "version": SPEC_VERSION,
            "id": format!("shiplog-event-{}", event.id),
            "source": source,
            "type": format!("dev.cdevents.service.{predicate}.0.2.0"),
            "timestamp": format_millis(event.occurred_at),
        },
        "subject": {
            "id": system,
            "source": deployment.source,
            "type": "service",
            "content": {
                "environment": { "id": environment },
                "artifactId": artifact,
            },
        },
    })
}
