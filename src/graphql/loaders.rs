//! DataLoaders for nested fields, built per request (and per WebSocket connection) without a
//! cache, so a page of deployments costs one statement per kind of nested field, and nothing
//! is ever served stale from another request.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader, NoCache};
use entity::deployment_events;

use crate::store::{Named, Store};

/// Key: a system id.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct SystemId(pub i64);
/// Key: an environment id.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct EnvironmentId(pub i64);
/// Key: a deployment id, for its status events.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct EventsOf(pub i64);

/// Loads through the store.
pub struct StoreLoader(pub Store);

/// The loader type resolvers find in the context.
pub type Loaders = DataLoader<StoreLoader, NoCache>;

/// A fresh loader.
pub fn loaders(store: Store) -> Loaders {
    DataLoader::with_cache(StoreLoader(store), tokio::spawn, NoCache)
}

fn error(e: crate::store::StoreError) -> Arc<String> {
    tracing::error!(error = %e, "loader query failed");
    Arc::new("the database did not answer".to_string())
}

impl Loader<SystemId> for StoreLoader {
    type Value = Named;
    type Error = Arc<String>;

    async fn load(&self, keys: &[SystemId]) -> Result<HashMap<SystemId, Named>, Self::Error> {
        let ids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let found = self.0.systems_by_ids(&ids).await.map_err(error)?;
        Ok(found
            .into_iter()
            .map(|(id, named)| (SystemId(id), named))
            .collect())
    }
}

impl Loader<EnvironmentId> for StoreLoader {
    type Value = Named;
    type Error = Arc<String>;

    async fn load(&self, keys: &[EnvironmentId]) -> Result<HashMap<EnvironmentId, Named>, Self::Error> {
        let ids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let found = self.0.environments_by_ids(&ids).await.map_err(error)?;
        Ok(found
            .into_iter()
            .map(|(id, named)| (EnvironmentId(id), named))
            .collect())
    }
}

impl Loader<EventsOf> for StoreLoader {
    type Value = Vec<deployment_events::Model>;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[EventsOf],
    ) -> Result<HashMap<EventsOf, Vec<deployment_events::Model>>, Self::Error> {
        let ids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let mut found = self.0.events_of(&ids).await.map_err(error)?;
        Ok(keys
            .iter()
            .map(|key| (*key, found.remove(&key.0).unwrap_or_default()))
            .collect())
    }
}
