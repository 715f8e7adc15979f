//! What a request may cost. Big answers (a year of daily counts per system is tens of thousands
//! of points) hold the rows, the points, the value tree and the JSON in memory at once (on
//! SQLite also sqlx's copies of every value of every row), so many at once multiply the
//! server's memory (README, Performance). So at most one big answer per core is built at a time (`reserve`), taking its turn before it reads anything: on a machine
//! whose cores are busy building them, more at once only share the same cores. And `Chunked`
//! builds a long list's objects directly when only plain fields are asked for (see `plain`),
//! else resolves it a slice at a time (async-graphql starts a future per item and joins them
//! all), so only one slice's futures are alive next to the values already built.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::plain::{Plain, plain_object};
use async_graphql::parser::types::Field;
use async_graphql::resolver_utils::resolve_list;
use async_graphql::{Context, ContextSelectionSet, OutputType, Positioned, ServerResult, Value, registry};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// Points (or rows) from which an answer counts as big.
pub const BIG: usize = 2_000;

/// Items resolved together: their futures are alive at once.
const SLICE: usize = 256;

/// A list built directly, or `SLICE` items at a time; in the schema it is `[T!]!`, like `Vec<T>`.
pub struct Chunked<T>(pub Vec<T>);

impl<T> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        Self(items.into_iter().collect())
    }
}

impl<T: Plain> OutputType for Chunked<T> {
    fn type_name() -> Cow<'static, str> {
        Vec::<T>::type_name()
    }

    fn qualified_type_name() -> String {
        Vec::<T>::qualified_type_name()
    }

    fn create_type_info(registry: &mut registry::Registry) -> String {
        Vec::<T>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        // Every item has the same selection: plain fields build every object directly.
        let plain: Option<Vec<Value>> = self
            .0
            .iter()
            .map(|item| plain_object(item, &ctx.item.node))
            .collect();
        if let Some(values) = plain {
            return Ok(Value::List(values));
        }
        let mut values = Vec::with_capacity(self.0.len());
        for slice in self.0.chunks(SLICE) {
            // Paths in errors count from the slice's start; these items' fields cannot fail.
            match resolve_list(ctx, field, slice, Some(slice.len())).await? {
                Value::List(items) => values.extend(items),
                other => values.push(other),
            }
        }
        Ok(Value::List(values))
    }
}

/// Rows one HTTP request (a batch counts as one) may ask for in all: list limits, page sizes,
/// board cells. One `deploymentList(limit: 10000)` fits five times; 200 of them do not.
pub const MAX_REQUEST_ROWS: usize = 50_000;
/// Frequency points one HTTP request may ask for in all (one answer's cap, `MAX_POINTS`).
pub const MAX_REQUEST_POINTS: usize = 200_000;
/// Aggregate fields (board, frequency, DORA, lists, annotations) one HTTP request may run:
/// each costs a few statements over many rows, however small its answer.
pub const MAX_REQUEST_AGGREGATES: usize = 50;

/// What one HTTP request has asked for so far (request data, shared by a batch's queries).
/// Fields charge it before they read; a field that would go over gets a BAD_USER_INPUT error
/// and reads nothing. The 2,000-field complexity limit counts fields, not what a field can
/// return, so it alone let 200 aliases of a 10,000-row list through.
#[derive(Clone, Default)]
pub struct Cost(Arc<Spent>);

#[derive(Default)]
struct Spent {
    rows: AtomicUsize,
    points: AtomicUsize,
    aggregates: AtomicUsize,
}

/// What a field is about to read.
#[derive(Clone, Copy, Debug)]
pub enum Charge {
    /// Rows of a list or page.
    Rows(usize),
    /// Points of a frequency series.
    Points(usize),
    /// One aggregate field.
    Aggregate,
}

/// Charges the request for what a field is about to read; an error (BAD_USER_INPUT) when the
/// request would go over its budget. Operations over a WebSocket carry no `Cost`: each is
/// bounded by the per-field limits, and a socket runs a bounded number of them.
pub fn charge(ctx: &Context<'_>, charge: Charge) -> async_graphql::Result<()> {
    let Some(cost) = ctx.data_opt::<Cost>() else {
        return Ok(());
    };
    cost.charge(charge)
        .map_err(|message| super::errors::user_error("BAD_USER_INPUT", &message))
}

