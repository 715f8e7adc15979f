//! `shiplog replay`: re-normalise after the mapping rules changed. Every deployment keeps the
//! tool's own system and environment words, so re-mapping is the map step run again over the
//! distinct raw names: in place, idempotent (a second run moves nothing), then the board is
//! rebuilt and systems and environments nothing points to any more are removed.

use crate::domain::{MappingRules, now_millis};
use crate::store::{Store, StoreError};

/// What a replay changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub raw_names: u64,
    pub deployments_moved: u64,
    pub systems_removed: u64,
    pub environments_removed: u64,
}

/// Re-maps every deployment's raw names with `rules`; `progress(done, total)` is called after
/// each distinct pair of raw names.
pub async fn remap(
    store: &Store,
    rules: &MappingRules,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReplaySummary, StoreError> {
    let pairs = store.raw_name_pairs().await?;
    let total = pairs.len() as u64;
    let mut summary = ReplaySummary {
        raw_names: total,
        ..ReplaySummary::default()
    };
    let now = now_millis();
    for (done, (raw_system, raw_environment)) in pairs.iter().enumerate() {
        let names = (rules.system(raw_system), rules.environment(raw_environment));
        summary.deployments_moved += store
            .move_raw_names((raw_system, raw_environment), (&names.0, &names.1), now)
            .await?;
        progress(done as u64 + 1, total);
    }
    if summary.deployments_moved > 0 {
        (summary.systems_removed, summary.environments_removed) = store.after_moves().await?;
    }
    Ok(summary)
}
