//! The GraphQL object types. Resolvers are thin: they read through the store or the loaders.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ContextSelectionSet, ID, InputObject, Object, OutputType, Positioned, Result, ServerResult,
    Value,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entity::{deployment_events, deployments};

pub use super::errors::{internal, user_error};
use super::loaders::{ChangesOf, EnvironmentId, EventsOf, SystemId, TotalCount, load, prime};
use super::plain::{Plain, PlainValue, named, plain_object};
use super::scalars::Instant;
use crate::domain::{Catalog, DeploymentStatus, Discovery};
use crate::events::LiveEvent;
use crate::store::{DeploymentFilter, Named, Page, PageRequest, Position, Store};

/// The most deployments one page may hold.
pub const MAX_PAGE: usize = 500;
/// The page size when neither `first` nor `last` is given.
pub const DEFAULT_PAGE: usize = 20;

/// Which deployments to return. A null or empty list means no filter on that field.
#[derive(Clone, Debug, Default, InputObject)]
#[graphql(name = "DeploymentFilter")]
pub struct DeploymentFilterInput {
    /// System names.
    pub systems: Option<Vec<String>>,
    /// Team names (`[systems.<name>] team` in the catalog): their systems' deployments.
    pub teams: Option<Vec<String>>,
    /// Environment names.
    pub environments: Option<Vec<String>>,
    pub statuses: Option<Vec<DeploymentStatus>>,
    /// Source names (generic, gitlab, jenkins, ...).
    pub sources: Option<Vec<String>>,
    /// On or after this time (the deployment's own time: finished, else started, else first seen).
    pub from: Option<Instant>,
    /// On or before this time.
    pub to: Option<Instant>,
    /// A commit sha or a prefix of one.
    pub commit_sha: Option<String>,
    /// Only deployments a delivery decided by this rule touched (`Delivery.decision.rule`, such
    /// as `jenkins.deployment_jobs`). Not applied to live events.
    pub rule: Option<String>,
    /// Tags as `key:value` (`tenant:acme`, `tier:production`): deployments carrying all of them.
    pub tags: Option<Vec<String>>,
}

impl DeploymentFilterInput {
    /// The store's filter, checked (BAD_USER_INPUT when it is not one the database can answer);
    /// teams become their systems.
    pub fn into_filter(self, catalog: &Catalog) -> Result<DeploymentFilter> {
        checked(DeploymentFilter {
            systems: of_teams(
                catalog,
                self.systems.unwrap_or_default(),
                self.teams.unwrap_or_default(),
            ),
            environments: self.environments.unwrap_or_default(),
            statuses: self.statuses.unwrap_or_default(),
            sources: self.sources.unwrap_or_default(),
            from: self.from.map(|i| i.0),
            to: self.to.map(|i| i.0),
            commit_sha: self.commit_sha.filter(|s| !s.trim().is_empty()),
            rule: self.rule.filter(|s| !s.trim().is_empty()),
            tags: tag_filter(self.tags.unwrap_or_default())?,
        })
    }
}

/// The systems a filter means: those named, narrowed to the named teams' systems when teams
/// are given (teams owning none of them: a list that matches nothing).
pub fn of_teams(catalog: &Catalog, systems: Vec<String>, teams: Vec<String>) -> Vec<String> {
    let teams: Vec<String> = teams.into_iter().filter(|t| !t.trim().is_empty()).collect();
    if teams.is_empty() {
        return systems;
    }
    let owned = catalog.systems_of_teams(&teams);
    let narrowed: Vec<String> = if systems.is_empty() {
        owned
    } else {
        systems.into_iter().filter(|s| owned.contains(s)).collect()
    };
    if narrowed.is_empty() {
        vec![crate::store::NO_SYSTEM.to_string()]
    } else {
        narrowed
    }
}

/// `key:value` filters, checked (BAD_USER_INPUT naming the first bad one).
pub fn tag_filter(tags: Vec<String>) -> Result<Vec<(String, String)>> {
    tags.iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| crate::domain::tags::filter_pair(t).map_err(|e| user_error("BAD_USER_INPUT", &e)))
        .collect()
}

/// A filter the database can answer, or a BAD_USER_INPUT error saying what to change.
pub fn checked(filter: DeploymentFilter) -> Result<DeploymentFilter> {
    match filter.check() {
        Ok(()) => Ok(filter),
        Err(message) => Err(user_error("BAD_USER_INPUT", &message)),
    }
}

/// An opaque cursor: the deployment's time and id.
pub struct DeploymentCursor(pub Position);

impl CursorType for DeploymentCursor {
    type Error = String;

