//! Deployments in lists, answered without the executor's per-field machinery when the query
//! asks only for plain fields.
//!
//! async-graphql resolves every field of every object as its own boxed future, polled through
//! a `FuturesUnordered`, with a context and a path node each: a page of 100 deployments with
//! a dozen fields is over a thousand futures, and profiles of list queries put a large share
//! of the CPU there (README, Performance). `types::Listed` is the same GraphQL type, `Deployment`; when every selection under it
//! is a plain field (no fragment, no directive, no `events`, no repeated response key) and
//! the names are already at hand, it builds the object directly from the row. Anything else
//! goes through the generic path, unchanged. Grafana's long lists (`Chunked` rows, points and
//! annotations) take the same path through `Plain`. Tests resolve every field both ways and
//! compare the answers.

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::{Name, OutputType, ScalarType, Value};

use super::scalars::Instant;
use crate::domain::DeploymentStatus;
use crate::store::Named;

/// A type whose fields, none with arguments, can be answered without the executor.
pub trait Plain: OutputType {
    /// The value of `field` (never `__typename`), or None when the generic path must answer.
    fn plain_field(&self, field: &Field) -> Option<Value>;
}

/// The object of `item` for `selection`, or None when the generic path must answer it.
pub(crate) fn plain_object<T: Plain>(item: &T, selection: &SelectionSet) -> Option<Value> {
    object(selection, |field| match field.name.node.as_str() {
        "__typename" => Some(Value::String(T::type_name().into_owned())),
        _ => item.plain_field(field),
    })
}

/// A field's value as async-graphql writes it.
pub trait PlainValue {
    fn plain(&self) -> Value;
}

impl PlainValue for String {
    fn plain(&self) -> Value {
        Value::String(self.clone())
    }
}

impl PlainValue for i64 {
    fn plain(&self) -> Value {
        Value::from(*self)
    }
}

impl PlainValue for f64 {
    fn plain(&self) -> Value {
        self.to_value()
    }
}

impl PlainValue for Instant {
    fn plain(&self) -> Value {
        self.to_value()
    }
}

impl PlainValue for DeploymentStatus {
    fn plain(&self) -> Value {
        async_graphql::resolver_utils::enum_value(*self)
    }
}

impl PlainValue for crate::domain::Discovery {
    fn plain(&self) -> Value {
        async_graphql::resolver_utils::enum_value(*self)
    }
}

impl<T: PlainValue> PlainValue for Option<T> {
    fn plain(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::plain)
    }
}

/// A system's or environment's object when only `id`, `name` and `__typename` are asked for.
pub(crate) fn named(named: &Named, type_name: &str, selection: &SelectionSet) -> Option<Value> {
    object(selection, |field| match field.name.node.as_str() {
        "__typename" => Some(Value::String(type_name.to_owned())),
        "id" => Some(Value::String(named.id.to_string())),
        "name" => Some(Value::String(named.name.clone())),
        _ => None,
    })
}

/// The object for `selection` when every item is a field without directives or arguments and
/// `value` answers each; None otherwise, or when a response key repeats (the generic path
/// merges repeated selections).
fn object(selection: &SelectionSet, mut value: impl FnMut(&Field) -> Option<Value>) -> Option<Value> {
    if selection.items.is_empty() {
        // Every field skipped (`@skip`/`@include`): async-graphql answers null there.
        return None;
    }
    let mut object = IndexMap::with_capacity(selection.items.len());
    for item in &selection.items {
        let Selection::Field(field) = &item.node else {
            return None;
        };
        let field = &field.node;
        if !field.directives.is_empty() || !field.arguments.is_empty() {
            return None;
        }
        let key: Name = field.alias.as_ref().unwrap_or(&field.name).node.clone();
        if object.insert(key, value(field)?).is_some() {
            return None;
        }
    }
    Some(Value::Object(object))
}
