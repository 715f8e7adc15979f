//! `shiplog replay`: re-normalise after the rules changed. Every deployment keeps the tool's
//! own system and environment words, so re-mapping is the map step run again over the
//! distinct raw names: in place, idempotent (a second run moves nothing), then the board is
//! rebuilt and systems and environments nothing points to any more are removed. Deliveries
//! the sources' current rules would now make deployments of (ignored before, or not
//! understood) go back to pending, for the workers to apply. `--dry-run` ([`preview`]) shows
//! all of it, and what no delivery would make any more, before anything changes.

use std::collections::{HashMap, HashSet};

use crate::domain::{MappingRules, now_millis};
use crate::sources::{Delivery, Parsed, Registry};
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

/// What the current settings would change, found without changing anything: deployments whose
/// names would move (the mapping rules), and, reading the journal again with the sources'
/// current rules, deployments that would appear (deliveries ignored or not understood before)
/// or that no delivery would make any more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    pub deliveries_read: u64,
    pub moved: u64,
    pub moved_examples: Vec<String>,
    /// The deliveries that would make new deployments, and one key of each.
    pub appear: Vec<(i64, String)>,
    pub disappear: Vec<String>,
}

/// Examples kept per kind of change.
const EXAMPLES: usize = 5;

/// Computes the [`Preview`]; `progress(deliveries read)` is called after each journal page.
pub async fn preview(
    store: &Store,
    sources: &Registry,
    rules: &MappingRules,
    mut progress: impl FnMut(u64),
) -> Result<Preview, StoreError> {
    let mut preview = Preview::default();
    for row in store.raw_names_now().await? {
        let (system, environment) = (
            rules.system(&row.raw_system),
            rules.environment(&row.raw_environment),
        );
        if (system.as_str(), environment.as_str()) != (row.system.as_str(), row.environment.as_str()) {
            preview.moved += row.count;
            if preview.moved_examples.len() < EXAMPLES {
                preview.moved_examples.push(format!(
                    "{}: {} in {} -> {system} in {environment} ({} deployments)",
                    row.example, row.system, row.environment, row.count
                ));
            }
        }
    }
    let known: HashMap<(String, String), bool> = store
        .deployment_keys()
        .await?
        .into_iter()
        .map(|(source, external_id, reported)| ((source, external_id), reported))
        .collect();
    let mut made: HashSet<(String, String)> = HashSet::new();
    let mut after = 0;
    loop {
        let page = store.journal_page(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for delivery in &page {
            preview.deliveries_read += 1;
            for key in deployments_made(sources, delivery) {
                if !known.contains_key(&key) && !made.contains(&key) {
                    preview.appear.push((delivery.id, format!("{} {}", key.0, key.1)));
                }
                made.insert(key);
            }
        }
        progress(preview.deliveries_read);
    }
    preview.disappear = known
        .into_iter()
        .filter(|(key, reported)| *reported && !made.contains(key))
        .map(|((source, external_id), _)| format!("{source} {external_id}"))
        .collect();
    preview.disappear.sort();
    Ok(preview)
}

/// The (source, external id) of every deployment a journaled delivery makes under the current
/// rules (none for one still waiting for the tool's API: it is read when it is finished).
fn deployments_made(sources: &Registry, delivery: &entity::deliveries::Model) -> Vec<(String, String)> {
    if delivery.state == entity::DeliveryState::Pending {
        return Vec::new();
    }
    let Some(source) = sources.get(&delivery.source) else {
        return Vec::new();
    };
    let headers = super::journaled_headers(&delivery.headers);
    let journaled = Delivery {
        headers: &headers,
        query: None,
        body: delivery.body.as_bytes(),
        received_at: delivery.received_at,
    };
    match source.accept(&journaled).map(|accepted| accepted.parsed) {
        Ok(Parsed::Deployments(observations)) => observations
            .into_iter()
            .map(|o| (delivery.source.clone(), o.external_id))
            .collect(),
        Ok(Parsed::Stopped(_) | Parsed::Ignored(_)) | Err(_) => Vec::new(),
    }
}