    fn decode_cursor(s: &str) -> std::result::Result<Self, Self::Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "the cursor is not one shiplog gave out".to_string())?;
        let text =
            String::from_utf8(bytes).map_err(|_| "the cursor is not one shiplog gave out".to_string())?;
        let (at, id) = text
            .split_once(':')
            .ok_or_else(|| "the cursor is not one shiplog gave out".to_string())?;
        Ok(Self(Position {
            deployed_at: at
                .parse()
                .map_err(|_| "the cursor is not one shiplog gave out".to_string())?,
            id: id
                .parse()
                .map_err(|_| "the cursor is not one shiplog gave out".to_string())?,
        }))
    }

    fn encode_cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.0.deployed_at, self.0.id))
    }
}

/// Extra fields on the deployments connection.
pub struct DeploymentTotals {
    filter: DeploymentFilter,
}

#[Object]
impl DeploymentTotals {
    /// How many deployments match the filter (whole days come from per-day counts kept at
    /// ingest; the counts of a list of systems or environments are one statement).
    async fn total_count(&self, ctx: &Context<'_>) -> Result<u64> {
        Ok(load(ctx, TotalCount(self.filter.clone())).await?.unwrap_or(0))
    }
}

/// The connection type of every deployments list.
pub type DeploymentConnection = Connection<DeploymentCursor, Listed, DeploymentTotals>;

/// Runs one Relay page over the store.
pub async fn deployments_connection(
    ctx: &Context<'_>,
    filter: DeploymentFilter,
    after: Option<String>,
    before: Option<String>,
    first: Option<i32>,
    last: Option<i32>,
) -> Result<DeploymentConnection> {
    async_graphql::connection::query(
        after,
        before,
        first,
        last,
        |after: Option<DeploymentCursor>, before: Option<DeploymentCursor>, first, last| async move {
            if first.is_some() && last.is_some() {
                return Err(user_error(
                    "BAD_USER_INPUT",
                    "give either `first` or `last`, not both",
                ));
            }
            let requested = first.or(last).unwrap_or(DEFAULT_PAGE);
            if requested > MAX_PAGE {
                return Err(user_error(
                    "BAD_USER_INPUT",
                    &format!("a page holds at most {MAX_PAGE} deployments; page with `after`/`before`"),
                ));
            }
            super::budget::charge(ctx, super::budget::Charge::Rows(requested))?;
            let from_end = last.is_some();
            let request = PageRequest {
                after: after.as_ref().map(|c| c.0),
                before: before.as_ref().map(|c| c.0),
                limit: requested as u64,
                from_end,
            };
            let store = ctx.data::<Store>()?;
            // A query that asks only for `totalCount` (counts per environment, say) reads no page.
            let look = ctx.look_ahead();
            let page = if ["edges", "nodes", "pageInfo"]
                .iter()
                .any(|f| look.field(f).exists())
            {
                store.deployments_page(&filter, request).await.map_err(internal)?
            } else {
                Page {
                    rows: Vec::new(),
                    has_more: false,
                }
            };
            let (systems, environments) = prefetch(ctx, store, &page.rows).await?;
            let (has_previous, has_next) = if from_end {
                (page.has_more, before.is_some())
            } else {
                (after.is_some(), page.has_more)
            };
            let mut connection =
                Connection::with_additional_fields(has_previous, has_next, DeploymentTotals { filter });
            connection.edges.extend(page.rows.into_iter().map(|row| {
                let system = systems.get(&row.system_id).cloned();
                let environment = environments.get(&row.environment_id).cloned();
                Edge::new(
                    DeploymentCursor(Position::from(&row)),
                    Listed(Deployment::with_names(row, system, environment)),
                )
            }));
            Ok::<_, async_graphql::Error>(connection)
        },
    )
    .await
}

/// Names of the page's systems and environments when the query selects them (from the
/// store's id cache: usually no statement at all), and the request's loader primed with the
/// page's events when selected (one statement).
async fn prefetch(
    ctx: &Context<'_>,
    store: &Store,
    rows: &[deployments::Model],
) -> Result<(HashMap<i64, Named>, HashMap<i64, Named>)> {
    let look = ctx.look_ahead();
    let nodes = [look.field("edges").field("node"), look.field("nodes")];
    let wants = |name: &str| nodes.iter().any(|node| node.field(name).exists());
    let mut systems = HashMap::new();
    let mut environments = HashMap::new();
    if wants("system") {
        let ids: Vec<i64> = rows.iter().map(|r| r.system_id).collect();
        systems = store.systems_by_ids(&ids).await.map_err(internal)?;
    }
    if wants("environment") {
        let ids: Vec<i64> = rows.iter().map(|r| r.environment_id).collect();
        environments = store.environments_by_ids(&ids).await.map_err(internal)?;
    }
    if wants("events") {
        prime(ctx, rows.iter().map(|r| EventsOf(r.id))).await;
    }
    if wants("changeCount") || wants("changes") {
        prime(ctx, rows.iter().map(|r| ChangesOf(r.id))).await;
    }
    Ok((systems, environments))
}

