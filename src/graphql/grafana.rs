//! Fields shaped for Grafana's GraphQL datasources (Infinity, Wild GraphQL): plain lists, flat
//! rows, every filter a list where null, [], "*" and "$__all" mean all, times as `Instant`
//! (ISO strings or epoch milliseconds, as Grafana's macros give them). And DORA metrics.

use std::collections::{BTreeSet, HashMap};

use async_graphql::parser::types::Field;
use async_graphql::{Context, Enum, Object, Result, SimpleObject, Value};

use super::budget::Chunked;
use super::budget::{Charge, charge};
use super::plain::{Plain, PlainValue};
use super::scalars::Instant;
use super::types::{checked, internal, user_error};
use crate::domain::DeploymentStatus;
use crate::domain::buckets::{Series, Width};
use crate::store::analytics::{Bucket, Dimension};
use crate::store::{DeploymentFilter, Named, PageRequest, Store};

/// The most rows a Grafana list returns.
pub const MAX_ROWS: i32 = 10_000;
/// The most buckets a frequency query fills (a year of hours is 8,784).
pub const MAX_BUCKETS: i64 = 20_000;
/// The most points one frequency answer holds (buckets x groups): a year by day for 300
/// system-environment pairs is 109,800.
pub const MAX_POINTS: usize = 200_000;

/// Bucket width of a frequency series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum Interval {
    Hour,
    Day,
    Week,
}

/// What a frequency series is split by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Enum)]
pub enum GroupBy {
    System,
    Environment,
    Status,
    Source,
}

impl Interval {
    fn width(self) -> Width {
        match self {
            Self::Hour => Width::Hour,
            Self::Day => Width::Day,
            Self::Week => Width::Week,
        }
    }
}

impl GroupBy {
    fn dimension(self) -> Dimension {
        match self {
            Self::System => Dimension::System,
            Self::Environment => Dimension::Environment,
            Self::Status => Dimension::Status,
            Self::Source => Dimension::Source,
        }
    }
}

/// DORA metrics are per system, and optionally per environment or per team (the catalog's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Enum)]
#[graphql(name = "DoraGroupBy")]
pub enum DoraGroupBy {
    System,
    Environment,
    Team,
}

/// Which environments count as production for DORA.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DoraConfig {
    /// Environment names (after aliases) that are production.
    pub production_environments: Vec<String>,
    /// Environments whose deployments carry this tier count too (GitLab's tier, Heroku's stage).
    pub production_tier: String,
}

impl Default for DoraConfig {
    fn default() -> Self {
        Self {
            production_environments: vec!["production".into()],
            production_tier: "production".into(),
        }
    }
}

/// A frequency's buckets: their width, the UTC offset of local midnight, the first bucket's
/// start and how many there are; an error when the offset or the count is out of bounds.
fn buckets_of(
    interval: Interval,
    utc_offset_minutes: i32,
    from: i64,
    to: i64,
) -> Result<(Width, i64, i64, i64)> {
    if !(-14 * 60..=14 * 60).contains(&utc_offset_minutes) {
        return Err(user_error(
            "BAD_USER_INPUT",
            "`utcOffsetMinutes` must be between -840 and 840",
        ));
    }
    let width = interval.width();
    let offset = i64::from(utc_offset_minutes) * 60_000;
    let first = width.floor(from, offset);
    let buckets = (to - first) / width.millis() + 1;
    if buckets > MAX_BUCKETS {
        return Err(user_error(
            "BAD_USER_INPUT",
            &format!("{buckets} buckets is too many (at most {MAX_BUCKETS}): use a wider interval"),
        ));
    }
    Ok((width, offset, first, buckets))
}

