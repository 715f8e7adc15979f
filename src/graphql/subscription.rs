//! `Subscription.deploymentEvents`: live status changes, filtered on the server.

use async_graphql::{Context, Result, Subscription};
use futures_util::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::types::{DeploymentEvent, DeploymentFilterInput};
use crate::events::Hub;

/// The root of every live stream.
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every deployment status change from now on that matches the filter.
    async fn deployment_events(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeploymentFilterInput>,
    ) -> Result<impl Stream<Item = DeploymentEvent>> {
        let filter = filter.unwrap_or_default().into_filter();
        let receiver = ctx.data::<Hub>()?.subscribe();
        Ok(BroadcastStream::new(receiver).filter_map(move |item| match item {
            Ok(event) => filter
                .matches(&event.deployment, &event.system.name, &event.environment.name)
                .then(|| DeploymentEvent::from_live(&event)),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::warn!(missed, "a subscriber fell behind and missed events");
                None
            }
        }))
    }
}
