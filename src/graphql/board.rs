//! `Query.board`: what runs where. One row per system, one cell per environment, columns
//! ordered by tier. Reads the cells the ingest transaction keeps: four statements, however
//! many deployments there are.

use std::collections::{BTreeMap, HashMap};

use async_graphql::{Context, ID, Object, Result, SimpleObject};

use super::budget::{Charge, charge};
use super::types::{Deployment, Environment, System, checked, internal};
use crate::store::board::Cell;
use crate::store::{Named, Store};

/// The `[board]` table of the TOML file.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardConfig {
    /// Environment names or tiers, left to right; others follow, alphabetically.
    pub environment_order: Vec<String>,
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self {
            environment_order: [
                "review",
                "development",
                "test",
                "qa",
                "staging",
                "preprod",
                "production",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// One system's environments.
#[derive(SimpleObject)]
pub struct BoardRow {
    /// The board's id and the system's: a row's cells follow the board's columns, so the same
    /// system on a board with other filters is another row.
    pub id: ID,
    pub system: System,
    /// One per column of `Board.environments`, in the same order.
    pub cells: Vec<BoardCell>,
    /// This system's cells in ephemeral environments (`Board.ephemeralEnvironments`), newest
    /// first: the board's collapsible column.
    pub ephemeral_cells: Vec<BoardCell>,
}

/// One system in one environment.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct BoardCell {
    /// `cell:<system id>:<environment id>`: the same on every board.
    pub id: ID,
    pub environment: Environment,
    /// What runs there: the last deployment that succeeded.
    pub current: Option<Deployment>,
    /// A deployment queued or running there now.
    pub in_progress: Option<Deployment>,
    /// The last failure, when it came after the current deployment.
    pub last_failure: Option<Deployment>,
    /// The newest deployment here whatever its status: a cell whose deployments were all
    /// cancelled (or have an unknown status) has only this.
    pub latest: Option<Deployment>,
    #[graphql(skip)]
    pub waiting_for: Option<WaitingFor>,
}

/// What a cell runs that the next column does not (a repository and the two commits).
#[derive(Clone, Debug)]
pub struct WaitingFor {
    repository: crate::domain::catalog::Repository,
    /// What the next column runs.
    base: String,
    /// What this cell runs.
    head: String,
    next: String,
}

/// Commits a cell runs that the next environment to its right does not have yet ("3 commits
/// waiting for production, oldest 2 days").
#[derive(SimpleObject)]
pub struct Waiting {
    /// The next environment.
    pub environment: String,
    /// How many commits wait (null until the Git host was read).
    pub commits: Option<i64>,
    /// When the oldest of them was made.
    pub oldest_commit_at: Option<super::scalars::Instant>,
    pub state: super::changes::ChangesState,
    /// The Git host's page of those commits.
    pub compare_url: String,
}

#[async_graphql::ComplexObject]
impl BoardCell {
    /// What this cell runs that the next column to its right does not, when both run a known
    /// commit of a repository the catalog (or the payload) names and they differ. Read from the
    /// Git host in the background: the board asks for all its cells' ranges in one statement.
    async fn waiting(&self, ctx: &Context<'_>) -> Result<Option<Waiting>> {
        let Some(waiting) = &self.waiting_for else {
            return Ok(None);
        };
        let (state, range) = super::changes::between(
            ctx,
            Some(waiting.repository.clone()),
            (Some(&waiting.base), Some(&waiting.head)),
        )
        .await?;
        let (commits, _, oldest) = super::changes::waiting_in(range.as_ref());
        Ok(Some(Waiting {
            environment: waiting.next.clone(),
            commits,
            oldest_commit_at: oldest.map(super::scalars::Instant),
            state,
            compare_url: waiting.repository.compare_url(&waiting.base, &waiting.head),
        }))
    }
}

/// The board.
#[derive(SimpleObject)]
pub struct Board {
    /// `board`, or `board:` and its filters: the same for the same arguments, so that clients
    /// that cache by id (Apollo Client, urql) merge two views of one board.
    pub id: ID,
    /// The columns, ordered by tier (ephemeral environments are not columns).
    pub environments: Vec<Environment>,
    /// Ephemeral environments (`[environments] ephemeral`: review apps, previews), newest
    /// deployment first: one collapsible column, each row's in `BoardRow.ephemeralCells`.
    pub ephemeral_environments: Vec<Environment>,
    pub rows: Vec<BoardRow>,
}

/// What an environment's cells say about it: its tier and URL from its newest deployment that
/// gives them, and when anything was last deployed to it.
#[derive(Clone, Debug, Default)]
pub struct EnvironmentFacts {
    pub tier: Option<String>,
    pub url: Option<String>,
    pub last_deployed_at: Option<i64>,
    /// When its tool last said it stopped it.
    pub stopped_at: Option<i64>,
}

impl EnvironmentFacts {
    /// Facts per environment id from cells.
    pub fn of(cells: &[Cell]) -> HashMap<i64, EnvironmentFacts> {
        let mut newest: HashMap<i64, Vec<&entity::deployments::Model>> = HashMap::new();
        for cell in cells {
            newest.entry(cell.environment_id).or_default().extend(
                [&cell.current, &cell.in_progress, &cell.last_failure, &cell.latest]
                    .into_iter()
                    .flatten(),
            );
        }
        newest
            .into_iter()
            .map(|(id, mut deployments)| {
                deployments.sort_by_key(|d| std::cmp::Reverse((d.deployed_at, d.id)));
                let facts = EnvironmentFacts {
                    tier: deployments.iter().find_map(|d| d.environment_tier.clone()),
                    url: deployments.iter().find_map(|d| d.environment_url.clone()),
                    last_deployed_at: deployments.first().map(|d| d.deployed_at),
                    stopped_at: None,
                };
                (id, facts)
            })
            .collect()
    }
}

fn rank(order: &[String], name: &str, tier: Option<&str>) -> usize {
    let position = |key: &str| order.iter().position(|o| o.eq_ignore_ascii_case(key));
    position(name)
        .or_else(|| tier.and_then(position))
        .unwrap_or(order.len())
}

/// The board root field, merged into `Query`.
#[derive(Default)]
pub struct BoardQuery;

#[Object]
impl BoardQuery {
    /// What runs where: per system and environment, the current deployment (the last that
    /// succeeded), the one in progress, and the last failure if it came after the current one.
    async fn board(
        &self,
        ctx: &Context<'_>,
        systems: Option<Vec<String>>,
        environments: Option<Vec<String>>,
        #[graphql(desc = "Team names: only their systems (the catalog's `team`).")] teams: Option<
            Vec<String>,
        >,
        #[graphql(
            default,
            desc = "Also environments nothing was deployed to for longer than `[environments]` allows."
        )]
        include_stopped: bool,
    ) -> Result<Board> {
        let store = ctx.data::<Store>()?;
        let config = ctx.data::<BoardConfig>()?;
        let catalog = &*super::catalog(ctx)?;
        let systems = match teams.filter(|t| !t.is_empty()) {
            Some(teams) => Some(super::types::of_teams(
                catalog,
                systems.unwrap_or_default(),
                teams,
            )),
            None => systems,
        };
        checked(crate::store::DeploymentFilter {
            systems: systems.clone().unwrap_or_default(),
            environments: environments.clone().unwrap_or_default(),
            ..Default::default()
        })?;
        let wanted = |names: &Option<Vec<String>>, row: &Named| {
            names
                .as_ref()
                .is_none_or(|n| n.is_empty() || n.iter().any(|x| x == &row.name || x == "*"))
        };
        let all_systems: Vec<Named> = store
            .systems()
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|s| wanted(&systems, s))
            .collect();
        let (all_environments, stopped_at): (Vec<Named>, HashMap<i64, i64>) = {
            let mut stopped_at = HashMap::new();
            let shown = store
                .environments_with_stops()
                .await
                .map_err(internal)?
                .into_iter()
                .filter(|(e, _)| wanted(&environments, e))
                .map(|(e, stopped)| {
                    if let Some(stopped) = stopped {
                        stopped_at.insert(e.id, stopped);
                    }
                    e
                })
                .collect();
            (shown, stopped_at)
        };
        let system_ids: Vec<i64> = all_systems.iter().map(|s| s.id).collect();
        let environment_ids: Vec<i64> = all_environments.iter().map(|e| e.id).collect();
        charge(ctx, Charge::Aggregate)?;
        charge(ctx, Charge::Rows(system_ids.len() * environment_ids.len()))?;
        let cells = if system_ids.is_empty() || environment_ids.is_empty() {
            Vec::new()
        } else {
            store
                .board_cells(&system_ids, &environment_ids)
                .await
                .map_err(internal)?
        };
        let lifecycle = ctx.data::<crate::domain::lifecycle::EnvironmentsConfig>()?;
        let (cells, ephemeral) = visible(
            cells,
            &all_environments,
            (lifecycle, &stopped_at),
            include_stopped,
        );
        let (ephemeral_cells, cells): (Vec<Cell>, Vec<Cell>) = cells
            .into_iter()
            .partition(|c| ephemeral.iter().any(|e| e.id == c.environment_id));
        let columns = columns(&cells, &all_environments, &config.environment_order);
        let mut id = board_id(systems.as_deref(), environments.as_deref());
        if include_stopped {
            id.push_str(";stopped");
        }
        let rows = rows(
            &id,
            (cells, ephemeral_cells),
            (&columns, &ephemeral),
            (&all_systems, &all_environments),
            &*super::catalog(ctx)?,
        );
        Ok(Board {
            id: ID(id),
            environments: columns.into_iter().map(|e| Environment(e.clone())).collect(),
            ephemeral_environments: ephemeral.into_iter().map(|e| Environment(e.clone())).collect(),
            rows,
        })
    }
}

