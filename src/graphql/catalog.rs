//! The catalog's types: teams, and a system's links and tags (`[systems.<name>]`).

use async_graphql::{Context, Object, Result, SimpleObject};

use super::grafana::{DoraGroupBy, dora};
use super::scalars::Instant;
use super::types::{DeploymentConnection, DeploymentFilterInput, System, deployments_connection, internal};
use crate::domain::Catalog;
use crate::domain::dora::DoraMetrics;
use crate::store::Store;

/// A named link of a system (runbook, dashboard, ...).
#[derive(SimpleObject)]
pub struct Link {
    pub name: String,
    pub url: String,
}

/// A key:value tag.
#[derive(SimpleObject)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// A team: the systems the catalog says it owns.
pub struct Team {
    name: String,
    systems: Vec<String>,
}

impl Team {
    /// The named team as the catalog has it (no systems when it does not).
    pub fn named(catalog: &Catalog, name: &str) -> Self {
        Self {
            name: name.to_string(),
            systems: catalog.teams().get(name).cloned().unwrap_or_default(),
        }
    }
}

#[Object]
impl Team {
    async fn name(&self) -> &str {
        &self.name
    }
    /// Every system the catalog gives this team, deployed or not, by name.
    async fn system_names(&self) -> &[String] {
        &self.systems
    }
    /// This team's systems that have deployments, by name.
    async fn systems(&self, ctx: &Context<'_>) -> Result<Vec<System>> {
        let store = ctx.data::<Store>()?;
        Ok(store
            .systems_named(&self.systems)
            .await
            .map_err(internal)?
            .into_iter()
            .map(System)
            .collect())
    }
    /// Deployments of this team's systems, newest first.
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeploymentFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<DeploymentConnection> {
        let mut filter = filter.unwrap_or_default();
        filter.teams = Some(vec![self.name.clone()]);
        let filter = filter.into_filter(&*super::catalog(ctx)?)?;
        deployments_connection(ctx, filter, after, before, first, last).await
    }
    /// DORA's four keys over this team's production deployments in a window: one row for the
    /// team (`groupBy: [SYSTEM]` for one per system, too). As `Query.doraMetrics` otherwise.
    async fn dora_metrics(
        &self,
        ctx: &Context<'_>,
        from: Instant,
        to: Instant,
        environments: Option<Vec<String>>,
        #[graphql(default)] group_by: Vec<DoraGroupBy>,
    ) -> Result<Vec<DoraMetrics>> {
        let systems = super::types::of_teams(&*super::catalog(ctx)?, Vec::new(), vec![self.name.clone()]);
        let mut group_by = group_by;
        group_by.push(DoraGroupBy::Team);
        dora(ctx, (from, to), systems, environments, group_by).await
    }
}

/// The catalog's fields of `Query`.
#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// Every team the catalog names (`[systems.<name>] team`), by name.
    async fn teams(&self, ctx: &Context<'_>) -> Result<Vec<Team>> {
        let catalog = &*super::catalog(ctx)?;
        Ok(catalog
            .teams()
            .keys()
            .map(|name| Team::named(catalog, name))
            .collect())
    }
    /// One team by name (null when the catalog names no such team).
    async fn team(&self, ctx: &Context<'_>, name: String) -> Result<Option<Team>> {
        let catalog = &*super::catalog(ctx)?;
        Ok(catalog
            .teams()
            .contains_key(name.trim())
            .then(|| Team::named(catalog, name.trim())))
    }
    /// Team names, for a Grafana template variable (`$team`).
    async fn team_names(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        Ok(super::catalog(ctx)?.teams().keys().cloned().collect())
    }
}
