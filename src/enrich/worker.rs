//! The enrichment worker: finishes pending deliveries. It wakes when a delivery is journaled
//! as pending (or every second), claims due deliveries with a lease and hands each to the
//! ingest pipeline (`Ingest::finish`: accept from the journal, ask the tool's API, map, apply;
//! the writer marks the delivery processed in the same transaction). A failed attempt is
//! rescheduled with backoff (or after the API's `Retry-After`); after the last attempt the
//! delivery is marked failed with the reason, listed by `deliveries(state: FAILED)` and put
//! back by `shiplog reprocess`. Every replica runs one; leases keep them from processing a
//! delivery twice at once, and the writer's "still pending?" check keeps a late retry from
//! applying it twice.

use std::time::Duration;

use entity::deliveries;
use tokio::sync::watch;

use super::RetryPolicy;
use crate::domain::now_millis;
use crate::ingest::Ingest;
use crate::store::Store;

/// Everything the worker needs.
#[derive(Clone)]
pub struct Processor {
    pub store: Store,
    pub ingest: Ingest,
    pub retry: RetryPolicy,
}

impl Processor {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let kick = self.ingest.kick();
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
                    _ = kick.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Finishes one claimed delivery, or schedules its next attempt.
    #[tracing::instrument(skip_all, fields(delivery = delivery.id, source = %delivery.source, attempt = delivery.attempts))]
    pub async fn process(&self, delivery: deliveries::Model) {
        match self.ingest.finish(&delivery).await {
            Ok(outcome) => tracing::debug!(?outcome, "pending delivery finished"),
            Err(attempt) => {
                let error = attempt.error;
                if delivery.attempts >= self.retry.max_attempts {
                    tracing::error!(%error, "delivery failed after its last attempt");
                    if let Err(e) = self.store.mark_failed(delivery.id, &error).await {
                        tracing::error!(error = %e, "could not mark the delivery failed");
                    }
                } else {
                    let wait = self.retry.delay(delivery.attempts, attempt.retry_after);
                    tracing::warn!(%error, retry_in = ?wait, "enrichment failed; will retry");
                    let next = now_millis() + wait.as_millis() as i64;
                    if let Err(e) = self.store.retry_later(delivery.id, &error, next).await {
                        tracing::error!(error = %e, "could not reschedule the delivery");
                    }
                }
            }
        }
    }
}
