//! Live events across replicas, through PostgreSQL itself: the ingest writer NOTIFYs the ids
//! of the events it committed (inside its transaction, so only committed events are told);
//! every replica LISTENs, re-reads those events and publishes them to its own subscribers.
//! Notifications sent while a listener is reconnecting are lost, so after every reconnect
//! the listener catches up on events newer than the last one it saw.

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

    /// The newest event id, the starting point of a listener.
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(deployment_events::Entity::find()
            .select_only()
            .column(deployment_events::Column::Id)
            .order_by_desc(deployment_events::Column::Id)
            .into_tuple::<i64>()
            .one(self.connection())
            .await?
            .unwrap_or(0))
    }

    async fn events_after(&self, id: i64) -> Result<Vec<LiveEvent>, StoreError> {
        let events = deployment_events::Entity::find()
            .filter(deployment_events::Column::Id.gt(id))
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
    let mut last_seen = match store.last_event_id().await {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "fan-out listener could not read the newest event id");
            0
        }
    };
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
        // Whatever was committed while we were not listening.
        match store.events_after(last_seen).await {
            Ok(missed) => {
                if let Some(last) = missed.last() {
                    last_seen = last_seen.max(last.event.id);
                }
                let count = missed.len();
                hub.publish(missed);
                if count > 0 {
                    tracing::info!(count, "fan-out listener caught up");
                }
            }
            Err(error) => tracing::warn!(%error, "fan-out catch-up failed"),
        }
        loop {
            let message = tokio::select! {
                message = listener.try_recv() => message,
                _ = stop.changed() => return,
            };
            let notification = match message {
                Ok(Some(notification)) => notification,
                Ok(None) => {
                    tracing::warn!("fan-out listener lost its connection; reconnecting");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "fan-out listener failed; reconnecting");
                    break;
                }
            };
            let Some((origin, ids)) = notification.payload().split_once(':') else {
                continue;
            };
            let ids: Vec<i64> = ids.split(',').filter_map(|id| id.parse().ok()).collect();
            if let Some(max) = ids.iter().max() {
                last_seen = last_seen.max(*max);
            }
            if origin == replica {
                continue; // published locally right after the commit
            }
            match store.live_events(&ids).await {
                Ok(events) => hub.publish(events),
                Err(error) => tracing::warn!(%error, "fan-out could not re-read events"),
            }
        }
    }
}

async fn connect(url: &str) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
