//! `Query`: deployments, systems and environments.

use async_graphql::{Context, ID, Object, Result, SimpleObject};

use super::scalars::Instant;
use super::types::{
    Delivery, Deployment, DeploymentConnection, DeploymentFilterInput, Environment, System,
    deployments_connection, internal, user_error,
};
use crate::domain::DeliveryState;
use crate::store::Store;

/// How reconciliation of one scope (a project, a repository) went.
#[derive(SimpleObject)]
pub struct Reconciliation {
    /// The source (`gitlab`, `github`).
    source: String,
    /// The project or repository polled.
    scope: String,
    /// The tool's instance (its base URL).
    instance: String,
    /// When a poll last finished without error.
    last_reconciled_at: Option<Instant>,
    /// When the last poll started.
    last_attempt_at: Instant,
    /// Why the last poll failed (none after a successful one).
    last_error: Option<String>,
    /// Records the last successful poll read.
    last_read: i64,
    /// Deployments the last successful poll was the first to see.
    last_found: i64,
    /// Deployments of this scope that reconciliation saw before any webhook did, ever.
    missed_by_webhooks: i64,
}

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
        let filter = filter.unwrap_or_default().into_filter(&*super::catalog(ctx)?)?;
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

    /// Each scope the server reconciles (`[[reconcile]]`): when it last read the tool's API for
    /// it, why the last poll failed, and how many deployments reconciliation found that no
    /// webhook had announced (`missedByWebhooks` growing means the tool's webhook is broken).
    async fn reconciliation(&self, ctx: &Context<'_>) -> Result<Vec<Reconciliation>> {
        use crate::import::reconcile::{STATE_PREFIX, ScopeState};
        let store = ctx.data::<Store>()?;
        let mut scopes = Vec::new();
        for (_, json) in store.settings_under(STATE_PREFIX).await.map_err(internal)? {
            let Ok(state) = serde_json::from_str::<ScopeState>(&json) else {
                continue;
            };

            scopes.push(Reconciliation {
                source: state.source,
                scope: state.scope,
                instance: state.instance,
                last_reconciled_at: state.last_reconciled_at.map(Instant),
                last_attempt_at: Instant(state.last_attempt_at),
                last_error: state.last_error,
                last_read: state.last_read as i64,
                last_found: state.last_found as i64,
                missed_by_webhooks: state.missed_by_webhooks as i64,
            });
        }
        Ok(scopes)
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