/// One deployment of a system to an environment, from one source.
#[derive(Clone)]
pub struct Deployment {
    row: Arc<deployments::Model>,
    system: Option<Named>,
    environment: Option<Named>,
    /// Its place in history, read once per object however many of its fields ask.
    history: Arc<tokio::sync::OnceCell<crate::store::history::InHistory>>,
}

impl Deployment {
    /// A deployment whose system and environment are loaded on demand.
    pub fn new(row: deployments::Model) -> Self {
        Self {
            row: Arc::new(row),
            system: None,
            environment: None,
            history: Arc::default(),
        }
    }

    /// A deployment whose system and environment are already known.
    pub fn with_names(row: deployments::Model, system: Option<Named>, environment: Option<Named>) -> Self {
        Self {
            row: Arc::new(row),
            system,
            environment,
            history: Arc::default(),
        }
    }

    pub(crate) fn row(&self) -> &deployments::Model {
        &self.row
    }

    /// Its previous success and what it rolled back (two statements at most, once).
    async fn history(&self, ctx: &Context<'_>) -> Result<&crate::store::history::InHistory> {
        self.history
            .get_or_try_init(|| async {
                super::budget::charge(ctx, super::budget::Charge::Rows(2))?;
                let store = ctx.data::<Store>()?;
                store.in_history(&self.row).await.map_err(internal)
            })
            .await
    }

    pub(crate) fn system_named(&self) -> Option<&Named> {
        self.system.as_ref()
    }

    pub(crate) fn environment_named(&self) -> Option<&Named> {
        self.environment.as_ref()
    }

    /// finishedAt - startedAt in seconds, when both are known.
    pub(crate) fn duration(&self) -> Option<f64> {
        match (self.row.started_at, self.row.finished_at) {
            (Some(start), Some(finish)) => Some((finish - start) as f64 / 1000.0),
            _ => None,
        }
    }

    /// Whether the deployment's time is shiplog's stand-in (no start or finish was reported).
    pub(crate) fn time_is_stand_in(&self) -> bool {
        self.row.started_at.is_none() && self.row.finished_at.is_none()
    }

    /// A deployment from a live event, with everything already at hand.
    pub fn from_live(event: &LiveEvent) -> Self {
        Self {
            row: Arc::new(event.deployment.clone()),
            system: Some(event.system.clone()),
            environment: Some(event.environment.clone()),
            history: Arc::default(),
        }
    }
}

