//! How one observation changes a deployment: pure rules, unit-tested here, applied by the
//! ingest writer inside its transaction.
//!
//! Events arrive out of order: a late "running" never overwrites "succeeded"; `started_at` is
//! the earliest start we saw; `finished_at` is the time of the terminal status. A time shiplog
//! stood in for (`Observation::times_estimated`) is never taken for a start or a finish.

use std::collections::BTreeMap;

use entity::deployments;
use sea_orm::ActiveValue::NotSet;

use crate::domain::{DeploymentStatus, Observation};

/// The row for a deployment seen for the first time.
pub fn new_deployment(
    source: &str,
    observation: &Observation,
    system_id: i64,
    environment_id: i64,
    received_at: i64,
) -> deployments::Model {
    let status = observation.status;
    let reported = reported(observation);
    let started_at = observation
        .started_at
        .or(reported.filter(|_| status == DeploymentStatus::Running));
    let finished_at = status
        .is_terminal()
        .then(|| observation.finished_at.or(reported))
        .flatten();
    let started_at = match (started_at, finished_at) {
        (Some(start), Some(finish)) => Some(start.min(finish)),
        (start, _) => start,
    };
    deployments::Model {
        id: 0,
        source: source.to_string(),
        external_id: observation.external_id.clone(),
        system_id,
        environment_id,
        status,
        raw_status: observation.raw_status.clone(),
        raw_system: observation.system.clone(),
        raw_environment: observation.environment.clone(),
        environment_tier: observation.environment_tier.clone(),
        tenant: observation.tenant.clone(),
        committed_at: observation.committed_at,
        status_at: observation.occurred_at,
        started_at,
        finished_at,
        deployed_at: finished_at.or(started_at).unwrap_or(received_at),
        commit_sha: observation.commit_sha.clone(),
        git_ref: observation.git_ref.clone(),
        version: observation.version.clone(),
        url: observation.url.clone(),
        actor: observation.actor.clone(),
        first_seen_at: received_at,
        updated_at: received_at,
        discovered_by: entity::Discovery::Webhook,
        tags: tags_json(&observed_tags(observation)),
        note: observation.note.clone(),
        failed_change: None,
        failed_change_reason: None,
        environment_url: observation.environment_url.clone(),
        corrected_status: None,
        corrected_system: None,
        corrected_environment: None,
        correction_reason: None,
        deleted_at: None,
        deletion_reason: None,
    }
}

/// The tags an observation gives: the tool's own, and its tenant and environment tier.
fn observed_tags(observation: &Observation) -> BTreeMap<String, String> {
    let mut tags = observation.tags.clone();
    for (key, value) in [
        ("tenant", &observation.tenant),
        ("tier", &observation.environment_tier),
    ] {
        if let Some(value) = value {
            tags.entry(key.to_string()).or_insert_with(|| value.clone());
        }
    }
    tags
}

