//! What runs where and what is waiting: drift between two environments of a system.

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
    })
}
