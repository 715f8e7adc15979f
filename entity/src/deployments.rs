//! Deployments: one row per deployment in a source, unique on (source, external_id).

use sea_orm::entity::prelude::*;

/// A deployment with its normalised status and the tool's own words kept beside it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deployments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub source: String,
    pub external_id: String,
    pub system_id: i64,
    pub environment_id: i64,
    /// Normalised status word: queued, running, succeeded, failed, cancelled, unknown.
    pub status: crate::DeploymentStatus,
    pub raw_status: String,
    pub raw_system: String,
    pub raw_environment: String,
    /// The tool's tier or stage for the environment (GitLab `deployment_tier`, Heroku stage).
    pub environment_tier: Option<String>,
    /// The tenant deployed for, in multi-tenant tools (Octopus).
    pub tenant: Option<String>,
    /// When the deployed commit was made, where the tool says (lead time for changes).
    pub committed_at: Option<i64>,
    /// When the event that set `status` happened; decides out-of-order merges.
    pub status_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The deployment's own time: finished, else started, else first seen. Sort key.
    pub deployed_at: i64,
    pub commit_sha: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub git_ref: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub version: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub url: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub actor: Option<String>,
    pub first_seen_at: i64,
    pub updated_at: i64,
    /// How shiplog first learned of it (never changed by later observations).
    pub discovered_by: crate::Discovery,
    /// Key:value tags as a JSON object of strings with sorted keys, or null for none.
    #[sea_orm(column_type = "Text", nullable)]
    pub tags: Option<String>,
    /// A note people (the write API) or the tool (the generic webhook's `description`) left.
    #[sea_orm(column_type = "Text", nullable)]
    pub note: Option<String>,
    /// Marked by people as a failed change (true) or as not one (false); null when unmarked.
    pub failed_change: Option<bool>,
    #[sea_orm(column_type = "Text", nullable)]
    pub failed_change_reason: Option<String>,
    /// Where the environment can be visited, as the tool last said.
    #[sea_orm(column_type = "Text", nullable)]
    pub environment_url: Option<String>,
    /// The status people set through the write API; later deliveries do not change it.
    pub corrected_status: Option<crate::DeploymentStatus>,
    /// The system people named, in their words: replay and the mapping rules read it in place
    /// of `raw_system`, and later deliveries do not move the deployment.
    #[sea_orm(column_type = "Text", nullable)]
    pub corrected_system: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub corrected_environment: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub correction_reason: Option<String>,
    /// When people deleted it: hidden from every list, count and the board, still read by id.
    pub deleted_at: Option<i64>,
    #[sea_orm(column_type = "Text", nullable)]
    pub deletion_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