impl Cost {
    fn charge(&self, charge: Charge) -> Result<(), String> {
        let (counter, amount, cap, what) = match charge {
            Charge::Rows(rows) => (&self.0.rows, rows, MAX_REQUEST_ROWS, "rows"),
            Charge::Points(points) => (&self.0.points, points, MAX_REQUEST_POINTS, "frequency points"),
            Charge::Aggregate => (
                &self.0.aggregates,
                1,
                MAX_REQUEST_AGGREGATES,
                "board, frequency, DORA, list or annotation fields",
            ),
        };
        let before = counter.fetch_add(amount, Ordering::Relaxed);
        if before + amount > cap {
            return Err(format!(
                "this request asks for more than {cap} {what} in all; lower the limits or split it into several requests"
            ));
        }
        Ok(())
    }
}

/// The permits, one per core (schema data).
#[derive(Clone)]
pub struct BigAnswers(Arc<Semaphore>);

impl BigAnswers {
    /// One permit per core this process may use.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn new(permits: usize) -> Self {
        Self(Arc::new(Semaphore::new(permits.max(1))))
    }
}

/// The permit one HTTP request holds until its response is written (request data). A request
/// holds at most one, however many big fields it has, so it never waits on itself.
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

/// Waits for a share of the budget when an answer of `size` points is big, before building it.
/// Returns a permit for the resolver to hold while it builds when the request has no `Held`
/// slot (a query over WebSocket); otherwise the slot keeps it.
pub async fn reserve(ctx: &Context<'_>, size: usize) -> Option<OwnedSemaphorePermit> {
    let budget = ctx.data_opt::<BigAnswers>()?;
    take(budget, ctx.data_opt::<Held>(), size).await
}

async fn take(budget: &BigAnswers, held: Option<&Held>, size: usize) -> Option<OwnedSemaphorePermit> {
    if size < BIG {
        return None;
    }
    match held {
        Some(held) => {
            let mut slot = held.0.lock().await;
            if slot.is_none() {
                *slot = budget.0.clone().acquire_owned().await.ok();
            }
            None
        }
        None => budget.0.clone().acquire_owned().await.ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_request_pays_for_every_field_and_is_refused_past_its_budget() {
        let cost = Cost::default();
        for _ in 0..5 {
            cost.charge(Charge::Rows(10_000)).unwrap();
        }
        assert!(cost.charge(Charge::Rows(1)).is_err(), "the 50,001st row");
        for _ in 0..MAX_REQUEST_AGGREGATES {
            cost.charge(Charge::Aggregate).unwrap();
        }
        assert!(cost.charge(Charge::Aggregate).is_err());
        cost.charge(Charge::Points(MAX_REQUEST_POINTS)).unwrap();
        assert!(cost.charge(Charge::Points(1)).is_err());
    }

    #[tokio::test]
    async fn big_answers_take_turns_and_a_request_never_waits_on_itself() {
        let budget = BigAnswers::new(1);
        let (first, second) = (Held::default(), Held::default());
        assert!(take(&budget, Some(&first), BIG - 1).await.is_none());
        assert_eq!(budget.0.available_permits(), 1, "a small answer takes nothing");

        take(&budget, Some(&first), BIG).await;
        // A second big field of the same request goes on.
        tokio::time::timeout(Duration::from_secs(1), take(&budget, Some(&first), BIG))
            .await
            .expect("a request does not wait on its own permit");
        // Another request waits until the first one's response is written.
        let waiting = tokio::spawn({
            let (budget, second) = (budget.clone(), second.clone());
            async move { take(&budget, Some(&second), BIG).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the second big answer waits its turn");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("it goes once the first is done")
            .unwrap();
        assert_eq!(budget.0.available_permits(), 0, "now the second holds it");
        drop(second);
        assert_eq!(budget.0.available_permits(), 1);
    }
}
