//! Changes people make to a stored deployment through the write API (tags, a note, a failed
//! change mark): journaled as a delivery of the `shiplog` source in the same transaction as
//! the change, with an event so subscribers hear of it.

use std::collections::BTreeMap;

use entity::{DeliveryState, deliveries, deployment_events, deployments};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};

use super::merge::{tags_json, tags_of};
use super::{Store, StoreError};
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
        let next = changed(&current, &amendment.change, amendment.at)?;
        {
            use deployments::Column;
            use sea_orm::sea_query::Expr;
            deployments::Entity::update_many()
                .col_expr(Column::Tags, Expr::value(next.tags.clone()))
                .col_expr(Column::Note, Expr::value(next.note.clone()))
                .col_expr(Column::FailedChange, Expr::value(next.failed_change))
                .col_expr(
                    Column::FailedChangeReason,
                    Expr::value(next.failed_change_reason.clone()),
                )
                .col_expr(Column::UpdatedAt, Expr::value(next.updated_at))
                .filter(Column::Id.eq(next.id))
                .exec(&txn)
                .await?;
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
    }
    next.updated_at = at.max(current.updated_at);
    Ok(next)
}
