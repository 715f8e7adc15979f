//! Pending deliveries: journaled, waiting for enrichment (an API call) before they can be
//! applied. Workers on any number of replicas claim them with a compare-and-set lease, so no
//! delivery is processed by two workers at once, and a crashed worker's claim simply expires.

use entity::{DeliveryState, deliveries};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Store, StoreError};

const PENDING: DeliveryState = DeliveryState::Pending;
const FAILED: DeliveryState = DeliveryState::Failed;

impl Store {
    /// Claims up to `limit` pending deliveries that are due: each is leased until
    /// `now + lease_ms` and its attempt count goes up by one.
    pub async fn claim_due(
        &self,
        now: i64,
        lease_ms: i64,
        limit: u64,
    ) -> Result<Vec<deliveries::Model>, StoreError> {
        let candidates = deliveries::Entity::find()
            .filter(deliveries::Column::State.eq(PENDING))
            .filter(deliveries::Column::NextAttemptAt.lte(now))
            .order_by_asc(deliveries::Column::NextAttemptAt)
            .limit(limit)
            .all(self.connection())
            .await?;
        let mut claimed = Vec::with_capacity(candidates.len());
        for mut candidate in candidates {
            let updated = deliveries::Entity::update_many()
                .col_expr(
                    deliveries::Column::NextAttemptAt,
                    Expr::value(Some(now + lease_ms)),
                )
                .col_expr(deliveries::Column::Attempts, Expr::value(candidate.attempts + 1))
                .filter(deliveries::Column::Id.eq(candidate.id))
                .filter(deliveries::Column::State.eq(PENDING))
                .filter(deliveries::Column::NextAttemptAt.eq(candidate.next_attempt_at))
                .filter(deliveries::Column::Attempts.eq(candidate.attempts))
                .exec(self.connection())
                .await?;
            if updated.rows_affected == 1 {
                candidate.attempts += 1;
                candidate.next_attempt_at = Some(now + lease_ms);
                claimed.push(candidate);
            }
        }
        Ok(claimed)
    }

    /// Records a failed attempt and when to try again.
    pub async fn retry_later(&self, id: i64, error: &str, next_attempt_at: i64) -> Result<(), StoreError> {
        deliveries::Entity::update_many()
            .col_expr(deliveries::Column::Error, Expr::value(Some(error.to_string())))
            .col_expr(
                deliveries::Column::NextAttemptAt,
                Expr::value(Some(next_attempt_at)),
            )
            .filter(deliveries::Column::Id.eq(id))
            .filter(deliveries::Column::State.eq(PENDING))
            .exec(self.connection())
            .await?;
        Ok(())
    }

    /// Gives up on a delivery after its last attempt; it stays in the journal as failed.
    pub async fn mark_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        deliveries::Entity::update_many()
            .col_expr(deliveries::Column::State, Expr::value(FAILED))
            .col_expr(deliveries::Column::Error, Expr::value(Some(error.to_string())))
            .col_expr(
                deliveries::Column::NextAttemptAt,
                Expr::value(Option::<i64>::None),
            )
            .filter(deliveries::Column::Id.eq(id))
            .filter(deliveries::Column::State.eq(PENDING))
            .exec(self.connection())
            .await?;
        Ok(())
    }

    /// One journal row.
    pub async fn delivery(&self, id: i64) -> Result<Option<deliveries::Model>, StoreError> {
        Ok(deliveries::Entity::find_by_id(id).one(self.connection()).await?)
    }

    /// Journal rows in a state, newest first.
    pub async fn deliveries_in(
        &self,
        state: DeliveryState,
        limit: u64,
    ) -> Result<Vec<deliveries::Model>, StoreError> {
        Ok(deliveries::Entity::find()
            .filter(deliveries::Column::State.eq(state))
            .order_by_desc(deliveries::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?)
    }

    /// Puts failed deliveries (all, or the given ids) back to pending, due now, with a fresh
    /// attempt count. Returns how many.
    pub async fn requeue_failed(&self, ids: &[i64], now: i64) -> Result<u64, StoreError> {
        let mut update = deliveries::Entity::update_many()
            .col_expr(deliveries::Column::State, Expr::value(PENDING))
            .col_expr(deliveries::Column::Attempts, Expr::value(0))
            .col_expr(deliveries::Column::NextAttemptAt, Expr::value(Some(now)))
            .filter(deliveries::Column::State.eq(FAILED));
        if !ids.is_empty() {
            update = update.filter(deliveries::Column::Id.is_in(ids.iter().copied()));
        }
        Ok(update.exec(self.connection()).await?.rows_affected)
    }

    /// How many deliveries are pending and failed.
    pub async fn backlog(&self) -> Result<(u64, u64), StoreError> {
        use sea_orm::PaginatorTrait;
        let pending = deliveries::Entity::find()
            .filter(deliveries::Column::State.eq(PENDING))
            .count(self.connection())
            .await?;
        let failed = deliveries::Entity::find()
            .filter(deliveries::Column::State.eq(FAILED))
            .count(self.connection())
            .await?;
        Ok((pending, failed))
    }
}
