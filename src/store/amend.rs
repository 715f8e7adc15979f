//! Changes people make to a stored deployment through the write API (tags, a note, a failed
//! change mark, a correction, a deletion): journaled as a delivery of the `shiplog` source in
//! the same transaction as the change, with an event so subscribers hear of it. A correction
//! or a deletion also moves the per-day rollup and rebuilds the board cells it touches.

use std::collections::BTreeMap;

use entity::{DeliveryState, deliveries, deployment_events, deployments};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ActiveModelTrait, EntityTrait, QuerySelect, TransactionTrait};

use super::counts::CountDeltas;
use super::merge::{tags_json, tags_of};
use super::{NameKind, Store, StoreError, ensure_named};
use crate::domain::DeploymentStatus;
use crate::events::LiveEvent;

/// The journal's source name for the write API's own changes (no webhook route has it).
pub const SOURCE: &str = "shiplog";

/// What changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Set tags (a `None` value removes the key) and, when given, the note (empty clears it).
    Annotate {
        tags: BTreeMap<String, Option<String>>,
        note: Option<String>,
    },
    /// Mark the deployment as a failed change (true), as not one (false), or take the mark
    /// back (None), with why.
    FailedChange {
        failed: Option<bool>,
        reason: Option<String>,
    },
    /// Set the status, or move the deployment to another system or environment: people's
    /// words (kept, mapped by the rules like a tool's) with the names they map to.
    Correct {
        status: Option<DeploymentStatus>,
        system: Option<Renamed>,
        environment: Option<Renamed>,
        reason: Option<String>,
    },
    /// Hide it from every list, count and the board (still read by id), with why.
    Delete { reason: String },
}

/// A name people gave, and the name the mapping rules make of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renamed {
    pub given: String,
    pub mapped: String,
}

/// One change to one deployment, as journaled.
pub struct Amendment {
    pub deployment_id: i64,
    pub change: Change,
    /// The journal's body: the mutation and its arguments, as JSON.
    pub body: String,
    /// The journal's headers, as a JSON object (the write token's fingerprint).
    pub headers: String,
    pub at: i64,
}

/// What an amendment did.
pub struct Amended {
    pub delivery_id: i64,
    pub deployment: deployments::Model,
    pub event: LiveEvent,
}

impl Store {
    /// Applies an amendment and journals it in one transaction; `None` when no deployment has
    /// that id (nothing is journaled then). The tags' own limits are checked here too.
    pub async fn amend(&self, amendment: Amendment) -> Result<Option<Amended>, StoreError> {
        let txn = self.db.begin().await?;
        // The journal row first: on SQLite the transaction takes the write lock here, before
        // it reads the deployment (as the ingest writer does), so no write slips in between.
        let delivery = deliveries::ActiveModel {
            id: NotSet,
            source: Set(SOURCE.to_string()),
            delivery_key: Set(format!("mutation:{}", crate::http::random_token(12))),
            received_at: Set(amendment.at),
            body: Set(amendment.body.clone()),
            headers: Set(amendment.headers.clone()),
            state: Set(DeliveryState::Processed),
            error: Set(None),
            attempts: Set(1),
            next_attempt_at: Set(None),
            processed_at: Set(Some(amendment.at)),
            decision: Set(None),
        }
        .insert(&txn)
        .await?;
        let Some(current) = deployments::Entity::find_by_id(amendment.deployment_id)
            .lock_exclusive()
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(None);
        };
        if let Some(deleted_at) = current.deleted_at {
            txn.rollback().await?;
            return Err(StoreError::Invalid(format!(
                "deployment {} was deleted at {}; a deleted deployment is not changed",
                current.id,
                crate::domain::format_millis(deleted_at)
            )));
        }
        let mut next = changed(&current, &amendment.change, amendment.at)?;
        if let Change::Correct {
            system, environment, ..
        } = &amendment.change
        {
            if let Some(system) = system {
                next.system_id = ensure_named(&txn, NameKind::System, &system.mapped, amendment.at).await?;
            }
            if let Some(environment) = environment {
                next.environment_id =
                    ensure_named(&txn, NameKind::Environment, &environment.mapped, amendment.at).await?;
            }
        }
        {
            use sea_orm::IntoActiveModel;
            // Every column written (the model is the whole row as it now is).
            next.clone().into_active_model().reset_all().update(&txn).await?;
        }
        let moved = (current.system_id, current.environment_id) != (next.system_id, next.environment_id);
        let recount = moved || current.status != next.status || next.deleted_at.is_some();
        if recount {
            let mut counts = CountDeltas::default();
            counts.change(&current, &next);
            counts.flush(&txn).await?;
            super::board::rebuild_cell(&txn, (current.system_id, current.environment_id), amendment.at)
                .await?;
            if moved {
                super::board::rebuild_cell(&txn, (next.system_id, next.environment_id), amendment.at).await?;
            }
        }
        let event = deployment_events::ActiveModel {
            id: NotSet,
            deployment_id: Set(next.id),
            delivery_id: Set(Some(delivery.id)),
            status: Set(next.status),
            raw_status: Set(next.raw_status.clone()),
            previous_status: Set(Some(current.status)),
            occurred_at: Set(amendment.at),
            recorded_at: Set(amendment.at),
        }
        .insert(&txn)
        .await?;
        super::writer::notify(&txn, SOURCE, &[event.id]).await?;
        txn.commit().await?;
        let mut events = self.live_events(&[event.id]).await?;
        let event = events
            .pop()
            .ok_or_else(|| StoreError::Invalid(format!("event {} vanished", event.id)))?;
        Ok(Some(Amended {
            delivery_id: delivery.id,
            deployment: next,
            event,
        }))
    }
}

/// The deployment after a change.
fn changed(current: &deployments::Model, change: &Change, at: i64) -> Result<deployments::Model, StoreError> {
    let mut next = current.clone();
    match change {
        Change::Annotate { tags, note } => {
            let mut merged = tags_of(current.tags.as_deref());
            for (key, value) in tags {
                match value {
                    Some(value) => merged.insert(key.clone(), value.clone()),
                    None => merged.remove(key),
                };
            }
            if merged.len() > crate::domain::tags::MAX_TAGS {
                return Err(StoreError::Invalid(format!(
                    "the deployment would carry {} tags; at most {}",
                    merged.len(),
                    crate::domain::tags::MAX_TAGS
                )));
            }
            next.tags = tags_json(&merged);
            if let Some(note) = note {
                next.note = Some(note.trim().to_string()).filter(|n| !n.is_empty());
            }
        }
        Change::FailedChange { failed, reason } => {
            next.failed_change = *failed;
            next.failed_change_reason = failed.and(reason.clone());
        }
        Change::Correct {
            status,
            system,
            environment,
            reason,
        } => {
            if let Some(status) = status {
                next.status = *status;
                next.corrected_status = Some(*status);
            }
            if let Some(system) = system {
                next.corrected_system = Some(system.given.clone());
            }
            if let Some(environment) = environment {
                next.corrected_environment = Some(environment.given.clone());
            }
            if reason.is_some() {
                next.correction_reason = reason.clone();
            }
        }
        Change::Delete { reason } => {
            next.deleted_at = Some(at);
            next.deletion_reason = Some(reason.clone());
        }
    }
    next.updated_at = at.max(current.updated_at);
    Ok(next)
}