#[Object]
impl Deployment {
    /// shiplog's id for this deployment.
    async fn id(&self) -> ID {
        ID(self.row.id.to_string())
    }
    /// The tool it came from (generic, gitlab, jenkins, heroku, octopus, ...).
    async fn source(&self) -> &str {
        &self.row.source
    }
    /// The deployment's id in its tool.
    async fn external_id(&self) -> &str {
        &self.row.external_id
    }
    async fn system(&self, ctx: &Context<'_>) -> Result<System> {
        if let Some(system) = &self.system {
            return Ok(System(system.clone()));
        }
        load(ctx, SystemId(self.row.system_id))
            .await?
            .map(System)
            .ok_or_else(|| async_graphql::Error::new("system not found"))
    }
    async fn environment(&self, ctx: &Context<'_>) -> Result<Environment> {
        if let Some(environment) = &self.environment {
            return Ok(Environment(environment.clone()));
        }
        load(ctx, EnvironmentId(self.row.environment_id))
            .await?
            .map(Environment)
            .ok_or_else(|| async_graphql::Error::new("environment not found"))
    }
    async fn status(&self) -> DeploymentStatus {
        self.row.status
    }
    /// The tool's own status word.
    async fn raw_status(&self) -> &str {
        &self.row.raw_status
    }
    /// The tool's own name for the system, before the mapping rules.
    async fn raw_system(&self) -> &str {
        &self.row.raw_system
    }
    /// The tool's own name for the environment, before the mapping rules.
    async fn raw_environment(&self) -> &str {
        &self.row.raw_environment
    }
    /// The tool's tier for the environment (GitLab's `deployment_tier`, Heroku's pipeline stage).
    async fn environment_tier(&self) -> Option<&str> {
        self.row.environment_tier.as_deref()
    }
    /// The tenant deployed for (Octopus multi-tenant deployments).
    async fn tenant(&self) -> Option<&str> {
        self.row.tenant.as_deref()
    }
    /// Key:value tags, by key: the tool's (the generic webhook's `tags`; `tenant` and `tier`
    /// from the payload), and those the write API's `annotateDeployment` set.
    async fn tags(&self) -> Vec<super::catalog::Tag> {
        crate::store::merge::tags_of(self.row.tags.as_deref())
            .into_iter()
            .map(|(key, value)| super::catalog::Tag { key, value })
            .collect()
    }
    /// The last successful deployment of this system to this environment before this one:
    /// what this one replaced. Two statements per deployment at most: ask for it on one
    /// deployment or a short list.
    async fn previous_deployment(&self, ctx: &Context<'_>) -> Result<Option<Deployment>> {
        Ok(self.history(ctx).await?.previous.clone().map(Deployment::new))
    }
    /// Whether it put back what ran here before the deployment it replaced: the tool says so
    /// (CDEvents `service.rolledback`, Heroku's "Rollback to v41"), or its version (else its
    /// commit) is one an earlier success had, and not the replaced one's (that is a redeploy).
    async fn is_rollback(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(self.history(ctx).await?.rolled_back.is_some())
    }
    /// The deployment a rollback undid (its version is the one rolled back from).
    async fn rolled_back_from(&self, ctx: &Context<'_>) -> Result<Option<Deployment>> {
        Ok(self.history(ctx).await?.rolled_back.clone().map(Deployment::new))
    }
    /// How many commits it shipped: those between the previous successful deployment of its
    /// system in its environment and it, from the Git host's compare API (read in the
    /// background, so null until read, and null when unknown: see `changes.state`).
    async fn change_count(&self, ctx: &Context<'_>) -> Result<Option<i64>> {
        super::changes::change_count(ctx, self.row.id).await
    }
    /// The commits it shipped, newest first (`first` at most 100, default 20).
    async fn changes(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<super::changes::ChangeConnection> {
        super::changes::changes(ctx, self.row.id, first, after).await
    }
    /// The Git host's page comparing the previous deployment's commit with this one's, when
    /// both commits and the repository are known (the catalog's `repository`, else the one the
    /// payload named: its `repository` tag, a GitHub repository, a GitLab project).
    async fn compare_url(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let Some(head) = self.row.commit_sha.clone() else {
            return Ok(None);
        };
        let Some(base) = self
            .history(ctx)
            .await?
            .previous
            .as_ref()
            .and_then(|p| p.commit_sha.clone())
        else {
            return Ok(None);
        };
        if base == head {
            return Ok(None);
        }
        let system = match &self.system {
            Some(named) => Some(named.name.clone()),
            None => load(ctx, SystemId(self.row.system_id)).await?.map(|n| n.name),
        };
        Ok(repository_of(ctx, system.as_deref(), &self.row)?.map(|r| r.compare_url(&base, &head)))
    }
    /// A note: the generic webhook's `description`, or `annotateDeployment`'s.
    async fn note(&self) -> Option<&str> {
        self.row.note.as_deref()
    }
    /// Whether people marked it as a failed change (`markFailedChange`): a deployment that
    /// succeeded but broke production counts in DORA's change failure rate. Null when unmarked.
    async fn failed_change(&self) -> Option<bool> {
        self.row.failed_change
    }
    /// Why it was marked (or unmarked) as a failed change.
    async fn failed_change_reason(&self) -> Option<&str> {
        self.row.failed_change_reason.as_deref()
    }
    /// What people corrected with `correctDeployment`: any of `status`, `system`,
    /// `environment` (empty when nothing). Later deliveries from the tool do not change these.
    async fn corrected_fields(&self) -> Vec<&'static str> {
        let row = &self.row;
        [
            ("status", row.corrected_status.is_some()),
            ("system", row.corrected_system.is_some()),
            ("environment", row.corrected_environment.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, corrected)| corrected.then_some(field))
        .collect()
    }
    /// Why people corrected it.
    async fn correction_reason(&self) -> Option<&str> {
        self.row.correction_reason.as_deref()
    }
    /// When people deleted it (`deleteDeployment`): a deleted deployment is in no list, count
    /// or board, and only `Query.deployment(id)` and the events of its deletion show it.
    async fn deleted_at(&self) -> Option<Instant> {
        self.row.deleted_at.map(Instant)
    }
    /// Why people deleted it.
    async fn deletion_reason(&self) -> Option<&str> {
        self.row.deletion_reason.as_deref()
    }
    /// The earliest start we were told about.
    async fn started_at(&self) -> Option<Instant> {
        self.row.started_at.map(Instant)
    }
    /// When it reached its terminal status.
    async fn finished_at(&self) -> Option<Instant> {
        self.row.finished_at.map(Instant)
    }
    /// finishedAt - startedAt, when both are known.
    async fn duration_seconds(&self) -> Option<f64> {
        self.duration()
    }
    /// Whether `deployedAt` is shiplog's stand-in: the tool reported neither a start nor a
    /// finish (no time in its deliveries, or a job skipped before it ran), so it is the time
    /// shiplog first saw the deployment, not the tool's.
    async fn times_estimated(&self) -> bool {
        self.time_is_stand_in()
    }
    /// The deployment's own time, which orders lists: finished, else started, else first seen.
    async fn deployed_at(&self) -> Instant {
        Instant(self.row.deployed_at)
    }
    async fn commit_sha(&self) -> Option<&str> {
        self.row.commit_sha.as_deref()
    }
    /// The branch or tag.
    #[graphql(name = "ref")]
    async fn git_ref(&self) -> Option<&str> {
        self.row.git_ref.as_deref()
    }
    async fn version(&self) -> Option<&str> {
        self.row.version.as_deref()
    }
    /// A link back to the deployment in its tool.
    async fn url(&self) -> Option<&str> {
        self.row.url.as_deref()
    }
    /// Who deployed.
    async fn actor(&self) -> Option<&str> {
        self.row.actor.as_deref()
    }
    /// When shiplog first heard of it.
    async fn first_seen_at(&self) -> Instant {
        Instant(self.row.first_seen_at)
    }
    /// How shiplog first heard of it: WEBHOOK, IMPORT (`shiplog import`) or RECONCILE (the
    /// server's poll of the tool's API found it: its webhook never arrived).
    async fn discovered_by(&self) -> Discovery {
        self.row.discovered_by
    }
    /// When shiplog last changed it.
    async fn updated_at(&self) -> Instant {
        Instant(self.row.updated_at)
    }
    /// Every status we were told about, oldest first.
    async fn events(&self, ctx: &Context<'_>) -> Result<Vec<DeploymentEvent>> {
        let events = load(ctx, EventsOf(self.row.id)).await?.unwrap_or_default();
        Ok(events
            .into_iter()
            .map(|event| DeploymentEvent {
                event,
                deployment: self.clone(),
            })
            .collect())
    }
}