/// The cells of environments still in use (all with `include_stopped`), and the ephemeral
/// environments among them, newest deployment first.
fn visible<'a>(
    cells: Vec<Cell>,
    environments: &'a [Named],
    (lifecycle, stopped_at): (&crate::domain::lifecycle::EnvironmentsConfig, &HashMap<i64, i64>),
    include_stopped: bool,
) -> (Vec<Cell>, Vec<&'a Named>) {
    let facts = EnvironmentFacts::of(&cells);
    let now = crate::domain::now_millis();
    let last = |id: i64| facts.get(&id).and_then(|f| f.last_deployed_at);
    let shown: Vec<&Named> = environments
        .iter()
        .filter(|e| {
            include_stopped || !lifecycle.is_stopped(&e.name, last(e.id), stopped_at.get(&e.id).copied(), now)
        })
        .collect();
    let cells: Vec<Cell> = cells
        .into_iter()
        .filter(|c| shown.iter().any(|e| e.id == c.environment_id))
        .collect();
    let mut ephemeral: Vec<&Named> = shown
        .into_iter()
        .filter(|e| lifecycle.is_ephemeral(&e.name) && cells.iter().any(|c| c.environment_id == e.id))
        .collect();
    ephemeral.sort_by_key(|e| (std::cmp::Reverse(last(e.id)), e.name.clone()));
    (cells, ephemeral)
}