/// The counted buckets as a filled series: every group seen gets every bucket, zero where it
/// had none (an ungrouped series has its buckets even when nothing was counted).
fn fill(counted: Vec<(Bucket, i64)>, ungrouped: bool) -> Series<Bucket> {
    let whole = ungrouped.then_some(Bucket {
        start: 0,
        system_id: None,
        environment_id: None,
        status: None,
        source: None,
    });
    Series::new(
        counted
            .into_iter()
            .map(|(bucket, count)| ((bucket.start, Bucket { start: 0, ..bucket }), count)),
        whole,
    )
}

/// A list argument as Grafana sends it (see [`list`]).
type Names = Option<Vec<String>>;

/// The filter of a Grafana field's arguments, checked.
fn grafana_filter(
    ctx: &Context<'_>,
    (systems, teams, tags): (Names, Names, Names),
    environments: Option<Vec<String>>,
    statuses: Option<Vec<DeploymentStatus>>,
    sources: Option<Vec<String>>,
    (from, to): (i64, i64),
) -> Result<DeploymentFilter> {
    let catalog = &*super::catalog(ctx)?;
    checked(DeploymentFilter {
        systems: super::types::of_teams(catalog, list(systems), list(teams)),
        environments: list(environments),
        statuses: statuses.unwrap_or_default(),
        sources: list(sources),
        from: Some(from),
        to: Some(to),
        commit_sha: None,
        rule: None,
        tags: super::types::tag_filter(list(tags))?,
    })
}

/// A filter list as Grafana sends it: null, [], "*" or "$__all" mean everything.
fn list(values: Option<Vec<String>>) -> Vec<String> {
    let values = values.unwrap_or_default();
    if values.iter().any(|v| v == "*" || v == "$__all" || v == "All") {
        Vec::new()
    } else {
        values.into_iter().filter(|v| !v.trim().is_empty()).collect()
    }
}

fn window(from: Instant, to: Instant) -> Result<(i64, i64)> {
    if to.0 < from.0 {
        return Err(user_error("BAD_USER_INPUT", "`to` is before `from`"));
    }
    Ok((from.0, to.0))
}

/// One deployment as a flat table row.
#[derive(SimpleObject)]
pub struct DeploymentRow {
    /// The deployment's own time (finished, else started, else first seen).
    pub time: Instant,
    pub id: String,
    pub system: String,
    /// The team that owns the system (the catalog's `team`).
    pub team: Option<String>,
    pub environment: String,
    pub status: DeploymentStatus,
    pub raw_status: String,
    pub source: String,
    pub version: Option<String>,
    pub commit_sha: Option<String>,
    pub started_at: Option<Instant>,
    pub finished_at: Option<Instant>,
    pub duration_seconds: Option<f64>,
    pub actor: Option<String>,
    pub url: Option<String>,
    /// Tags as comma-joined `key:value` pairs, by key.
    pub tags: String,
    pub note: Option<String>,
}

/// One bucket of a frequency series, in long format.
#[derive(SimpleObject)]
pub struct FrequencyPoint {
    /// The bucket's start.
    pub time: Instant,
    pub count: i64,
    pub system: Option<String>,
    pub environment: Option<String>,
    pub status: Option<DeploymentStatus>,
    pub source: Option<String>,
}

/// A deployment as a Grafana annotation.
#[derive(SimpleObject)]
pub struct DeploymentAnnotation {
    /// When it started (or its own time when the start is unknown).
    pub time: Instant,
    /// When it finished; null while in progress.
    pub time_end: Option<Instant>,
    pub title: String,
    pub text: String,
    /// Comma-joined: shiplog, system, environment, status, source, the team when known, and
    /// the deployment's `key:value` tags.
    pub tags: String,
}

impl Plain for DeploymentRow {
    fn plain_field(&self, field: &Field) -> Option<Value> {
        Some(match field.name.node.as_str() {
            "time" => self.time.plain(),
            "id" => self.id.plain(),
            "system" => self.system.plain(),
            "team" => self.team.plain(),
            "environment" => self.environment.plain(),
            "status" => self.status.plain(),
            "rawStatus" => self.raw_status.plain(),
            "source" => self.source.plain(),
            "version" => self.version.plain(),
            "commitSha" => self.commit_sha.plain(),
            "startedAt" => self.started_at.plain(),
            "finishedAt" => self.finished_at.plain(),
            "durationSeconds" => self.duration_seconds.plain(),
            "actor" => self.actor.plain(),
            "url" => self.url.plain(),
            "tags" => self.tags.plain(),
            "note" => self.note.plain(),
            _ => return None,
        })
    }
}

