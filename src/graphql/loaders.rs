//! DataLoaders for nested fields. An HTTP request gets its own caching loader, and the
//! deployments connection primes it with one `load_many` per nested field the query asks for
//! (seen by look-ahead), so a page costs one statement per kind of nested field however the
//! executor interleaves the nodes. A WebSocket connection lives long, so it gets a loader
//! without a cache: a subscription never sees stale events.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader, NoCache};
use entity::deployment_events;

use crate::store::counts::CountGroup;
use crate::store::{DeploymentFilter, Named, Store};

/// Key: a system id.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct SystemId(pub i64);
/// Key: an environment id.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct EnvironmentId(pub i64);
/// Key: a deployment id, for its status events.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct EventsOf(pub i64);

/// Key: a deployment id, for the commit range it shipped.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ChangesOf(pub i64);

/// Key: a commit range (repository, base, head), for drift and the board.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RangeOf(pub crate::store::commits::RangeKey);

/// Key: the number of deployments matching a filter (`totalCount`). The counts asked for in
/// one request that differ only in their one system (or one environment) are answered by one
/// grouped statement: counts per environment are one round trip, not one per environment.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TotalCount(pub DeploymentFilter);

/// Loads through the store.
pub struct StoreLoader(pub Store);

/// The per-request loader (cache lives as long as the request).
pub type RequestLoader = DataLoader<StoreLoader, HashMapCache>;
/// The per-connection loader of WebSocket subscriptions (no cache).
pub type LiveLoader = DataLoader<StoreLoader, NoCache>;

/// A fresh loader for one HTTP request.
pub fn request_loader(store: Store) -> RequestLoader {
    DataLoader::with_cache(StoreLoader(store), tokio::spawn, HashMapCache::default())
}

/// A fresh loader for one WebSocket connection.
pub fn live_loader(store: Store) -> LiveLoader {
    DataLoader::with_cache(StoreLoader(store), tokio::spawn, NoCache)
}

/// Loads one value through whichever loader the context carries.
pub async fn load<K>(
    ctx: &async_graphql::Context<'_>,
    key: K,
) -> async_graphql::Result<Option<<StoreLoader as Loader<K>>::Value>>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    StoreLoader: Loader<K, Error = Arc<String>>,
{
    let found = if let Some(loader) = ctx.data_opt::<RequestLoader>() {
        loader.load_one(key).await
    } else if let Some(loader) = ctx.data_opt::<LiveLoader>() {
        loader.load_one(key).await
    } else {
        return Err(async_graphql::Error::new("no loader in this context"));
    };
    found.map_err(|error| {
        use async_graphql::ErrorExtensions;
        async_graphql::Error::new(error.as_str()).extend_with(|_, e| e.set("code", "INTERNAL_SERVER_ERROR"))
    })
}

/// Loads many keys at once into the request's cache (no-op without a caching loader).
pub async fn prime<K>(ctx: &async_graphql::Context<'_>, keys: impl IntoIterator<Item = K>)
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    StoreLoader: Loader<K, Error = Arc<String>>,
{
    if let Some(loader) = ctx.data_opt::<RequestLoader>() {
        // A failure here shows up again, per field, when the nodes load.
        let _ = loader.load_many(keys).await;
    }
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

impl Loader<ChangesOf> for StoreLoader {
    /// None for a deployment without a range: every key gets a value, so the request's cache
    /// answers it and a page costs one batch.
    type Value = Option<(
        entity::deployment_changes::Model,
        Option<entity::commit_ranges::Model>,
    )>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[ChangesOf]) -> Result<HashMap<ChangesOf, Self::Value>, Self::Error> {
        let ids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let mut found = self.0.changes_of(&ids).await.map_err(error)?;
        Ok(keys.iter().map(|key| (*key, found.remove(&key.0))).collect())
    }
}

impl Loader<RangeOf> for StoreLoader {
    /// None for a range not known yet (every key gets a value, so the cache answers it).
    type Value = Option<entity::commit_ranges::Model>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[RangeOf]) -> Result<HashMap<RangeOf, Self::Value>, Self::Error> {
        let mut found = self
            .0
            .ranges(keys.iter().map(|k| k.0.clone()).collect())
            .await
            .map_err(error)?;
        Ok(keys
            .iter()
            .map(|key| (key.clone(), found.remove(&key.0)))
            .collect())
    }
}

impl Loader<TotalCount> for StoreLoader {
    type Value = u64;
    type Error = Arc<String>;

    async fn load(&self, keys: &[TotalCount]) -> Result<HashMap<TotalCount, u64>, Self::Error> {
        // Keys naming exactly one system (or else one environment) group by the rest of the
        // filter; anything else is counted on its own.
        let mut groups: HashMap<(CountGroup, DeploymentFilter), Vec<String>> = HashMap::new();
        let mut alone = Vec::new();
        for key in keys {
            let filter = &key.0;
            let mut base = filter.clone();
            let group = if filter.systems.len() == 1 {
                base.systems.clear();
                (CountGroup::System, filter.systems[0].clone())
            } else if filter.environments.len() == 1 {
                base.environments.clear();
                (CountGroup::Environment, filter.environments[0].clone())
            } else {
                alone.push(key.clone());
                continue;
            };
            groups.entry((group.0, base)).or_default().push(group.1);
        }
        let mut found = HashMap::with_capacity(keys.len());
        for ((group, base), names) in groups {
            let counts = self.0.count_grouped(&base, group, &names).await.map_err(error)?;
            for name in names {
                let mut filter = base.clone();
                match group {
                    CountGroup::System => filter.systems = vec![name.clone()],
                    CountGroup::Environment => filter.environments = vec![name.clone()],
                }
                found.insert(TotalCount(filter), counts.get(&name).copied().unwrap_or(0));
            }
        }
        for key in alone {
            let count = self.0.count_deployments(&key.0).await.map_err(error)?;
            found.insert(key, count);
        }
        Ok(found)
    }
}