/// A deployment's stored tags, read back (none when the column is null or not an object).
pub fn tags_of(stored: Option<&str>) -> BTreeMap<String, String> {
    stored
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// Tags as stored: a JSON object with sorted keys (a `BTreeMap`), null for none. The store's
/// tag filter matches `"key":"value"` in this exact form.
pub fn tags_json(tags: &BTreeMap<String, String>) -> Option<String> {
    (!tags.is_empty())
        .then(|| serde_json::to_string(tags).ok())
        .flatten()
}

/// When the observation's status happened, if the tool said (not a stand-in).
fn reported(observation: &Observation) -> Option<i64> {
    (!observation.times_estimated).then_some(observation.occurred_at)
}

/// Whether an observation is news about the status: it is at least as far along and not older.
pub fn supersedes(current: &deployments::Model, observation: &Observation) -> bool {
    let current_status = current.status;
    let (new, old) = (observation.status.progress(), current_status.progress());
    new > old || (new == old && observation.occurred_at >= current.status_at)
}

/// The deployment after an observation. Descriptive fields (sha, ref, version, url, actor,
/// system, environment) follow the newest observation that has them; older observations only
/// fill gaps.
pub fn merge(
    current: &deployments::Model,
    observation: &Observation,
    system_id: i64,
    environment_id: i64,
    received_at: i64,
) -> deployments::Model {
    let mut next = current.clone();
    let newest = supersedes(current, observation);
    let start_seen = observation
        .started_at
        .or(reported(observation).filter(|_| observation.status == DeploymentStatus::Running));
    next.started_at = match (current.started_at, start_seen) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let same_end = observation.status.is_terminal() && observation.status == current.status;
    if same_end {
        // The same ending reported again (Jenkins COMPLETED then FINALIZED, a GitLab job and
        // its deployment): the deployment ended at the earliest report of it.
        if let Some(reported) = observation.finished_at.or(reported(observation)) {
            next.finished_at = Some(current.finished_at.map_or(reported, |f| f.min(reported)));
        }
    }
    if newest && !same_end {
        next.status = observation.status;
        next.finished_at = observation
            .status
            .is_terminal()
            .then(|| observation.finished_at.or(reported(observation)))
            .flatten();
    }
    if newest {
        next.raw_status = observation.raw_status.clone();
        next.status_at = observation.occurred_at;
        next.system_id = system_id;
        next.environment_id = environment_id;
        next.raw_system = observation.system.clone();
        next.raw_environment = observation.environment.clone();
    }
    let pick = |current: &Option<String>, seen: &Option<String>| -> Option<String> {
        if newest {
            seen.clone().or_else(|| current.clone())
        } else {
            current.clone().or_else(|| seen.clone())
        }
    };
    next.commit_sha = pick(&current.commit_sha, &observation.commit_sha);
    next.git_ref = pick(&current.git_ref, &observation.git_ref);
    next.version = pick(&current.version, &observation.version);
    next.url = pick(&current.url, &observation.url);
    next.actor = pick(&current.actor, &observation.actor);
    next.environment_tier = pick(&current.environment_tier, &observation.environment_tier);
    next.tenant = pick(&current.tenant, &observation.tenant);
    // A note stays once set: a tool re-sends its own on every status (Buildkite's message),
    // and people's (`annotateDeployment`) must not be replaced by it.
    next.note = current.note.clone().or_else(|| observation.note.clone());
    next.environment_url = pick(&current.environment_url, &observation.environment_url);
    // Tags add up: an observation adds the keys the deployment lacks and never changes one it
    // has (people's `annotateDeployment` values stay), up to the limit.
    let mut tags = tags_of(current.tags.as_deref());
    for (key, value) in observed_tags(observation) {
        if tags.len() >= crate::domain::tags::MAX_TAGS {
            break;
        }
        tags.entry(key).or_insert(value);
    }
    next.tags = tags_json(&tags);
    next.committed_at = if newest {
        observation.committed_at.or(current.committed_at)
    } else {
        current.committed_at.or(observation.committed_at)
    };
    if let (Some(start), Some(finish)) = (next.started_at, next.finished_at) {
        next.started_at = Some(start.min(finish));
    }
    next.deployed_at = next.finished_at.or(next.started_at).unwrap_or(next.first_seen_at);
    next.updated_at = received_at.max(current.updated_at);
    // What people corrected stays: the tool's later words are kept beside it (raw status and
    // names), not in its place.
    if let Some(status) = current.corrected_status {
        next.status = status;
    }
    if current.corrected_system.is_some() {
        next.system_id = current.system_id;
    }
    if current.corrected_environment.is_some() {
        next.environment_id = current.environment_id;
    }
    next
}

/// The row as an insert or an upsert writes it (the id left to the database).
pub(super) fn active(model: &deployments::Model) -> deployments::ActiveModel {
    use sea_orm::IntoActiveModel;
    let mut row = model.clone().into_active_model();
    row.id = NotSet;
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(status: DeploymentStatus, occurred_at: i64) -> Observation {
        Observation::bare("1", status, occurred_at)
    }

    #[test]
    fn a_late_running_never_overwrites_succeeded() {
        let done = new_deployment(
            "generic",
            &observation(DeploymentStatus::Succeeded, 300),
            1,
            1,
            400,
        );
        let merged = merge(&done, &observation(DeploymentStatus::Running, 100), 1, 1, 500);
        assert_eq!(merged.status, DeploymentStatus::Succeeded);
        assert_eq!(merged.started_at, Some(100));
        assert_eq!(merged.finished_at, Some(300));
        assert_eq!(merged.deployed_at, 300);
    }

    #[test]
    fn the_earliest_start_and_the_terminal_time_win() {
        let mut running = observation(DeploymentStatus::Running, 200);
        running.started_at = Some(150);
        let first = new_deployment("generic", &running, 1, 1, 210);
        let mut queued_late = observation(DeploymentStatus::Queued, 100);
        queued_late.started_at = Some(120);
        let second = merge(&first, &queued_late, 1, 1, 220);
        assert_eq!(second.status, DeploymentStatus::Running);
        assert_eq!(second.started_at, Some(120));
        let mut failed = observation(DeploymentStatus::Failed, 400);
        failed.commit_sha = Some("abc1".into());
        let third = merge(&second, &failed, 1, 1, 410);
        assert_eq!(third.status, DeploymentStatus::Failed);
        assert_eq!(third.finished_at, Some(400));
        assert_eq!(third.commit_sha.as_deref(), Some("abc1"));
        assert_eq!(third.first_seen_at, 210);
    }

    #[test]
    fn a_stand_in_time_is_never_a_start_or_a_finish() {
        // A GitLab job skipped before it ran: only its creation time, standing in.
        let mut skipped = observation(DeploymentStatus::Cancelled, 100);
        skipped.times_estimated = true;
        let row = new_deployment("gitlab", &skipped, 1, 1, 500);
        assert_eq!((row.started_at, row.finished_at), (None, None));
        assert_eq!(row.deployed_at, 500, "first seen, not an invented finish");
        let mut running = observation(DeploymentStatus::Running, 50);
        running.times_estimated = true;
        let row = new_deployment("generic", &running, 1, 1, 50);
        assert_eq!(row.started_at, None);
        let mut done = observation(DeploymentStatus::Succeeded, 900);
        done.times_estimated = true;
        let merged = merge(&row, &done, 1, 1, 900);
        assert_eq!(merged.finished_at, None);
        // A time the tool did report still counts.
        let reported = merge(&merged, &observation(DeploymentStatus::Succeeded, 800), 1, 1, 950);
        assert_eq!(reported.finished_at, Some(800));
    }

    #[test]
    fn the_same_ending_reported_twice_keeps_the_first_finish() {
        let completed = new_deployment(
            "jenkins",
            &observation(DeploymentStatus::Succeeded, 300),
            1,
            1,
            300,
        );
        let finalized = merge(
            &completed,
            &observation(DeploymentStatus::Succeeded, 310),
            1,
            1,
            320,
        );
        assert_eq!(finalized.finished_at, Some(300));
        let late_first = new_deployment(
            "jenkins",
            &observation(DeploymentStatus::Succeeded, 310),
            1,
            1,
            320,
        );
        let merged = merge(
            &late_first,
            &observation(DeploymentStatus::Succeeded, 300),
            1,
            1,
            330,
        );
        assert_eq!(merged.finished_at, Some(300));
    }

    #[test]
    fn older_observations_only_fill_gaps() {
        let mut done = observation(DeploymentStatus::Succeeded, 300);
        done.version = Some("2".into());
        let current = new_deployment("generic", &done, 1, 1, 300);
        let mut old = observation(DeploymentStatus::Running, 100);
        old.version = Some("1".into());
        old.actor = Some("ada".into());
        let merged = merge(&current, &old, 9, 9, 310);
        assert_eq!(merged.version.as_deref(), Some("2"));
        assert_eq!(merged.actor.as_deref(), Some("ada"));
        assert_eq!(
            merged.system_id, 1,
            "an older observation does not move the deployment"
        );
    }
}