impl Plain for FrequencyPoint {
    fn plain_field(&self, field: &Field) -> Option<Value> {
        Some(match field.name.node.as_str() {
            "time" => self.time.plain(),
            "count" => self.count.plain(),
            "system" => self.system.plain(),
            "environment" => self.environment.plain(),
            "status" => self.status.plain(),
            "source" => self.source.plain(),
            _ => return None,
        })
    }
}

impl Plain for DeploymentAnnotation {
    fn plain_field(&self, field: &Field) -> Option<Value> {
        Some(match field.name.node.as_str() {
            "time" => self.time.plain(),
            "timeEnd" => self.time_end.plain(),
            "title" => self.title.plain(),
            "text" => self.text.plain(),
            "tags" => self.tags.plain(),
            _ => return None,
        })
    }
}

pub use crate::domain::dora::DoraMetrics;
use crate::domain::dora::four_keys_by_team;

/// Names of the given system and environment ids (from the store's id cache: usually no
/// statement at all).
async fn names(
    store: &Store,
    mut system_ids: Vec<i64>,
    mut environment_ids: Vec<i64>,
) -> Result<(HashMap<i64, String>, HashMap<i64, String>)> {
    for ids in [&mut system_ids, &mut environment_ids] {
        ids.sort_unstable();
        ids.dedup();
    }
    let systems = store.systems_by_ids(&system_ids).await.map_err(internal)?;
    let environments = store
        .environments_by_ids(&environment_ids)
        .await
        .map_err(internal)?;
    let map = |rows: HashMap<i64, Named>| rows.into_iter().map(|(id, n)| (id, n.name)).collect();
    Ok((map(systems), map(environments)))
}

/// How many groups a frequency dimension is expected to split into, before counting: the
/// filter's list when there is one, else a guess (the budget only needs the order of size).
fn expected_groups(dimension: Dimension, filter: &DeploymentFilter) -> usize {
    // An empty list means "no filter".
    let listed = |count: usize, guess: usize| if count == 0 { guess } else { count };
    match dimension {
        Dimension::System => listed(filter.systems.len(), 10),
        Dimension::Environment => listed(filter.environments.len(), 10),
        Dimension::Status => listed(filter.statuses.len(), 5),
        Dimension::Source => listed(filter.sources.len(), 5),
    }
}

/// The Grafana root fields, merged into `Query`.
#[derive(Default)]
pub struct GrafanaQuery;

