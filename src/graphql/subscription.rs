//! `Subscription.deploymentEvents`: live status changes, filtered on the server.

use async_graphql::{Context, ErrorExtensions, Result, Subscription};
use futures_util::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::types::{DeploymentEvent, DeploymentFilterInput};
use crate::events::{Hub, Live};

/// The root of every live stream.
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every deployment status change from now on that matches the filter. A subscriber that
    /// missed events (it read too slowly and fell more than the buffer behind, or this replica
    /// lost contact with the others for longer than it can catch up) gets one error with code
    /// `EVENTS_MISSED`, and the stream ends: refetch what you show, then subscribe again.
    async fn deployment_events(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeploymentFilterInput>,
    ) -> Result<impl Stream<Item = Result<DeploymentEvent>>> {
        let filter = filter.unwrap_or_default().into_filter(&*super::catalog(ctx)?)?;
        let receiver = ctx.data::<Hub>()?.subscribe();
        let items = BroadcastStream::new(receiver).filter_map(move |item| match item {
            Ok(Live::Event(event)) => filter
                .matches(&event.deployment, &event.system.name, &event.environment.name)
                .then(|| Ok(DeploymentEvent::from_live(&event))),
            Ok(Live::Gap(reason)) => Some(Err(missed(&reason))),
            Err(BroadcastStreamRecvError::Lagged(count)) => {
                tracing::warn!(
                    count,
                    "a subscriber fell behind and missed events; ending its stream"
                );
                metrics::counter!("shiplog_live_subscribers_lagged_total").increment(1);
                metrics::counter!("shiplog_live_events_missed_total").increment(count);
                Some(Err(missed(&format!(
                    "this subscription read too slowly and missed {count} events"
                ))))
            }
        });
        // The first error is the last item: a stream that goes on after a gap would look whole.
        Ok(futures_util::stream::unfold(
            (Box::pin(items), false),
            |(mut items, ended)| async move {
                if ended {
                    return None;
                }
                let item = items.next().await?;
                let ended = item.is_err();
                Some((item, (items, ended)))
            },
        ))
    }
}

fn missed(reason: &str) -> async_graphql::Error {
    async_graphql::Error::new(format!("{reason}; refetch what you show, then subscribe again"))
        .extend_with(|_, extensions| extensions.set("code", "EVENTS_MISSED"))
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, Schema};
    use entity::{deployment_events, deployments};
    use futures_util::StreamExt;

    use super::*;
    use crate::events::LiveEvent;
    use crate::store::Named;

    fn event(id: i64) -> LiveEvent {
        LiveEvent {
            event: deployment_events::Model {
                id,
                deployment_id: id,
                delivery_id: None,
                status: crate::domain::DeploymentStatus::Succeeded,
                raw_status: "succeeded".into(),
                previous_status: None,
                occurred_at: 0,
                recorded_at: 0,
            },
            deployment: deployments::Model {
                id,
                source: "generic".into(),
                external_id: format!("d-{id}"),
                system_id: 1,
                environment_id: 1,
                status: crate::domain::DeploymentStatus::Succeeded,
                raw_status: "succeeded".into(),
                raw_system: "billing".into(),
                raw_environment: "production".into(),
                environment_tier: None,
                tenant: None,
                committed_at: None,
                status_at: 0,
                started_at: None,
                finished_at: None,
                deployed_at: 0,
                commit_sha: None,
                git_ref: None,
                version: None,
                url: None,
                actor: None,
                first_seen_at: 0,
                updated_at: 0,
                discovered_by: entity::Discovery::Webhook,
                tags: None,
                note: None,
                failed_change: None,
                failed_change_reason: None,
                environment_url: None,
                corrected_status: None,
                corrected_system: None,
                corrected_environment: None,
                correction_reason: None,
                deleted_at: None,
                deletion_reason: None,
            },
            system: Named {
                id: 1,
                name: "billing".into(),
            },
            environment: Named {
                id: 1,
                name: "production".into(),
            },
        }
    }

    /// A subscription on `hub`, registered (its stream polled once, with nothing to read yet).
    async fn subscribed(hub: &Hub) -> impl futures_util::Stream<Item = async_graphql::Response> + Unpin {
        let schema = Schema::build(crate::graphql::Query::default(), EmptyMutation, SubscriptionRoot)
            .data(hub.clone())
            .data(crate::ingest::Current::new(std::sync::Arc::new(
                crate::domain::Catalog::default(),
            )))
            .finish();
        let query = "subscription { deploymentEvents { deployment { externalId } } }";
        let mut stream = Box::pin(schema.execute_stream(query));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), stream.next())
                .await
                .is_err(),
            "nothing published yet"
        );
        stream
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_once_and_its_stream_ends() {
        let hub = Hub::new(4);
        let mut stream = subscribed(&hub).await;
        hub.publish((1..=10).map(event));
        let first = stream.next().await.expect("an answer");
        assert_eq!(first.errors.len(), 1, "{first:?}");
        let error = &first.errors[0];
        assert!(error.message.contains("missed"), "{}", error.message);
        assert_eq!(
            error.extensions.as_ref().and_then(|e| e.get("code")),
            Some(&async_graphql::Value::from("EVENTS_MISSED"))
        );
        assert!(stream.next().await.is_none(), "the stream ends after telling");
    }

    #[tokio::test]
    async fn a_gap_in_the_fan_out_is_told_to_every_subscriber() {
        let hub = Hub::new(16);
        let mut stream = subscribed(&hub).await;
        hub.publish([event(1)]);
        hub.gap("this replica lost contact");
        let delivered = stream.next().await.expect("the event");
        assert!(delivered.errors.is_empty());
        let told = stream.next().await.expect("the gap");
        assert!(told.errors[0].message.contains("lost contact"));
        assert!(stream.next().await.is_none());
    }
}