/// A status change of a deployment.
#[derive(Clone)]
pub struct DeploymentEvent {
    event: deployment_events::Model,
    deployment: Deployment,
}

impl DeploymentEvent {
    /// The GraphQL view of a live event.
    pub fn from_live(event: &LiveEvent) -> Self {
        Self {
            event: event.event.clone(),
            deployment: Deployment::from_live(event),
        }
    }
}

#[Object]
impl DeploymentEvent {
    async fn id(&self) -> ID {
        ID(self.event.id.to_string())
    }
    /// The deployment as it stands after this event.
    async fn deployment(&self) -> &Deployment {
        &self.deployment
    }
    /// The status this event reported.
    async fn status(&self) -> DeploymentStatus {
        self.event.status
    }
    /// The tool's own status word in this event.
    async fn raw_status(&self) -> &str {
        &self.event.raw_status
    }
    /// The deployment's status before this event (null for its first).
    async fn previous_status(&self) -> Option<DeploymentStatus> {
        self.event.previous_status
    }
    /// When it happened, by the tool's clock (or when shiplog received it, if the tool does not say).
    async fn occurred_at(&self) -> Instant {
        Instant(self.event.occurred_at)
    }
    /// When shiplog stored it.
    async fn recorded_at(&self) -> Instant {
        Instant(self.event.recorded_at)
    }
    /// The delivery that reported it, with its decision ("why is this here"); null for
    /// deployments seeded or imported without one. One lookup per event: ask for it on one
    /// deployment's events, not on long lists.
    async fn delivery(&self, ctx: &Context<'_>) -> Result<Option<Delivery>> {
        let Some(id) = self.event.delivery_id else {
            return Ok(None);
        };
        super::budget::charge(ctx, super::budget::Charge::Rows(1))?;
        let store = ctx.data::<Store>()?;
        Ok(store.delivery(id).await.map_err(internal)?.map(Delivery))
    }
}

/// An application or service that gets deployed.
pub struct System(pub Named);

