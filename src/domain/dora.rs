//! DORA's four keys, as dora.dev defines them, from the production deployments that finished
//! in a window (oldest first): deployment frequency, change failure rate, failed deployment
//! recovery time and lead time for changes. Pure: the store reads the outcomes, GraphQL shows
//! the keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{DAY_MS, DeploymentStatus};

/// One production deployment that finished, in the order they finished.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub system_id: i64,
    pub environment_id: i64,
    pub status: DeploymentStatus,
    pub deployed_at: i64,
    pub committed_at: Option<i64>,
    /// People's mark (`markFailedChange`): true for a success that broke production, false for
    /// a failure that did not count as a failed change; None when unmarked.
    pub failed_change: Option<bool>,
    /// What it put in place: its version, else `commit:` and its sha.
    pub shipped: Option<String>,
    /// Whether the tool called it a rollback (its `rollback` tag).
    pub said_rollback: bool,
    /// When each commit it shipped was made, where the Git host was read (per-commit lead
    /// time); empty otherwise, and `committed_at` stands in.
    pub commit_times: Vec<i64>,
}

impl Outcome {
    /// Whether it counts as a failed change: a failed deployment, unless people said it was
    /// not one, or a success people marked as one.
    fn failed_change(&self) -> bool {
        self.failed_change
            .unwrap_or(self.status == DeploymentStatus::Failed)
    }
}

/// DORA's four keys for one system (and environment) over a window.
#[derive(Clone, Debug, Default, PartialEq, async_graphql::SimpleObject)]
pub struct DoraMetrics {
    /// The team, when grouped by team (null there for systems no team owns).
    pub team: Option<String>,
    pub system: Option<String>,
    pub environment: Option<String>,
    /// Production deployments that finished (succeeded or failed) in the window.
    pub deployments: i64,
    /// Distinct UTC days with at least one successful production deployment.
    pub deployment_days: i64,
    /// Successful production deployments per day of the window.
    pub deployments_per_day: f64,
    pub succeeded_deployments: i64,
    pub failed_deployments: i64,
    /// Successful deployments people marked as failed changes (`markFailedChange`).
    pub marked_failed_changes: i64,
    /// Failed deployments people marked as not failed changes.
    pub unmarked_failures: i64,
    /// Successful deployments that rolled back the one before them (the tool said so, or they
    /// put back what an earlier success in the window shipped).
    pub rollbacks: i64,
    /// Successful deployments a rollback undid, not otherwise counted as failed changes.
    pub rolled_back_changes: i64,
    /// The failed changes the rate counts: failed deployments less those unmarked, plus the
    /// successes marked, plus the successes a rollback undid.
    pub failed_changes: i64,
    /// failedChanges ÷ (succeeded + failed); null without finished deployments.
    pub change_failure_rate: Option<f64>,
    /// Failures followed by a success of the same system in the same environment.
    pub recoveries: i64,
    /// Mean time from a failed deployment to the next successful one (seconds).
    pub mean_time_to_recovery_seconds: Option<f64>,
    pub median_time_to_recovery_seconds: Option<f64>,
    /// Median commit-to-production time: per commit a successful deployment shipped where the
    /// Git host was read (`Deployment.changes`), else per deployment from its `committedAt`.
    pub median_lead_time_seconds: Option<f64>,
    /// How many commit times the median is over (commits, and deployments without them).
    pub lead_time_sample_size: i64,
}

#[derive(Default)]
struct Group {
    succeeded: i64,
    failed: i64,
    marked: i64,
    unmarked: i64,
    rollbacks: i64,
    rolled_back: i64,
    days: BTreeSet<i64>,
    recoveries: Vec<f64>,
    lead_times: Vec<f64>,
}

/// The keys per group over the window `(from, to)`: grouped by system and/or environment as
/// `by` asks, each group named by `system` and `environment` (ids to names). A failure's
/// recovery is the next success of the same system in the same environment (consecutive
/// failures count from the first).
pub fn four_keys(
    outcomes: &[Outcome],
    (by_system, by_environment): (bool, bool),
    (from, to): (i64, i64),
    system: impl Fn(i64) -> Option<String>,
    environment: impl Fn(i64) -> Option<String>,
) -> Vec<DoraMetrics> {
    four_keys_by_team(
        outcomes,
        (by_system, by_environment),
        (from, to),
        (system, environment),
        None,
    )
}

