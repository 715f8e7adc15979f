//! What runs where and what is waiting: drift between two environments of a system, and the
//! commits each deployment shipped (read from the Git host by the commits worker).

use async_graphql::{Context, Result, SimpleObject};

use super::scalars::Instant;
use super::types::{Deployment, internal, repository_of, user_error};
use crate::store::history::shipped;
use crate::store::{Named, Store};

/// What runs in one environment that another does not have yet.
#[derive(SimpleObject)]
pub struct Drift {
    pub from: String,
    pub to: String,
    /// What runs in `from`: its last successful deployment.
    pub from_deployment: Option<Deployment>,
    /// What runs in `to`.
    pub to_deployment: Option<Deployment>,
    /// Whether both run the same version (else commit).
    pub in_sync: bool,
    /// Successful deployments to `from` since it last ran what `to` runs; null when in sync
    /// or when `from` never ran it.
    pub deployments_waiting: Option<i64>,
    /// When the oldest of those went out to `from`: how long the change has waited for `to`.
    pub waiting_since: Option<Instant>,
    /// The Git host's page of the commits `from` runs and `to` does not, when both commits and
    /// the repository are known.
    pub compare_url: Option<String>,
    /// The commits `from` runs and `to` lacks, from the Git host's compare (0 when in sync;
    /// null until read, see `changesState`).
    pub ahead_by: Option<i64>,
    /// The commits `to` runs and `from` lacks (GitHub says; null on GitLab).
    pub behind_by: Option<i64>,
    /// When the oldest of the commits waiting was made: how long a change has waited for `to`.
    pub oldest_waiting_commit_at: Option<Instant>,
    /// Where reading the commits between the two stands (asking for drift queues the read).
    pub changes_state: ChangesState,
}

/// The commits waiting between two commits of a repository: the host's range through the
/// request's loader (one statement for all the ranges a query asks for), queued for the commits
/// worker when it is not known and the host has a token.
pub async fn between(
    ctx: &Context<'_>,
    repository: Option<crate::domain::catalog::Repository>,
    (base, head): (Option<&str>, Option<&str>),
) -> Result<(ChangesState, Option<entity::commit_ranges::Model>)> {
    let (Some(repository), Some(base), Some(head)) = (repository, base, head) else {
        return Ok((ChangesState::Unknown, None));
    };
    let key = (repository.key(), base.to_string(), head.to_string());
    let range = super::loaders::load(ctx, super::loaders::RangeOf(key.clone()))
        .await?
        .flatten();
    if range.is_none() {
        if !ctx.data::<crate::commits::Served>()?.serves(&repository) {
            return Ok((ChangesState::Unknown, None));
        }
        ctx.data::<Store>()?
            .queue_range((&key.0, &key.1, &key.2), crate::domain::now_millis())
            .await
            .map_err(internal)?;
        ctx.data::<crate::ingest::Ingest>()?.commits_kick().notify_one();
        return Ok((ChangesState::Pending, None));
    }
    Ok((state_of(range.as_ref()), range))
}

/// What a found range says is waiting: (ahead, behind, the oldest waiting commit's time).
pub fn waiting_in(range: Option<&entity::commit_ranges::Model>) -> (Option<i64>, Option<i64>, Option<i64>) {
    match range.filter(|r| state_of(Some(r)) == ChangesState::Found) {
        Some(range) => (
            range.total_commits,
            range.behind_by,
            crate::commits::commits_of(range)
                .iter()
                .filter_map(|c| c.committed_at)
                .min(),
        ),
        None => (None, None, None),
    }
}

/// The drift of `system` from one environment to another (four statements).
pub async fn drift(ctx: &Context<'_>, system: &Named, (from, to): (&str, &str)) -> Result<Drift> {
    let store = ctx.data::<Store>()?;
    let mut ids = Vec::with_capacity(2);
    for name in [from, to] {
        let environment = store.environment(name).await.map_err(internal)?.ok_or_else(|| {
            user_error(
                "BAD_USER_INPUT",
                &format!(
                    "there is no environment `{}` (see `environments`)",
                    name.chars().take(64).collect::<String>()
                ),
            )
        })?;
        ids.push(environment.id);
    }
    let cells = store.board_cells(&[system.id], &ids).await.map_err(internal)?;
    let current = |id: i64| {
        cells
            .iter()
            .find(|c| c.environment_id == id)
            .and_then(|c| c.current.clone())
    };
    let (ahead, behind) = (current(ids[0]), current(ids[1]));
    let in_sync = match (&ahead, &behind) {
        (Some(a), Some(b)) => shipped(a).is_some() && shipped(a) == shipped(b),
        _ => false,
    };
    let waiting = match (&ahead, behind.as_ref().and_then(shipped)) {
        (Some(a), Some(running)) if !in_sync => store.waiting(a, running).await.map_err(internal)?,
        _ => None,
    };
    let (changes_state, range) = match (&ahead, &behind) {
        (Some(a), Some(b)) if !in_sync => {
            let repository = repository_of(ctx, Some(&system.name), a)?;
            between(
                ctx,
                repository,
                (b.commit_sha.as_deref(), a.commit_sha.as_deref()),
            )
            .await?
        }
        _ => (ChangesState::Unknown, None),
    };
    let (ahead_by, behind_by, oldest) = if in_sync {
        (Some(0), Some(0), None)
    } else {
        waiting_in(range.as_ref())
    };
    let compare_url = match (&ahead, &behind) {
        (Some(a), Some(b)) if !in_sync => match (&a.commit_sha, &b.commit_sha) {
            (Some(head), Some(base)) if head != base => {
                repository_of(ctx, Some(&system.name), a)?.map(|r| r.compare_url(base, head))
            }
            _ => None,
        },
        _ => None,
    };
    Ok(Drift {
        from: from.to_string(),
        to: to.to_string(),
        from_deployment: ahead.map(Deployment::new),
        to_deployment: behind.map(Deployment::new),
        in_sync,
        deployments_waiting: waiting.map(|(count, _)| count as i64),
        waiting_since: waiting.and_then(|(_, oldest)| oldest).map(Instant),
        compare_url,
        ahead_by,
        behind_by,
        oldest_waiting_commit_at: oldest.map(Instant),
        changes_state: if in_sync {
            ChangesState::Found
        } else {
            changes_state
        },
    })
}