#[Object]
impl System {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The team that owns it (`[systems.<name>] team`), if the catalog says.
    async fn team(&self, ctx: &Context<'_>) -> Result<Option<super::catalog::Team>> {
        let catalog = &*super::catalog(ctx)?;
        Ok(catalog
            .team_of(&self.0.name)
            .map(|team| super::catalog::Team::named(catalog, team)))
    }
    /// What it is, from the catalog.
    async fn description(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(catalogued(ctx, &self.0.name)?.and_then(|s| s.description))
    }
    /// Where its code lives, as `github:owner/name` or `gitlab:group/project`.
    async fn repository(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(catalogued(ctx, &self.0.name)?.and_then(|s| s.repository.map(|r| r.to_string())))
    }
    /// The repository's web page.
    async fn repository_url(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(catalogued(ctx, &self.0.name)?.and_then(|s| s.repository.map(|r| r.url())))
    }
    /// Named links (runbook, dashboard, ...), by name.
    async fn links(&self, ctx: &Context<'_>) -> Result<Vec<super::catalog::Link>> {
        let links = catalogued(ctx, &self.0.name)?
            .map(|s| s.links)
            .unwrap_or_default();
        Ok(links
            .into_iter()
            .map(|(name, url)| super::catalog::Link { name, url })
            .collect())
    }
    /// Key:value tags from the catalog, by key.
    async fn tags(&self, ctx: &Context<'_>) -> Result<Vec<super::catalog::Tag>> {
        let tags = catalogued(ctx, &self.0.name)?.map(|s| s.tags).unwrap_or_default();
        Ok(tags
            .into_iter()
            .map(|(key, value)| super::catalog::Tag { key, value })
            .collect())
    }
    /// This system's deployments, newest first.
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeploymentFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<DeploymentConnection> {
        let mut filter = filter.unwrap_or_default().into_filter(&*super::catalog(ctx)?)?;
        // Its own deployments, when the filter's systems (or teams) include it.
        let name = self.0.name.clone();
        filter.systems = if filter.systems.is_empty() || filter.systems.contains(&name) {
            vec![name]
        } else {
            vec![crate::store::NO_SYSTEM.to_string()]
        };
        deployments_connection(ctx, filter, after, before, first, last).await
    }
    /// The environments this system has been deployed to.
    async fn environments(&self, ctx: &Context<'_>) -> Result<Vec<Environment>> {
        let store = ctx.data::<Store>()?;
        Ok(store
            .environments_of_system(self.0.id)
            .await
            .map_err(internal)?
            .into_iter()
            .map(Environment)
            .collect())
    }
    /// What runs in `from` that `to` does not have yet (`drift(from: "staging", to:
    /// "production")`): each one's current deployment, whether they run the same version (else
    /// commit), how many successful deployments to `from` came since it ran what `to` runs, and
    /// the page of the commits between them.
    async fn drift(&self, ctx: &Context<'_>, from: String, to: String) -> Result<super::changes::Drift> {
        super::changes::drift(ctx, &self.0, (&from, &to)).await
    }
    /// The newest deployment of this system, optionally in one environment.
    async fn last_deployment(
        &self,
        ctx: &Context<'_>,
        environment: Option<String>,
    ) -> Result<Option<Deployment>> {
        let store = ctx.data::<Store>()?;
        Ok(store
            .last_deployment(self.0.id, environment.as_deref())
            .await
            .map_err(internal)?
            .map(Deployment::new))
    }
}

/// Where a system's code lives: the catalog's `repository`, else the one the deployment's
/// payload named (`Catalog::repository_for`).
pub(crate) fn repository_of(
    ctx: &Context<'_>,
    system: Option<&str>,
    deployment: &deployments::Model,
) -> Result<Option<crate::domain::catalog::Repository>> {
    Ok(super::catalog(ctx)?.repository_for(system.unwrap_or_default(), deployment))
}

/// A system's catalog entry, if it has one.
fn catalogued(ctx: &Context<'_>, name: &str) -> Result<Option<crate::domain::catalog::CatalogSystem>> {
    Ok(super::catalog(ctx)?.system(name).cloned())
}

/// Where deployments land.
pub struct Environment(pub Named);

