//! Live events across replicas, through PostgreSQL itself: the ingest writer NOTIFYs the ids
//! of the events it committed (inside its transaction, so only committed events are told);
//! every replica LISTENs, re-reads those events and publishes them to its own subscribers.
//! Notifications sent while a listener is reconnecting are lost, so after every reconnect
//! the listener catches up on the events recorded since shortly before it lost its connection
//! (by time, not by id: sequence ids can commit out of order); the hub drops the repeats.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use entity::{deployment_events, deployments};
use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::watch;

use super::{Store, StoreError};
use crate::events::{Hub, LiveEvent};

/// The NOTIFY channel.
pub const CHANNEL: &str = "shiplog_events";

/// Most events re-read in one catch-up.
const CATCH_UP_LIMIT: u64 = 10_000;

impl Store {
    /// Events by id, with their deployments, systems and environments, in id order.
    pub async fn live_events(&self, ids: &[i64]) -> Result<Vec<LiveEvent>, StoreError> {
        let events = deployment_events::Entity::find()
            .filter(deployment_events::Column::Id.is_in(ids.iter().copied()))
            .order_by_asc(deployment_events::Column::Id)
            .all(self.connection())
            .await?;
        self.complete(events).await
    }

    async fn events_recorded_since(&self, since: i64) -> Result<Vec<LiveEvent>, StoreError> {
        let events = deployment_events::Entity::find()
            .filter(deployment_events::Column::RecordedAt.gte(since))
            .order_by_asc(deployment_events::Column::Id)
            .limit(CATCH_UP_LIMIT)
            .all(self.connection())
            .await?;
        self.complete(events).await
    }

    async fn complete(&self, events: Vec<deployment_events::Model>) -> Result<Vec<LiveEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let deployment_ids: BTreeSet<i64> = events.iter().map(|e| e.deployment_id).collect();
        let deployments: HashMap<i64, deployments::Model> = deployments::Entity::find()
            .filter(deployments::Column::Id.is_in(deployment_ids))
            .all(self.connection())
            .await?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        let system_ids: Vec<i64> = deployments.values().map(|d| d.system_id).collect();
        let environment_ids: Vec<i64> = deployments.values().map(|d| d.environment_id).collect();
        let systems = self.systems_by_ids(&system_ids).await?;
        let environments = self.environments_by_ids(&environment_ids).await?;
        Ok(events
            .into_iter()
            .filter_map(|event| {
                let deployment = deployments.get(&event.deployment_id)?.clone();
                Some(LiveEvent {
                    system: systems.get(&deployment.system_id)?.clone(),
                    environment: environments.get(&deployment.environment_id)?.clone(),
                    deployment,
                    event,
                })
            })
            .collect())
    }
}

/// Listens for other replicas' events until `stop` turns true.
pub async fn listen(store: Store, url: String, replica: String, hub: Hub, mut stop: watch::Receiver<bool>) {
    // Events recorded after this moment are the listener's to deliver; a margin covers
    // transactions that were committing while the connection went down.
    const MARGIN_MS: i64 = 5_000;
    let mut connected_until = crate::domain::now_millis();
    loop {
        let mut listener = match connect(&url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "fan-out listener could not connect; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        // Whatever was committed while we were not listening, read again until it succeeds
        // (the pool's connections may have been cut too). More than a catch-up can hold is
        // told to the subscribers, who refetch.
        let since = connected_until - MARGIN_MS;
        let Some(missed) = retrying(&mut stop, "catch up", || store.events_recorded_since(since)).await
        else {
            return;
        };
        let count = missed.len();
        if count as u64 >= CATCH_UP_LIMIT {
            hub.gap(&format!(
                "this replica lost contact with the others and more than {CATCH_UP_LIMIT} events were recorded meanwhile"
            ));
        } else {
            hub.publish(missed);
        }
        if count > 0 {
            tracing::info!(count, "fan-out listener caught up");
        }
        loop {
            let message = tokio::select! {
                message = listener.try_recv() => message,
                _ = stop.changed() => return,
            };
            let notification = match message {
                Ok(Some(notification)) => notification,
                // The connection was good until now: catch up from here (less the margin).
                Ok(None) => {
                    tracing::warn!("fan-out listener lost its connection; reconnecting");
                    connected_until = crate::domain::now_millis();
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "fan-out listener failed; reconnecting");
                    connected_until = crate::domain::now_millis();
                    break;
                }
            };
            let Some((origin, ids)) = notification.payload().split_once(':') else {
                continue;
            };
            if origin == replica {
                continue; // published locally right after the commit
            }
            let ids: Vec<i64> = ids.split(',').filter_map(|id| id.parse().ok()).collect();
            let Some(events) = retrying(&mut stop, "re-read events", || store.live_events(&ids)).await else {
                return;
            };
            hub.publish(events);
        }
    }
}

/// Runs `read` until it succeeds, waiting 100 ms doubling to 5 s between tries; None when the
/// server stops first.
async fn retrying<T, F, R>(stop: &mut watch::Receiver<bool>, what: &str, mut read: R) -> Option<T>
where
    R: FnMut() -> F,
    F: Future<Output = Result<T, StoreError>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match read().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::warn!(%error, retry_in = ?wait, "fan-out could not {what}; retrying");
                metrics::counter!("shiplog_fanout_retries_total").increment(1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return None,
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

async fn connect(url: &str) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    super::nodelay::apply();
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