/// [`four_keys`], also grouped by team when `team_of` (a system id's team) is given.
pub fn four_keys_by_team(
    outcomes: &[Outcome],
    (by_system, by_environment): (bool, bool),
    (from, to): (i64, i64),
    (system, environment): (impl Fn(i64) -> Option<String>, impl Fn(i64) -> Option<String>),
    team_of: Option<&dyn Fn(i64) -> Option<String>>,
) -> Vec<DoraMetrics> {
    type Key = (Option<String>, Option<i64>, Option<i64>);
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    // The open failure of each system in each environment.
    let mut open_failures: HashMap<(i64, i64), i64> = HashMap::new();
    let mut history: HashMap<(i64, i64), Shipped> = HashMap::new();
    for outcome in outcomes {
        let key = (
            team_of.and_then(|team_of| team_of(outcome.system_id)),
            by_system.then_some(outcome.system_id),
            by_environment.then_some(outcome.environment_id),
        );
        let group = groups.entry(key).or_default();
        let stream = (outcome.system_id, outcome.environment_id);
        let failed_change = outcome.failed_change();
        if outcome.status == DeploymentStatus::Failed {
            group.failed += 1;
            if failed_change {
                open_failures.entry(stream).or_insert(outcome.deployed_at);
            } else {
                group.unmarked += 1;
            }
            continue;
        }
        group.succeeded += 1;
        group.days.insert(outcome.deployed_at.div_euclid(DAY_MS));
        let shipped = history.entry(stream).or_default();
        if let Some(undone) = shipped.rolled_back_by(outcome) {
            group.rollbacks += 1;
            // Counted already when people marked it failed; not one when they said so.
            if undone.mark.is_none() {
                // What it undid was a failed change; this rollback is its recovery.
                group.rolled_back += 1;
                open_failures.entry(stream).or_insert(undone.at);
            }
        }
        shipped.push(outcome);
        if let Some(failed_at) = open_failures.remove(&stream) {
            group.recoveries.push(seconds(outcome.deployed_at - failed_at));
        }
        if failed_change {
            // A success that broke production: the next success recovers from it.
            group.marked += 1;
            open_failures.entry(stream).or_insert(outcome.deployed_at);
        }
        if outcome.commit_times.is_empty() {
            if let Some(committed) = outcome.committed_at.filter(|c| *c <= outcome.deployed_at) {
                group.lead_times.push(seconds(outcome.deployed_at - committed));
            }
        } else {
            // DORA's definition: from each commit to the production deployment that shipped it.
            for committed in outcome.commit_times.iter().filter(|c| **c <= outcome.deployed_at) {
                group.lead_times.push(seconds(outcome.deployed_at - committed));
            }
        }
    }
    // A window shorter than an hour counts as an hour, so a rate stays finite.
    let days = ((to - from) as f64 / DAY_MS as f64).max(1.0 / 24.0);
    groups
        .into_iter()
        .map(|((team, system_id, environment_id), mut group)| {
            let finished = group.succeeded + group.failed;
            let failed_changes = group.failed - group.unmarked + group.marked + group.rolled_back;
            DoraMetrics {
                team,
                system: system_id.and_then(&system),
                environment: environment_id.and_then(&environment),
                deployments: finished,
                deployment_days: group.days.len() as i64,
                deployments_per_day: group.succeeded as f64 / days,
                succeeded_deployments: group.succeeded,
                failed_deployments: group.failed,
                marked_failed_changes: group.marked,
                unmarked_failures: group.unmarked,
                rollbacks: group.rollbacks,
                rolled_back_changes: group.rolled_back,
                failed_changes,
                change_failure_rate: (finished > 0).then(|| failed_changes as f64 / finished as f64),
                recoveries: group.recoveries.len() as i64,
                mean_time_to_recovery_seconds: mean(&group.recoveries),
                median_time_to_recovery_seconds: median(&mut group.recoveries),
                lead_time_sample_size: group.lead_times.len() as i64,
                median_lead_time_seconds: median(&mut group.lead_times),
            }
        })
        .collect()
}

/// The successes of one system in one environment so far: the last, and what the earlier
/// ones shipped.
#[derive(Default)]
struct Shipped {
    last: Option<Last>,
    before: std::collections::HashSet<String>,
}

#[derive(Clone)]
struct Last {
    shipped: Option<String>,
    at: i64,
    /// People's mark on it, if any.
    mark: Option<bool>,
}

impl Shipped {
    /// The success `outcome` rolls back, if it is a rollback: the tool said so, or it ships
    /// what a success before the last one shipped (the same as the last is a redeploy).
    fn rolled_back_by(&self, outcome: &Outcome) -> Option<Last> {
        let last = self.last.as_ref()?;
        let put_back = outcome
            .shipped
            .as_ref()
            .is_some_and(|s| last.shipped.as_ref() != Some(s) && self.before.contains(s));
        (outcome.said_rollback || put_back).then(|| last.clone())
    }

    fn push(&mut self, outcome: &Outcome) {
        if let Some(shipped) = self.last.take().and_then(|last| last.shipped) {
            self.before.insert(shipped);
        }
        self.last = Some(Last {
            shipped: outcome.shipped.clone(),
            at: outcome.deployed_at,
            mark: outcome.failed_change,
        });
    }
}

