//! CDEvents out: every deployment that finishes, from any source, sent to a CDEvents sink as
//! `service.deployed` (the system's first success in that environment), `service.upgraded`
//! or `service.rolledback`. The journal is the outbox: the sender reads committed deployment
//! events after a settled cursor and records the events the sink accepted, so a sink that is
//! down delays events, never loses them, and never slows ingest. Ids can commit out of order
//! (a writer that waited on a lock, another replica's transaction): the journal is followed by
//! a [`Follower`], which reads new events at once and reads again once they settle, so a late
//! commit is sent once, late. One replica sends (a lease, checked before each event).

use std::time::Duration;

use entity::{deployment_events, deployments};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::domain::{format_millis, now_millis};
use crate::store::follow::Follower;
use crate::store::{Lease, Store, StoreError};

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
const STATE: &str = "cdevents.sink.state";
const LEASE: &str = "cdevents.sink.lease";
/// Events younger than this wait for the next read (most commits are over by then).
const SETTLE_MS: i64 = 2_000;
const PAGE: u64 = 500;
/// How long the sending replica holds the lease (renewed at half of it).
const LEASE_LENGTH: Duration = Duration::from_secs(30);

/// What was sent: every event up to `settled` was handled; those after it in `sent` were.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
struct SinkState {
    settled: i64,
    sent: std::collections::BTreeSet<i64>,
}

impl SinkState {
    /// Where a follower stands, as stored.
    fn of(follower: &Follower) -> Self {
        Self {
            settled: follower.settled(),
            sent: follower.handled().clone(),
        }
    }
}

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
        lease: Lease::new(LEASE, replica, LEASE_LENGTH),
        started_at: now_millis(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?,
        follower: None,
    };
    Some(tokio::spawn(sender.run(stopping.clone())))
}

struct Sender {
    store: Store,
    url: String,
    token: Option<String>,
    source: String,
    /// One replica sends.
    lease: Lease,
    /// When the server started: a first start sends what was recorded from then on.
    started_at: i64,
    client: reqwest::Client,
    /// Where this replica is in the journal while it holds the lease.
    follower: Option<Follower>,
}

impl Sender {
    async fn run(mut self, mut stopping: watch::Receiver<bool>) {
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

    /// Sends what finished since the last round ([`Follower`]); whether anything was sent.
    async fn round(&mut self) -> Result<bool, String> {
        if !self.hold_lease().await? {
            self.follower = None;
            return Ok(false);
        }
        let mut follower = match self.follower.take() {
            Some(follower) => follower,
            None => {
                let state = self.state().await?;
                Follower::new(state.settled, state.sent)
            }
        };
        let batch = follower
            .next(&self.store, now_millis() - SETTLE_MS, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let before = (follower.settled(), follower.handled().len());
        let mut sent = false;
        let mut outcome = Ok(());
        let mut saved_at = std::time::Instant::now();
        for (event, deployment) in &batch.items {
            outcome = self.send(event, deployment).await;
            if outcome.is_err() {
                break;
            }
            follower.handled_one(event.id);
            sent = true;
            // What the sink took is written down as it goes (a restart re-sends at most
            // about a second of it: a CDEvent's `context.id` stays the same).
            if saved_at.elapsed() >= Duration::from_secs(1) {
                self.save(&SinkState::of(&follower)).await?;
                saved_at = std::time::Instant::now();
            }
        }
        if outcome.is_ok() {
            follower.done(batch);
        }
        if (follower.settled(), follower.handled().len()) != before {
            self.save(&SinkState::of(&follower)).await?;
        }
        self.follower = Some(follower);
        outcome.map(|()| sent)
    }

    /// Sends one event, if this replica still holds the lease (another may have taken over
    /// while this one waited on the sink).
    async fn send(
        &mut self,
        event: &deployment_events::Model,
        deployment: &deployments::Model,
    ) -> Result<(), String> {
        let body = self.event(event, deployment).await.map_err(|e| e.to_string())?;
        if !self.hold_lease().await? {
            return Err("another replica took the CDEvents sink over".into());
        }
        self.post(&body).await?;
        metrics::counter!("shiplog_cdevents_sent_total").increment(1);
        Ok(())
    }

    async fn hold_lease(&mut self) -> Result<bool, String> {
        self.lease.hold(&self.store).await.map_err(|e| e.to_string())
    }

    /// The stored state; on the first start, settled at the newest event before the server
    /// started (what finishes from then on is sent, not the history).
    async fn state(&self) -> Result<SinkState, String> {
        if let Some(text) = self.store.setting(STATE).await.map_err(|e| e.to_string())? {
            return serde_json::from_str(&text).map_err(|e| format!("{STATE}: {e}"));
        }
        // Not the newest event when this task first runs (under load that can be after the
        // server took deliveries, which would then never be sent): the newest before start.
        let state = SinkState {
            settled: self
                .store
                .last_event_id_before(self.started_at)
                .await
                .map_err(|e| e.to_string())?,
            sent: Default::default(),
        };
        self.save(&state).await?;
        Ok(state)
    }

    async fn save(&self, state: &SinkState) -> Result<(), String> {
        let text = serde_json::to_string(state).map_err(|e| e.to_string())?;
        self.store
            .put_setting(STATE, &text)
            .await
            .map_err(|e| e.to_string())
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
