//! `Query`: deployments, systems and environments.

use async_graphql::{Context, ID, Object, Result};

use super::types::{
    Delivery, Deployment, DeploymentConnection, DeploymentFilterInput, Environment, System,
    deployments_connection, internal, user_error,
};
use crate::domain::DeliveryState;
use crate::store::Store;

/// The root of every read.
#[derive(Default)]
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Deployments, newest first by their own time (finished, else started, else first seen),
    /// as a Relay connection. `first` defaults to 20 and is at most 500.
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeploymentFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<DeploymentConnection> {
        let filter = filter.unwrap_or_default().into_filter()?;
        deployments_connection(ctx, filter, after, before, first, last).await
    }

    /// One deployment by its id.
    async fn deployment(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Deployment>> {
        let id: i64 = id.parse().map_err(|_| {
            user_error(
                "BAD_USER_INPUT",
                "a deployment id is a number, as `Deployment.id` gives it",
            )
        })?;
        let store = ctx.data::<Store>()?;
        Ok(store.deployment(id).await.map_err(internal)?.map(Deployment::new))
    }

    /// One journaled delivery by its id (`deliveryId` in a webhook's answer,
    /// `DeploymentEvent.delivery`), with why it is (or is not) a deployment.
    async fn delivery(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Delivery>> {
        let id: i64 = id.parse().map_err(|_| {
            user_error(
                "BAD_USER_INPUT",
                "a delivery id is a number, as `deliveryId` gives it",
            )
        })?;
        let store = ctx.data::<Store>()?;
        Ok(store.delivery(id).await.map_err(internal)?.map(Delivery))
    }

    /// Journaled deliveries in a state, newest first: `FAILED` ones gave up after their last
    /// enrichment attempt (put them back with `shiplog reprocess`), `PENDING` ones wait for one.
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        state: DeliveryState,
        #[graphql(default = 50)] first: i32,
    ) -> Result<Vec<Delivery>> {
        let store = ctx.data::<Store>()?;
        let limit = first.clamp(0, 500) as u64;
        super::budget::charge(ctx, super::budget::Charge::Rows(limit as usize))?;
        Ok(store
            .deliveries_in(state, limit)
            .await
            .map_err(internal)?
            .into_iter()
            .map(Delivery)
            .collect())
    }

    /// Every system, by name.
    async fn systems(&self, ctx: &Context<'_>) -> Result<Vec<System>> {
        let store = ctx.data::<Store>()?;
        Ok(store
            .systems()
            .await
            .map_err(internal)?
            .into_iter()
            .map(System)
            .collect())
    }

    /// One system by name.
    async fn system(&self, ctx: &Context<'_>, name: String) -> Result<Option<System>> {
        let store = ctx.data::<Store>()?;
        Ok(store.system(&name).await.map_err(internal)?.map(System))
    }

    /// Every environment, by name.
    async fn environments(&self, ctx: &Context<'_>) -> Result<Vec<Environment>> {
        let store = ctx.data::<Store>()?;
        Ok(store
            .environments()
            .await
            .map_err(internal)?
            .into_iter()
            .map(Environment)
            .collect())
    }

    /// One environment by name.
    async fn environment(&self, ctx: &Context<'_>, name: String) -> Result<Option<Environment>> {
        let store = ctx.data::<Store>()?;
        Ok(store.environment(&name).await.map_err(internal)?.map(Environment))
    }
}
