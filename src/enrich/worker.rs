//! The enrichment worker: finishes pending deliveries. It wakes when a delivery is journaled
//! as pending (or every second), claims due deliveries with a lease, re-parses each from the
//! journal (parsers are pure), asks the tool's API, maps and applies through the ingest
//! writer, which marks the delivery processed in the same transaction. A failed attempt is
//! rescheduled with backoff (or after the API's `Retry-After`); after the last attempt the
//! delivery is marked failed with the reason, listed by `failedDeliveries` and put back by
//! `shiplog reprocess`. Every replica runs one; leases keep them from processing a delivery
//! twice at once, and the writer's "still pending?" check keeps a late retry from applying
//! it twice.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use entity::deliveries;
use tokio::sync::{Notify, watch};

use super::{Enrichers, RetryPolicy};
use crate::domain::{MappingRules, now_millis};
use crate::sources::{Delivery, Parsed, Registry};
use crate::store::Store;
use crate::store::ingest::{Outcome, Work, Writer};

/// Everything the worker needs.
#[derive(Clone)]
pub struct Processor {
    pub store: Store,
    pub writer: Writer,
    pub sources: Registry,
    pub enrichers: Enrichers,
    pub rules: Arc<MappingRules>,
    pub retry: RetryPolicy,
    /// Wakes the worker when a delivery is journaled as pending.
    pub kick: Arc<Notify>,
}

impl Processor {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let claimed = match self
                .store
                .claim_due(now_millis(), self.retry.lease.as_millis() as i64, 32)
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "could not claim pending deliveries");
                    Vec::new()
                }
            };
            let idle = claimed.is_empty();
            for delivery in claimed {
                self.process(delivery).await;
            }
            if idle {
                tokio::select! {
                    _ = self.kick.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Finishes one claimed delivery, or schedules its next attempt.
    #[tracing::instrument(skip_all, fields(delivery = delivery.id, source = %delivery.source, attempt = delivery.attempts))]
    pub async fn process(&self, delivery: deliveries::Model) {
        match self.attempt(&delivery).await {
            Ok(outcome) => tracing::debug!(?outcome, "pending delivery finished"),
            Err((error, asked)) => {
                if delivery.attempts >= self.retry.max_attempts {
                    tracing::error!(%error, "delivery failed after its last attempt");
                    if let Err(e) = self.store.mark_failed(delivery.id, &error).await {
                        tracing::error!(error = %e, "could not mark the delivery failed");
                    }
                } else {
                    let wait = self.retry.delay(delivery.attempts, asked);
                    tracing::warn!(%error, retry_in = ?wait, "enrichment failed; will retry");
                    let next = now_millis() + wait.as_millis() as i64;
                    if let Err(e) = self.store.retry_later(delivery.id, &error, next).await {
                        tracing::error!(error = %e, "could not reschedule the delivery");
                    }
                }
            }
        }
    }

    async fn attempt(&self, delivery: &deliveries::Model) -> Result<Outcome, (String, Option<Duration>)> {
        let plain = |e: String| (e, None);
        let source = self
            .sources
            .get(&delivery.source)
            .ok_or_else(|| plain(format!("no source `{}` in this shiplog", delivery.source)))?;
        let headers = journaled_headers(&delivery.headers);
        let request = Delivery {
            headers: &headers,
            query: None,
            body: delivery.body.as_bytes(),
            received_at: delivery.received_at,
        };
        let observations = match source.parse(&request).map_err(|e| plain(e.to_string()))? {
            Parsed::Ignored(reason) => {
                return self
                    .writer
                    .finish(delivery.id, Work::Ignore(reason))
                    .await
                    .map_err(|e| plain(e.to_string()));
            }
            Parsed::Deployments(observations) => observations,
        };
        let observations = match self.enrichers.get(&delivery.source) {
            Some(enricher) => {
                let body: serde_json::Value =
                    serde_json::from_str(&delivery.body).map_err(|e| plain(e.to_string()))?;
                enricher
                    .enrich(&body, observations)
                    .await
                    .map_err(|e| (e.to_string(), e.retry_after()))?
            }
            None => observations,
        };
        let mapped = observations.into_iter().map(|o| self.rules.map(o)).collect();
        self.writer
            .finish(delivery.id, Work::Apply(mapped))
            .await
            .map_err(|e| plain(e.to_string()))
    }
}

fn journaled_headers(json: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) {
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