/// The columns: environments that have a cell, ordered by configured name or tool tier.
fn columns<'a>(cells: &[Cell], environments: &'a [Named], order: &[String]) -> Vec<&'a Named> {
    let mut tiers: HashMap<i64, String> = HashMap::new();
    for cell in cells {
        for deployment in [&cell.current, &cell.in_progress, &cell.last_failure, &cell.latest]
            .into_iter()
            .flatten()
        {
            if let Some(tier) = &deployment.environment_tier {
                tiers.entry(cell.environment_id).or_insert_with(|| tier.clone());
            }
        }
    }
    let mut columns: Vec<&Named> = environments
        .iter()
        .filter(|e| cells.iter().any(|c| c.environment_id == e.id))
        .collect();
    columns.sort_by_key(|e| {
        (
            rank(order, &e.name, tiers.get(&e.id).map(String::as_str)),
            e.name.clone(),
        )
    });
    columns
}

/// A board's id from its arguments (sorted, each name once, so that the same board has one id).
fn board_id(systems: Option<&[String]>, environments: Option<&[String]>) -> String {
    let list = |names: Option<&[String]>| {
        let names: std::collections::BTreeSet<&str> =
            names.unwrap_or_default().iter().map(String::as_str).collect();
        names.into_iter().collect::<Vec<_>>().join(",")
    };
    match (list(systems), list(environments)) {
        (systems, environments) if systems.is_empty() && environments.is_empty() => "board".into(),
        (systems, environments) => format!("board:systems={systems};environments={environments}"),
    }
}

