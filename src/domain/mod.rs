//! The one model every source is normalised into, and the rules that map a tool's words onto it.
//!
//! Nothing after `sources/` branches on which tool sent an event: it only sees [`Observation`]s.

pub mod backstage;
pub mod buckets;
pub mod catalog;
pub mod decision;
pub mod dora;
pub mod lifecycle;
mod rules;
pub mod tags;
mod time;

pub use catalog::{Catalog, CatalogEntry};
pub use decision::Decision;
pub use entity::{DeliveryState, DeploymentStatus, Discovery};
pub use rules::{MappingRules, RulesConfig};
pub use time::{InstantError, format_millis, now_millis, parse_instant, parse_instant_str};

/// One UTC day in epoch milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The longest system, environment or external id we accept (bytes).
pub const MAX_NAME_LEN: usize = 255;
/// The longest free-text field (ref, version, url, actor) we accept (bytes).
pub const MAX_TEXT_LEN: usize = 2048;

/// What one delivery told us about one deployment at one moment, in the tool's own words for
/// system and environment (the map step turns those into shiplog's names).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Observation {
    /// The deployment's id in its source (unique per source).
    pub external_id: String,
    /// The system as the tool names it.
    pub system: String,
    /// The environment as the tool names it.
    pub environment: String,
    /// The tool's tier for that environment (production, staging, ...), when it has one.
    pub environment_tier: Option<String>,
    pub status: DeploymentStatus,
    /// The tool's own status word.
    pub raw_status: String,
    /// When this status happened, epoch ms (the receive time when the tool does not say).
    pub occurred_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub commit_sha: Option<String>,
    pub git_ref: Option<String>,
    pub version: Option<String>,
    pub url: Option<String>,
    pub actor: Option<String>,
    /// The tenant deployed for (Octopus multi-tenant deployments).
    pub tenant: Option<String>,
    /// When the deployed commit was made, epoch ms, where the tool says.
    pub committed_at: Option<i64>,
    /// The base URL of the tool's instance that sent it (an Octopus server, a GitLab
    /// instance), where the delivery says: where its API is asked for more.
    #[serde(skip)]
    pub origin: Option<String>,
    /// Whether `occurred_at` is shiplog's stand-in (the receive time, or when the tool created
    /// the job that never ran) rather than when this status happened: it is then never taken
    /// for a start or a finish.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub times_estimated: bool,
    /// Key:value tags the tool gives the deployment (the generic webhook's `tags`, a declared
    /// source's `tags`); the tenant and the environment's tier are added as `tenant` and
    /// `tier` when the deployment is stored.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// A note the tool gives (the generic webhook's `description`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Where the environment can be visited (GitLab's `environment_external_url`, GitHub's
    /// `environment_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<String>,
}

#[cfg(test)]
impl Observation {
    /// An observation with only the required fields, of system "billing" in "prod" (tests).
    pub(crate) fn bare(external_id: &str, status: DeploymentStatus, occurred_at: i64) -> Self {
        Self {
            external_id: external_id.into(),
            system: "billing".into(),
            environment: "prod".into(),
            environment_tier: None,
            status,
            raw_status: status.as_str().into(),
            occurred_at,
            started_at: None,
            finished_at: None,
            commit_sha: None,
            git_ref: None,
            version: None,
            url: None,
            actor: None,
            tenant: None,
            committed_at: None,
            origin: None,
            tags: Default::default(),
            note: None,
            environment_url: None,
            times_estimated: false,
        }
    }
}

/// An observation after the map step: canonical system and environment names beside the raw ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedObservation {
    pub observation: Observation,
    pub system: String,
    pub environment: String,
    /// The path it came by: a webhook, an import or reconciliation (kept on a new deployment).
    pub discovered_by: Discovery,
}
