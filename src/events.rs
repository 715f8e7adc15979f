//! Publish: live deployment events, fanned out to every subscriber in this process after the
//! transaction that stored them has committed. On PostgreSQL, `store::fanout` carries event
//! ids to the other replicas, which re-read them and publish them here too.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

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

/// What a subscriber receives: an event, or word that events were lost on their way to this
/// process (a fan-out catch-up that could not be completed), after which it must refetch.
#[derive(Clone, Debug)]
pub enum Live {
    Event(Arc<LiveEvent>),
    Gap(Arc<str>),
}

/// How many recent event ids the hub remembers to drop repeats.
const REMEMBERED: usize = 65_536;

/// The in-process fan-out of live events. An event can reach the hub twice (published after
/// the local commit, then again by a fan-out catch-up that overlaps it): the hub remembers
/// recent event ids and sends each event once.
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Live>,
    recent: Arc<Mutex<Recent>>,
}

#[derive(Default)]
struct Recent {
    ids: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Recent {
    /// Remembers an id; false when it was already there.
    fn insert(&mut self, id: i64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

impl Hub {
    /// A hub that buffers up to `capacity` events for a slow subscriber.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self {
            sender,
            recent: Arc::new(Mutex::new(Recent::default())),
        }
    }

    /// Sends events to every current subscriber (none listening is fine), each event once.
    pub fn publish(&self, events: impl IntoIterator<Item = LiveEvent>) {
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        for event in events {
            if recent.insert(event.event.id) {
                let _ = self.sender.send(Live::Event(Arc::new(event)));
            }
        }
    }

    /// Tells every current subscriber that events were lost before they reached this process.
    pub fn gap(&self, reason: &str) {
        tracing::warn!(
            reason,
            subscribers = self.subscribers(),
            "telling subscribers they missed events"
        );
        let _ = self.sender.send(Live::Gap(reason.into()));
    }

    /// A new subscription, starting with the next event published.
    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.sender.subscribe()
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_forgets_old_ids_but_drops_recent_repeats() {
        let mut recent = Recent::default();
        assert!(recent.insert(1));
        assert!(!recent.insert(1));
        for id in 2..=(REMEMBERED as i64 + 1) {
            assert!(recent.insert(id));
        }
        assert!(recent.insert(1), "1 was forgotten after REMEMBERED newer ids");
        assert_eq!(recent.order.len(), REMEMBERED);
    }
}