/// One row per system that has a cell, by name, with a cell per column.
fn rows(
    board: &str,
    (cells, ephemeral_cells): (Vec<Cell>, Vec<Cell>),
    (columns, ephemeral): (&[&Named], &[&Named]),
    (systems, environments): (&[Named], &[Named]),
    catalog: &crate::domain::Catalog,
) -> Vec<BoardRow> {
    let systems_by_id: HashMap<i64, &Named> = systems.iter().map(|s| (s.id, s)).collect();
    let environments_by_id: HashMap<i64, &Named> = environments.iter().map(|e| (e.id, e)).collect();
    let mut by_system: BTreeMap<String, (Named, HashMap<i64, Cell>)> = BTreeMap::new();
    for cell in cells.into_iter().chain(ephemeral_cells) {
        let Some(system) = systems_by_id.get(&cell.system_id) else {
            continue;
        };
        by_system
            .entry(system.name.clone())
            .or_insert_with(|| ((*system).clone(), HashMap::new()))
            .1
            .insert(cell.environment_id, cell);
    }
    let deployment = |row: Option<entity::deployments::Model>, system: &Named| {
        row.map(|row| {
            let environment = environments_by_id.get(&row.environment_id).map(|e| (*e).clone());
            Deployment::with_names(row, Some(system.clone()), environment)
        })
    };
    // What a cell runs that the cell to its right (the next column) does not.
    let waiting_for =
        |system: &Named, current: Option<&entity::deployments::Model>, next: Option<(&Named, &Cell)>| {
            let current = current?;
            let (next_environment, next_cell) = next?;
            let next_current = next_cell.current.as_ref()?;
            let (head, base) = (current.commit_sha.clone()?, next_current.commit_sha.clone()?);
            (head != base).then_some(())?;
            Some(WaitingFor {
                repository: catalog.repository_for(&system.name, current)?,
                base,
                head,
                next: next_environment.name.clone(),
            })
        };
    let board_cell =
        |system: &Named, environment: &Named, cell: Option<Cell>, waiting_for: Option<WaitingFor>| {
            let (current, in_progress, last_failure, latest) = match cell {
                Some(c) => (c.current, c.in_progress, c.last_failure, c.latest),
                None => (None, None, None, None),
            };
            BoardCell {
                waiting_for,
                id: ID(format!("cell:{}:{}", system.id, environment.id)),
                environment: Environment(environment.clone()),
                current: deployment(current, system),
                in_progress: deployment(in_progress, system),
                last_failure: deployment(last_failure, system),
                latest: deployment(latest, system),
            }
        };
    by_system
        .into_values()
        .map(|(system, mut cells)| BoardRow {
            id: ID(format!("{board}/row:{}", system.id)),
            cells: columns
                .iter()
                .enumerate()
                .map(|(i, environment)| {
                    let next = columns
                        .get(i + 1)
                        .and_then(|n| cells.get(&n.id).map(|cell| (*n, cell)));
                    let waiting = waiting_for(
                        &system,
                        cells.get(&environment.id).and_then(|c| c.current.as_ref()),
                        next,
                    );
                    (environment, waiting)
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(environment, waiting)| {
                    board_cell(&system, environment, cells.remove(&environment.id), waiting)
                })
                .collect(),
            ephemeral_cells: ephemeral
                .iter()
                .filter_map(|environment| {
                    let cell = cells.remove(&environment.id)?;
                    Some(board_cell(&system, environment, Some(cell), None))
                })
                .collect(),
            system: System(system),
        })
        .collect()
}