fn seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(system: i64, status: DeploymentStatus, at: i64, committed: Option<i64>) -> Outcome {
        Outcome {
            system_id: system,
            environment_id: 1,
            status,
            deployed_at: at,
            committed_at: committed,
            failed_change: None,
            shipped: None,
            said_rollback: false,
            commit_times: Vec::new(),
        }
    }

    #[test]
    fn failures_recover_at_the_next_success_of_the_same_system() {
        use DeploymentStatus::{Failed, Succeeded};
        let outcomes = [
            outcome(1, Succeeded, 0, Some(-60_000)),
            outcome(1, Failed, 1_000_000, None),
            outcome(1, Failed, 1_500_000, None),
            outcome(2, Succeeded, 1_700_000, None),
            outcome(1, Succeeded, 3_000_000, Some(2_940_000)),
        ];
        let keys = four_keys(
            &outcomes,
            (true, false),
            (0, DAY_MS),
            |id| Some(id.to_string()),
            |_| None,
        );
        assert_eq!(keys.len(), 2);
        let one = &keys[0];
        assert_eq!(one.system.as_deref(), Some("1"));
        assert_eq!(
            (one.succeeded_deployments, one.failed_deployments, one.deployments),
            (2, 2, 4)
        );
        assert_eq!(one.change_failure_rate, Some(0.5));
        assert_eq!(one.recoveries, 1, "two failures in a row recover once");
        assert_eq!(
            one.mean_time_to_recovery_seconds,
            Some(2_000.0),
            "from the first failure"
        );
        assert_eq!(one.median_lead_time_seconds, Some(60.0));
        assert_eq!(one.lead_time_sample_size, 2);
        assert_eq!(one.deployment_days, 1);
        assert_eq!(one.deployments_per_day, 2.0);
        assert_eq!(keys[1].recoveries, 0, "system 2 never failed");
    }

    #[test]
    fn people_s_marks_decide_what_counts_as_a_failed_change() {
        use DeploymentStatus::{Failed, Succeeded};
        let marked = |mut o: Outcome, failed| {
            o.failed_change = Some(failed);
            o
        };
        let outcomes = [
            // A success that broke production, recovered by the next success 600 s later.
            marked(outcome(1, Succeeded, 0, None), true),
            outcome(1, Succeeded, 600_000, None),
            // A failed deployment people said was not a failed change: no recovery to count.
            marked(outcome(1, Failed, 700_000, None), false),
            outcome(1, Succeeded, 800_000, None),
        ];
        let keys = four_keys(&outcomes, (false, false), (0, DAY_MS), |_| None, |_| None);
        let one = &keys[0];
        assert_eq!(
            (
                one.failed_deployments,
                one.marked_failed_changes,
                one.unmarked_failures,
                one.failed_changes
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(one.change_failure_rate, Some(0.25));
        assert_eq!(
            one.succeeded_deployments, 3,
            "a marked success was still deployed"
        );
        assert_eq!(
            (one.recoveries, one.mean_time_to_recovery_seconds),
            (1, Some(600.0))
        );
    }

    #[test]
    fn a_rollback_counts_the_change_it_undid_as_failed_and_recovers_it() {
        use DeploymentStatus::Succeeded;
        let shipping = |at: i64, version: &str| Outcome {
            shipped: Some(version.to_string()),
            ..outcome(1, Succeeded, at, None)
        };
        let outcomes = [
            shipping(0, "1.0"),
            shipping(1_000_000, "1.1"),
            // Back to 1.0, 300 s after 1.1 went out: 1.1 was a failed change.
            shipping(1_300_000, "1.0"),
            // The same again is a redeploy, not a second rollback.
            shipping(1_400_000, "1.0"),
            shipping(2_000_000, "1.2"),
        ];
        let keys = four_keys(&outcomes, (false, false), (0, DAY_MS), |_| None, |_| None);
        let one = &keys[0];
        assert_eq!(
            (
                one.rollbacks,
                one.rolled_back_changes,
                one.failed_changes,
                one.failed_deployments
            ),
            (1, 1, 1, 0)
        );
        assert_eq!(one.change_failure_rate, Some(0.2));
        assert_eq!(
            (one.recoveries, one.median_time_to_recovery_seconds),
            (1, Some(300.0))
        );
    }

    #[test]
    fn medians_of_even_counts_are_the_middle_pair_mean() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn a_window_without_finished_deployments_has_no_rate() {
        let none = |_| None;
        assert!(four_keys(&[], (true, false), (0, DAY_MS), none, none).is_empty());
        let one = [outcome(1, DeploymentStatus::Succeeded, 5, None)];
        let keys = four_keys(&one, (false, false), (0, 1000), none, none);
        assert_eq!(keys[0].change_failure_rate, Some(0.0));
        assert_eq!(
            keys[0].deployments_per_day, 24.0,
            "an hour is the shortest window"
        );
    }
}