/// One commit a deployment shipped.
#[derive(SimpleObject)]
pub struct Change {
    pub sha: String,
    /// The message's first line.
    pub title: String,
    pub author: Option<String>,
    pub authored_at: Option<Instant>,
    pub committed_at: Option<Instant>,
    /// The commit's page on the Git host.
    pub url: Option<String>,
}

impl Change {
    fn of(commit: crate::commits::Commit) -> Self {
        Self {
            sha: commit.sha,
            title: commit.title,
            author: commit.author,
            authored_at: commit.authored_at.map(Instant),
            committed_at: commit.committed_at.map(Instant),
            url: commit.url,
        }
    }
}

/// Where reading a deployment's commits stands.
#[derive(async_graphql::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangesState {
    /// Not asked: no repository is known for the system (`[repositories]`, or the payload's), no token
    /// for its host (`[api] github_token`, `gitlab_token`), no commit, or no earlier success
    /// to compare with.
    Unknown,
    /// Waiting for the Git host (read in the background; failures are retried).
    Pending,
    /// Read.
    Found,
    /// The host has no such repository or commit (renamed, private to the token, or a base
    /// that a force push removed).
    Missing,
    /// The last read failed; it is retried with backoff.
    Failed,
}

/// A page of a deployment's commits, newest first.
#[derive(SimpleObject)]
pub struct ChangeConnection {
    pub state: ChangesState,
    /// How many commits the host counts in the range (null unless found); more than the
    /// commits listed when over 1,000.
    pub total_count: Option<i64>,
    pub nodes: Vec<Change>,
    pub page_info: ChangePageInfo,
    /// Why the host had no such range, or why the last read failed.
    pub error: Option<String>,
}

/// Whether more commits follow.
#[derive(SimpleObject)]
pub struct ChangePageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

/// A deployment's range and its read, through the request's loader (one statement per page
/// of deployments, primed by the connection).
async fn range_of(ctx: &Context<'_>, deployment_id: i64) -> Result<Option<entity::commit_ranges::Model>> {
    Ok(
        super::loaders::load(ctx, super::loaders::ChangesOf(deployment_id))
            .await?
            .flatten()
            .and_then(|(_, range)| range),
    )
}

pub fn state_of(range: Option<&entity::commit_ranges::Model>) -> ChangesState {
    use crate::store::commits::{FAILED, FOUND, MISSING, PENDING};
    match range.map(|r| r.state.as_str()) {
        Some(FOUND) => ChangesState::Found,
        Some(MISSING) => ChangesState::Missing,
        Some(FAILED) => ChangesState::Failed,
        Some(PENDING) => ChangesState::Pending,
        _ => ChangesState::Unknown,
    }
}

/// How many commits a deployment shipped, when read.
pub async fn change_count(ctx: &Context<'_>, deployment_id: i64) -> Result<Option<i64>> {
    let range = range_of(ctx, deployment_id).await?;
    Ok(range
        .filter(|r| state_of(Some(r)) == ChangesState::Found)
        .and_then(|r| r.total_commits))
}

/// Most commits in one page.
const MAX_FIRST: usize = 100;

/// A page of a deployment's commits.
pub async fn changes(
    ctx: &Context<'_>,
    deployment_id: i64,
    first: Option<i32>,
    after: Option<String>,
) -> Result<ChangeConnection> {
    let first = match first {
        None => 20,
        Some(n) if (0..=MAX_FIRST as i32).contains(&n) => n as usize,
        Some(_) => {
            return Err(user_error(
                "BAD_USER_INPUT",
                &format!("`first` is 0 to {MAX_FIRST}"),
            ));
        }
    };
    let start = match after {
        None => 0,
        Some(cursor) => cursor.parse::<usize>().map(|n| n + 1).map_err(|_| {
            user_error(
                "BAD_USER_INPUT",
                "`after` is an `endCursor` a previous page of `changes` gave",
            )
        })?,
    };
    let range = range_of(ctx, deployment_id).await?;
    let state = state_of(range.as_ref());
    let commits = range
        .as_ref()
        .filter(|_| state == ChangesState::Found)
        .map(crate::commits::commits_of)
        .unwrap_or_default();
    let end = (start + first).min(commits.len());
    let nodes: Vec<Change> = commits
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .map(Change::of)
        .collect();
    let has_next_page = range
        .as_ref()
        .and_then(|r| r.total_commits)
        .is_some_and(|total| (end as i64) < total)
        && state == ChangesState::Found
        && end > start;
    Ok(ChangeConnection {
        state,
        total_count: range
            .as_ref()
            .filter(|_| state == ChangesState::Found)
            .and_then(|r| r.total_commits),
        page_info: ChangePageInfo {
            has_next_page,
            end_cursor: (end > start).then(|| (end - 1).to_string()),
        },
        nodes,
        error: range.and_then(|r| r.error),
    })
}