#[Object]
impl GrafanaQuery {
    /// Deployments in a time range as flat rows, newest first (tables). `limit` is at most 10,000.
    #[allow(clippy::too_many_arguments)]
    async fn deployment_list(
        &self,
        ctx: &Context<'_>,
        from: Instant,
        to: Instant,
        systems: Option<Vec<String>>,
        environments: Option<Vec<String>>,
        statuses: Option<Vec<DeploymentStatus>>,
        sources: Option<Vec<String>>,
        #[graphql(default = 1000)] limit: i32,
        #[graphql(desc = "Team names: their systems' deployments (the catalog's `team`).")] teams: Option<
            Vec<String>,
        >,
        #[graphql(desc = "Tags as `key:value`: deployments carrying all of them.")] tags: Option<Vec<String>>,
    ) -> Result<Chunked<DeploymentRow>> {
        let store = ctx.data::<Store>()?;
        let catalog = &*super::catalog(ctx)?;
        let (from, to) = window(from, to)?;
        let filter = grafana_filter(
            ctx,
            (systems, teams, tags),
            environments,
            statuses,
            sources,
            (from, to),
        )?;
        let limit = limit.clamp(0, MAX_ROWS) as u64;
        charge(ctx, Charge::Aggregate)?;
        charge(ctx, Charge::Rows(limit as usize))?;
        let _permit = super::budget::reserve(ctx, limit as usize).await;
        let page = store
            .deployments_page(
                &filter,
                PageRequest {
                    after: None,
                    before: None,
                    limit,
                    from_end: false,
                },
            )
            .await
            .map_err(internal)?;
        let (system_names, environment_names) = names(
            store,
            page.rows.iter().map(|r| r.system_id).collect(),
            page.rows.iter().map(|r| r.environment_id).collect(),
        )
        .await?;
        Ok(page
            .rows
            .into_iter()
            .map(|row| DeploymentRow {
                time: Instant(row.deployed_at),
                id: row.id.to_string(),
                team: system_names
                    .get(&row.system_id)
                    .and_then(|system| catalog.team_of(system))
                    .map(str::to_string),
                system: system_names.get(&row.system_id).cloned().unwrap_or_default(),
                environment: environment_names
                    .get(&row.environment_id)
                    .cloned()
                    .unwrap_or_default(),
                status: row.status,
                duration_seconds: match (row.started_at, row.finished_at) {
                    (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
                    _ => None,
                },
                raw_status: row.raw_status,
                source: row.source,
                version: row.version,
                commit_sha: row.commit_sha,
                started_at: row.started_at.map(Instant),
                finished_at: row.finished_at.map(Instant),
                actor: row.actor,
                url: row.url,
                tags: crate::store::merge::tags_of(row.tags.as_deref())
                    .into_iter()
                    .map(|(key, value)| format!("{key}:{value}"))
                    .collect::<Vec<_>>()
                    .join(","),
                note: row.note,
            })
            .collect())
    }

    /// Deployment counts per time bucket and group, long format, ascending by time, with
    /// empty buckets filled with zero for every group present. `utcOffsetMinutes` moves day
    /// and week boundaries to local midnight (weeks start on Monday).
    #[allow(clippy::too_many_arguments)]
    async fn deployment_frequency(
        &self,
        ctx: &Context<'_>,
        from: Instant,
        to: Instant,
        #[graphql(default_with = "Interval::Day")] interval: Interval,
        group_by: Option<Vec<GroupBy>>,
        systems: Option<Vec<String>>,
        environments: Option<Vec<String>>,
        statuses: Option<Vec<DeploymentStatus>>,
        sources: Option<Vec<String>>,
        #[graphql(default = 0)] utc_offset_minutes: i32,
        #[graphql(desc = "Team names: their systems' deployments (the catalog's `team`).")] teams: Option<
            Vec<String>,
        >,
        #[graphql(desc = "Tags as `key:value`: deployments carrying all of them.")] tags: Option<Vec<String>>,
    ) -> Result<Chunked<FrequencyPoint>> {
        let store = ctx.data::<Store>()?;
        let (from, to) = window(from, to)?;
        let (width, offset, first, buckets) = buckets_of(interval, utc_offset_minutes, from, to)?;
        let dimensions: Vec<Dimension> = group_by
            .unwrap_or_default()
            .into_iter()
            .map(GroupBy::dimension)
            .collect();
        let filter = grafana_filter(
            ctx,
            (systems, teams, tags),
            environments,
            statuses,
            sources,
            (from, to),
        )?;
        // Reading the counts is most of a big answer's memory (on SQLite every value of every
        // row is copied out), so the turn is taken before reading, on an estimate.
        let estimate = dimensions.iter().fold(buckets as usize, |points, dimension| {
            points * expected_groups(*dimension, &filter)
        });
        charge(ctx, Charge::Aggregate)?;
        let _permit = super::budget::reserve(ctx, estimate).await;
        let counted = store
            .count_buckets(&filter, width, offset, &dimensions)
            .await
            .map_err(internal)?;
        let (system_names, environment_names) = names(
            store,
            counted.iter().filter_map(|(b, _)| b.system_id).collect(),
            counted.iter().filter_map(|(b, _)| b.environment_id).collect(),
        )
        .await?;
        let series = fill(counted, dimensions.is_empty());
        let size = series.groups() * buckets as usize;
        if size > MAX_POINTS {
            return Err(user_error(
                "BAD_USER_INPUT",
                &format!(
                    "{size} points ({buckets} buckets x {} groups) is too many (at most {MAX_POINTS}): use a wider interval, fewer groupBy dimensions or a filter",
                    series.groups()
                ),
            ));
        }
        charge(ctx, Charge::Points(size))?;
        let points = series
            .points(first, to, width)
            .into_iter()
            .map(|(start, group, count)| FrequencyPoint {
                time: Instant(start),
                count,
                system: group.system_id.and_then(|id| system_names.get(&id).cloned()),
                environment: group
                    .environment_id
                    .and_then(|id| environment_names.get(&id).cloned()),
                status: group.status.as_deref().map(DeploymentStatus::from_stored),
                source: group.source.clone(),
            })
            .collect();
        Ok(Chunked(points))
    }

    /// Deployments as annotations (time, timeEnd, title, text, tags) to overlay any panel.
    #[allow(clippy::too_many_arguments)]
    async fn deployment_annotations(
        &self,
        ctx: &Context<'_>,
        from: Instant,
        to: Instant,
        systems: Option<Vec<String>>,
        environments: Option<Vec<String>>,
        statuses: Option<Vec<DeploymentStatus>>,
        sources: Option<Vec<String>>,
        #[graphql(default = 1000)] limit: i32,
        #[graphql(desc = "Team names: their systems' deployments (the catalog's `team`).")] teams: Option<
            Vec<String>,
        >,
        #[graphql(desc = "Tags as `key:value`: deployments carrying all of them.")] tags: Option<Vec<String>>,
    ) -> Result<Chunked<DeploymentAnnotation>> {
        let rows = self
            .deployment_list(
                ctx,
                from,
                to,
                systems,
                environments,
                statuses,
                sources,
                limit,
                teams,
                tags,
            )
            .await?;
        Ok(rows
            .0
            .into_iter()
            .map(|row| {
                let status = format!("{:?}", row.status).to_lowercase();
                let what = row
                    .version
                    .clone()
                    .or_else(|| row.commit_sha.as_ref().map(|s| s.chars().take(8).collect()));
                DeploymentAnnotation {
                    time: row.started_at.unwrap_or(row.time),
                    time_end: row.finished_at,
                    title: match &what {
                        Some(what) => format!("{} {} → {} ({status})", row.system, what, row.environment),
                        None => format!("{} → {} ({status})", row.system, row.environment),
                    },
                    text: [
                        Some(format!("{} deployment from {}", status, row.source)),
                        row.actor.as_ref().map(|a| format!("by {a}")),
                        row.commit_sha.as_ref().map(|s| format!("commit {s}")),
                        row.note.clone(),
                        row.url.clone(),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("\n"),
                    tags: ["shiplog", &row.system, &row.environment, &status, &row.source]
                        .into_iter()
                        .chain(row.team.as_deref())
                        .chain(row.tags.split(',').filter(|t| !t.is_empty()))
                        .collect::<Vec<_>>()
                        .join(","),
                }
            })
            .collect())
    }

    /// System names, for a template variable; only the given teams' systems when teams are given.
    async fn system_names(&self, ctx: &Context<'_>, teams: Option<Vec<String>>) -> Result<Vec<String>> {
        let store = ctx.data::<Store>()?;
        let teams = list(teams);
        let systems = if teams.is_empty() {
            store.systems().await
        } else {
            let catalog = &*super::catalog(ctx)?;
            store.systems_named(&catalog.systems_of_teams(&teams)).await
        };
        Ok(systems.map_err(internal)?.into_iter().map(|n| n.name).collect())
    }

    /// Environment names, for a template variable; only those the given systems deployed to.
    async fn environment_names(
        &self,
        ctx: &Context<'_>,
        systems: Option<Vec<String>>,
    ) -> Result<Vec<String>> {
        let store = ctx.data::<Store>()?;
        let systems = checked(DeploymentFilter {
            systems: list(systems),
            ..DeploymentFilter::default()
        })?
        .systems;
        if systems.is_empty() {
            return Ok(store
                .environments()
                .await
                .map_err(internal)?
                .into_iter()
                .map(|n| n.name)
                .collect());
        }
        let mut names = BTreeSet::new();
        for name in systems {
            if let Some(system) = store.system(&name).await.map_err(internal)? {
                for environment in store.environments_of_system(system.id).await.map_err(internal)? {
                    names.insert(environment.name);
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// DORA's four keys over production deployments in a window, per system (and environment
    /// or team with `groupBy: [SYSTEM, ENVIRONMENT]`, `[TEAM]`; `[]` for one row). Production
    /// means the environments listed in `[dora] production_environments` plus those whose
    /// deployments carry the production tier, unless `environments` is given. `teams` keeps
    /// their systems. See the README for each definition.
    #[allow(clippy::too_many_arguments)]
    async fn dora_metrics(
        &self,
        ctx: &Context<'_>,
        from: Instant,
        to: Instant,
        systems: Option<Vec<String>>,
        environments: Option<Vec<String>>,
        group_by: Option<Vec<DoraGroupBy>>,
        teams: Option<Vec<String>>,
    ) -> Result<Vec<DoraMetrics>> {
        let catalog = &*super::catalog(ctx)?;
        let systems = super::types::of_teams(catalog, list(systems), list(teams));
        let group_by = group_by.unwrap_or_else(|| vec![DoraGroupBy::System]);
        dora(ctx, (from, to), systems, environments, group_by).await
    }
}

/// DORA's four keys over the production deployments of `systems` (all when empty).
pub async fn dora(
    ctx: &Context<'_>,
    (from, to): (Instant, Instant),
    systems: Vec<String>,
    environments: Option<Vec<String>>,
    group_by: Vec<DoraGroupBy>,
) -> Result<Vec<DoraMetrics>> {
    let store = ctx.data::<Store>()?;
    let config = ctx.data::<DoraConfig>()?;
    let catalog = &*super::catalog(ctx)?;
    let (from, to) = window(from, to)?;
    charge(ctx, Charge::Aggregate)?;
    let mut environments = list(environments);
    if environments.is_empty() {
        environments = config.production_environments.clone();
        environments.extend(
            store
                .environments_with_tier(&config.production_tier)
                .await
                .map_err(internal)?,
        );
    }
    let by_system = group_by.contains(&DoraGroupBy::System);
    let by_environment = group_by.contains(&DoraGroupBy::Environment);
    let filter = checked(DeploymentFilter {
        systems,
        environments,
        from: Some(from),
        to: Some(to),
        ..DeploymentFilter::default()
    })?;
    let outcomes = store.finished_outcomes(&filter).await.map_err(internal)?;
    let (system_names, environment_names) = names(
        store,
        outcomes.iter().map(|o| o.system_id).collect(),
        outcomes.iter().map(|o| o.environment_id).collect(),
    )
    .await?;
    let name = |names: &HashMap<i64, String>, id: i64| names.get(&id).cloned();
    let team_of = |id: i64| {
        system_names
            .get(&id)
            .and_then(|system| catalog.team_of(system))
            .map(str::to_string)
    };
    Ok(four_keys_by_team(
        &outcomes,
        (by_system, by_environment),
        (from, to),
        (|id| name(&system_names, id), |id| name(&environment_names, id)),
        group_by
            .contains(&DoraGroupBy::Team)
            .then_some(&team_of as &dyn Fn(i64) -> Option<String>),
    ))
}
