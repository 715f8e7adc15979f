//! Publish: live deployment events, fanned out to every subscriber in this process after the
//! transaction that stored them has committed. On PostgreSQL, `store::fanout` carries event
//! ids to the other replicas, which re-read them and publish them here too.

use std::sync::Arc;

use entity::{deployment_events, deployments};
use tokio::sync::broadcast;

use crate::store::Named;

/// One status change, with everything a subscriber needs to filter and answer it without
/// another query.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    pub event: deployment_events::Model,
    pub deployment: deployments::Model,
    pub system: Named,
    pub environment: Named,
}

/// The in-process fan-out of live events.
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<LiveEvent>>,
}

impl Hub {
    /// A hub that buffers up to `capacity` events for a slow subscriber.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self { sender }
    }

    /// Sends events to every current subscriber (none listening is fine).
    pub fn publish(&self, events: impl IntoIterator<Item = LiveEvent>) {
        for event in events {
            let _ = self.sender.send(Arc::new(event));
        }
    }

    /// A new subscription, starting with the next event published.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}
