//! Big answers. A year of daily counts for 50 systems is 18,300 points; heaptrack put one such
//! answer at 17.5 MB live at its peak (on SQLite a third of it is sqlx's copies of every value
//! of every row, then the rows, the points, the value tree and the JSON), and sixteen at once
//! took the server to 135 MiB on PostgreSQL and 253 MiB on SQLite. So at most one big answer per
//! core is built at a time (`reserve`), taking its turn before it reads anything: on a machine
//! whose cores are busy building them, more at once only share the same cores. And `Chunked`
//! builds a long list's objects directly when only plain fields are asked for (see `plain`),
//! else resolves it a slice at a time (async-graphql starts a future per item and joins them
//! all), so only one slice's futures are alive next to the values already built.

use std::borrow::Cow;
use std::sync::Arc;

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
