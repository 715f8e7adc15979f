//! Deployments in lists, answered without the executor's per-field machinery when the query
//! asks only for plain fields.
//!
//! async-graphql resolves every field of every object as its own boxed future, polled through
//! a `FuturesUnordered`, with a context and a path node each. A page of 100 deployments with
//! nine fields and the system and environment names is about 1,300 such futures; a profile of
//! that query put a third of shiplog's CPU in them (the executor, its maps and the moves of
//! the futures). `Listed` is the same GraphQL type, `Deployment`; when every selection under it
//! is a plain field (no fragment, no directive, no `events`, no repeated response key) and
//! the names are already at hand, it builds the object directly from the row. Anything else
//! goes through the generic path, unchanged. Grafana's long lists (`Chunked` rows, points and
//! annotations) take the same path through `Plain`. Tests resolve every field both ways and
//! compare the answers.

use std::borrow::Cow;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerResult, Value};

use super::scalars::Instant;
use super::types::Deployment;
use crate::domain::DeploymentStatus;
use crate::store::Named;

/// A deployment as the lists hand it out: GraphQL type `Deployment`.
pub struct Listed(pub Deployment);

impl OutputType for Listed {
    fn type_name() -> Cow<'static, str> {
        <Deployment as OutputType>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Deployment as OutputType>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        // The schema has no extensions; one that hooks every field would not see these.
        if let Some(value) = plain_object(self, &ctx.item.node) {
            return Ok(value);
        }
        OutputType::resolve(&self.0, ctx, field).await
    }
}

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

impl<T: PlainValue> PlainValue for Option<T> {
    fn plain(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::plain)
    }
}

impl Plain for Listed {
    fn plain_field(&self, field: &Field) -> Option<Value> {
        let deployment = &self.0;
        let row = deployment.row();
        Some(match field.name.node.as_str() {
            "id" => Value::String(row.id.to_string()),
            "source" => row.source.plain(),
            "externalId" => row.external_id.plain(),
            "system" => named(deployment.system_named()?, "System", &field.selection_set.node)?,
            "environment" => named(
                deployment.environment_named()?,
                "Environment",
                &field.selection_set.node,
            )?,
            "status" => row.status.plain(),
            "rawStatus" => row.raw_status.plain(),
            "rawSystem" => row.raw_system.plain(),
            "rawEnvironment" => row.raw_environment.plain(),
            "environmentTier" => row.environment_tier.plain(),
            "tenant" => row.tenant.plain(),
            "startedAt" => row.started_at.map(Instant).plain(),
            "finishedAt" => row.finished_at.map(Instant).plain(),
            "durationSeconds" => deployment.duration().plain(),
            "deployedAt" => Instant(row.deployed_at).plain(),
            "commitSha" => row.commit_sha.plain(),
            "ref" => row.git_ref.plain(),
            "version" => row.version.plain(),
            "url" => row.url.plain(),
            "actor" => row.actor.plain(),
            "firstSeenAt" => Instant(row.first_seen_at).plain(),
            "updatedAt" => Instant(row.updated_at).plain(),
            _ => return None,
        })
    }
}

/// A system's or environment's object when only `id`, `name` and `__typename` are asked for.
fn named(named: &Named, type_name: &str, selection: &SelectionSet) -> Option<Value> {
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

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use async_graphql::parser::types::DocumentOperations;

    use super::*;
    use crate::domain::Observation;

    fn deployment(names: bool) -> Deployment {
        let observation = Observation {
            raw_status: "success".into(),
            started_at: Some(500),
            commit_sha: Some("abc".into()),
            ..Observation::bare("7", DeploymentStatus::Succeeded, 2_000)
        };
        let row = crate::store::merge::new_deployment("gitlab", &observation, 1, 2, 3_000);
        let named = |id, name: &str| {
            names.then(|| Named {
                id,
                name: name.into(),
            })
        };
        Deployment::with_names(row, named(1, "billing"), named(2, "prod"))
    }

    /// `plain` over the query's top selection set.
    fn answer(deployment: &Deployment, query: &str) -> Option<Value> {
        let document = parse_query(query).unwrap();
        let DocumentOperations::Single(operation) = &document.operations else {
            panic!("one operation")
        };
        plain_object(&Listed(deployment.clone()), &operation.node.selection_set.node)
    }

    #[test]
    fn plain_fields_are_built_directly_in_selection_order() {
        let value = answer(
            &deployment(true),
            "{ status when: deployedAt id durationSeconds system { name } env: environment { id __typename } version }",
        )
        .unwrap();
        assert_eq!(
            value.into_json().unwrap(),
            serde_json::json!({
                "status": "SUCCEEDED", "when": "1970-01-01T00:00:02.000Z", "id": "0",
                "durationSeconds": 1.5, "system": { "name": "billing" },
                "env": { "id": "2", "__typename": "Environment" }, "version": null
            })
        );
        let text = serde_json::to_string(&answer(&deployment(true), "{ version id }").unwrap()).unwrap();
        assert_eq!(text, r#"{"version":null,"id":"0"}"#);
    }

    #[test]
    fn anything_else_is_left_to_the_generic_executor() {
        let with_names = deployment(true);
        for query in [
            "{ id events { status } }",
            "{ id ... on Deployment { source } }",
            "{ id ...f } fragment f on Deployment { source }",
            "{ id id }",
            "{ a: id a: source }",
            "{ id system { name deployments { totalCount } } }",
            "{ id system { n: name n: id } }",
            "{ id system { ... on System { name } } }",
        ] {
            assert!(answer(&with_names, query).is_none(), "{query}");
        }
        // Names not at hand are loaded by the generic path.
        assert!(answer(&deployment(false), "{ id system { name } }").is_none());
        assert!(answer(&deployment(false), "{ id source }").is_some());
    }
}