#[Object]
impl Environment {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The tool's tier for it (GitLab's `deployment_tier`, Heroku's stage, GitHub's
    /// production flag), from its newest deployment that gives one.
    async fn tier(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(self.facts(ctx).await?.tier)
    }
    /// Where it can be visited (GitLab's `environment_external_url`, GitHub's
    /// `environment_url`), from its newest deployment that gives one.
    async fn url(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(self.facts(ctx).await?.url)
    }
    /// When anything was last deployed to it.
    async fn last_deployed_at(&self, ctx: &Context<'_>) -> Result<Option<Instant>> {
        Ok(self.facts(ctx).await?.last_deployed_at.map(Instant))
    }
    /// Whether its name matches `[environments] ephemeral` (review apps, previews).
    async fn ephemeral(&self, ctx: &Context<'_>) -> Result<bool> {
        let config = ctx.data::<crate::domain::lifecycle::EnvironmentsConfig>()?;
        Ok(config.is_ephemeral(&self.0.name))
    }
    /// Whether nothing was deployed to it, by any system, for longer than `[environments]`
    /// allows (`ephemeral_stopped_after_days`, `stopped_after_days`). The board decides the
    /// same over the systems it shows.
    async fn stopped(&self, ctx: &Context<'_>) -> Result<bool> {
        let config = ctx.data::<crate::domain::lifecycle::EnvironmentsConfig>()?;
        let facts = self.facts(ctx).await?;
        Ok(config.is_stopped(
            &self.0.name,
            facts.last_deployed_at,
            facts.stopped_at,
            crate::domain::now_millis(),
        ))
    }
    /// When its tool last said it stopped it (GitLab's `stop` action, GitHub's `inactive` on a
    /// transient environment); a deployment after that starts it again.
    async fn stopped_at(&self, ctx: &Context<'_>) -> Result<Option<Instant>> {
        Ok(self.facts(ctx).await?.stopped_at.map(Instant))
    }
    /// Deployments to this environment, newest first.
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeploymentFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<DeploymentConnection> {
        let mut filter = filter.unwrap_or_default().into_filter(&*super::catalog(ctx)?)?;
        filter.environments = vec![self.0.name.clone()];
        deployments_connection(ctx, filter, after, before, first, last).await
    }
    /// The systems deployed here.
    async fn systems(&self, ctx: &Context<'_>) -> Result<Vec<System>> {
        let store = ctx.data::<Store>()?;
        Ok(store
            .systems_of_environment(self.0.id)
            .await
            .map_err(internal)?
            .into_iter()
            .map(System)
            .collect())
    }
}

impl Environment {
    /// Its board cells' facts (two statements: its cells, their deployments).
    async fn facts(&self, ctx: &Context<'_>) -> Result<super::board::EnvironmentFacts> {
        super::budget::charge(ctx, super::budget::Charge::Aggregate)?;
        let store = ctx.data::<Store>()?;
        let cells = store.board_cells(&[], &[self.0.id]).await.map_err(internal)?;
        let mut facts = super::board::EnvironmentFacts::of(&cells)
            .remove(&self.0.id)
            .unwrap_or_default();
        facts.stopped_at = store.environment_stopped_at(self.0.id).await.map_err(internal)?;
        Ok(facts)
    }
}

/// One webhook delivery as journaled (secrets never stored).
pub struct Delivery(pub entity::deliveries::Model);

#[Object]
impl Delivery {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn source(&self) -> &str {
        &self.0.source
    }
    /// What redeliveries are recognised by (a delivery id, an idempotency key or a body hash).
    async fn delivery_key(&self) -> &str {
        &self.0.delivery_key
    }
    async fn received_at(&self) -> Instant {
        Instant(self.0.received_at)
    }
    async fn state(&self) -> &str {
        self.0.state.as_str()
    }
    /// Why it is ignored, or why its last attempt failed.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    async fn next_attempt_at(&self) -> Option<Instant> {
        self.0.next_attempt_at.map(Instant)
    }
    /// The raw body.
    async fn body(&self) -> &str {
        &self.0.body
    }
    /// Why it is (or is not) a deployment: the source rule that decided, and each deployment's
    /// names beside the tool's words with the rule that gave each (`shiplog explain`). Null for
    /// deliveries journaled before shiplog kept decisions.
    async fn decision(&self) -> Option<crate::domain::Decision> {
        crate::domain::Decision::from_json(self.0.decision.as_deref())
    }
    /// How it came: WEBHOOK, a record read from the tool's API by `shiplog import` (IMPORT) or
    /// by reconciliation (RECONCILE), journaled with that API object as its body, or a
    /// `recordDeployment` mutation (API).
    async fn kind(&self) -> Discovery {
        crate::sources::discovery(&crate::ingest::journaled_headers(&self.0.headers))
    }
    /// Which write token made it, for the write API's deliveries: `token:` and the first 12 hex
    /// digits of the token's SHA-256 (`printf %s "$TOKEN" | sha256sum` tells whose).
    async fn recorded_by(&self) -> Option<String> {
        crate::ingest::journaled_headers(&self.0.headers)
            .get(crate::sources::WRITER_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    }
}

/// A deployment as the lists hand it out: GraphQL type `Deployment`.
pub struct Listed(pub Deployment);

impl OutputType for Listed {
    fn type_name() -> Cow<'static, str> {
        <Deployment as OutputType>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Deployment as OutputType>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        // The schema has no extensions; one that hooks every field would not see these.
        if let Some(value) = plain_object(self, &ctx.item.node) {
            return Ok(value);
        }
        OutputType::resolve(&self.0, ctx, field).await
    }
}

impl Plain for Listed {
    fn plain_field(&self, field: &Field) -> Option<Value> {
        let deployment = &self.0;
        let row = deployment.row();
        Some(match field.name.node.as_str() {
            "id" => Value::String(row.id.to_string()),
            "source" => row.source.plain(),
            "externalId" => row.external_id.plain(),
            "system" => named(deployment.system_named()?, "System", &field.selection_set.node)?,
            "environment" => named(
                deployment.environment_named()?,
                "Environment",
                &field.selection_set.node,
            )?,
            "status" => row.status.plain(),
            "rawStatus" => row.raw_status.plain(),
            "rawSystem" => row.raw_system.plain(),
            "rawEnvironment" => row.raw_environment.plain(),
            "environmentTier" => row.environment_tier.plain(),
            "tenant" => row.tenant.plain(),
            "note" => row.note.plain(),
            "failedChange" => row.failed_change.map_or(Value::Null, Value::Boolean),
            "failedChangeReason" => row.failed_change_reason.plain(),
            "startedAt" => row.started_at.map(Instant).plain(),
            "finishedAt" => row.finished_at.map(Instant).plain(),
            "durationSeconds" => deployment.duration().plain(),
            "deployedAt" => Instant(row.deployed_at).plain(),
            "timesEstimated" => Value::Boolean(deployment.time_is_stand_in()),
            "commitSha" => row.commit_sha.plain(),
            "ref" => row.git_ref.plain(),
            "version" => row.version.plain(),
            "url" => row.url.plain(),
            "actor" => row.actor.plain(),
            "firstSeenAt" => Instant(row.first_seen_at).plain(),
            "discoveredBy" => row.discovered_by.plain(),
            "updatedAt" => Instant(row.updated_at).plain(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use async_graphql::parser::types::DocumentOperations;

    use async_graphql::Value;

    use super::*;
    use crate::domain::{DeploymentStatus, Observation};

    fn deployment(names: bool) -> Deployment {
        let observation = Observation {
            raw_status: "success".into(),
            started_at: Some(500),
            commit_sha: Some("abc".into()),
            ..Observation::bare("7", DeploymentStatus::Succeeded, 2_000)
        };
        let row = crate::store::merge::new_deployment("gitlab", &observation, 1, 2, 3_000);
        let named = |id, name: &str| {
            names.then(|| Named {
                id,
                name: name.into(),
            })
        };
        Deployment::with_names(row, named(1, "billing"), named(2, "prod"))
    }

    /// `plain` over the query's top selection set.
    fn answer(deployment: &Deployment, query: &str) -> Option<Value> {
        let document = parse_query(query).unwrap();
        let DocumentOperations::Single(operation) = &document.operations else {
            panic!("one operation")
        };
        plain_object(&Listed(deployment.clone()), &operation.node.selection_set.node)
    }

    #[test]
    fn plain_fields_are_built_directly_in_selection_order() {
        let value = answer(
            &deployment(true),
            "{ status when: deployedAt id durationSeconds system { name } env: environment { id __typename } version }",
        )
        .unwrap();
        assert_eq!(
            value.into_json().unwrap(),
            serde_json::json!({
                "status": "SUCCEEDED", "when": "1970-01-01T00:00:02.000Z", "id": "0",
                "durationSeconds": 1.5, "system": { "name": "billing" },
                "env": { "id": "2", "__typename": "Environment" }, "version": null
            })
        );
        let text = serde_json::to_string(&answer(&deployment(true), "{ version id }").unwrap()).unwrap();
        assert_eq!(text, r#"{"version":null,"id":"0"}"#);
    }

    #[test]
    fn anything_else_is_left_to_the_generic_executor() {
        let with_names = deployment(true);
        for query in [
            "{ id events { status } }",
            "{ id ... on Deployment { source } }",
            "{ id ...f } fragment f on Deployment { source }",
            "{ id id }",
            "{ a: id a: source }",
            "{ id system { name deployments { totalCount } } }",
            "{ id system { n: name n: id } }",
            "{ id system { ... on System { name } } }",
        ] {
            assert!(answer(&with_names, query).is_none(), "{query}");
        }
        // Names not at hand are loaded by the generic path.
        assert!(answer(&deployment(false), "{ id system { name } }").is_none());
        assert!(answer(&deployment(false), "{ id source }").is_some());
    }
}
