//! What a WebSocket operation goes through before the schema runs it: its document parsed (a
//! parse error on one line), `__typename` at a subscription's root answered here (clients add
//! it and async-graphql cannot resolve it there), and every answer's errors finished as over
//! HTTP (a code on each, each listed once).

use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection};
use async_graphql::{Data, Executor, Name, Request, Response, Value};
use futures_util::stream::{self, BoxStream, StreamExt};

use super::{ShiplogSchema, errors};

/// The subscription root's type name, as `schema.graphql` has it.
pub const SUBSCRIPTION_ROOT: &str = "SubscriptionRoot";

/// The schema as the WebSocket protocols run it.
#[derive(Clone)]
pub struct LiveExecutor(pub ShiplogSchema);

impl Executor for LiveExecutor {
    async fn execute(&self, request: Request) -> Response {
        errors::with_codes(self.0.execute(request).await)
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let mut document = match async_graphql::parser::parse_query(&request.query) {
            Ok(document) => document,
            Err(error) => {
                let response = Response::from_errors(vec![errors::parse_error(error)]);
                return stream::once(async move { response }).boxed();
            }
        };
        let Some(typenames) = root_typenames(&mut document, request.operation_name.as_deref()) else {
            let response = Response::from_errors(vec![errors::request_error(
                "GRAPHQL_VALIDATION_FAILED",
                "a subscription selects one field, such as `deploymentEvents`; `__typename` alone cannot be subscribed to",
            )]);
            return stream::once(async move { response }).boxed();
        };
        request.set_parsed_query(document);
        Executor::execute_stream(&self.0, request, session_data)
            .map(move |mut response| {
                if let Value::Object(fields) = &mut response.data {
                    for key in &typenames {
                        fields.insert(Name::new(key), Value::String(SUBSCRIPTION_ROOT.into()));
                    }
                }
                errors::with_codes(response)
            })
            .boxed()
    }
}

/// Takes `__typename` (and its aliases) out of a subscription's root selection and returns the
/// keys to answer it under; `None` when a subscription selects nothing else.
fn root_typenames(document: &mut ExecutableDocument, operation_name: Option<&str>) -> Option<Vec<String>> {
    let operation = match (&mut document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => match operations.get_mut(name) {
            Some(operation) => operation,
            None => return Some(Vec::new()),
        },
        (DocumentOperations::Multiple(_), None) => return Some(Vec::new()),
    };
    if operation.node.ty != OperationType::Subscription {
        return Some(Vec::new());
    }
    let items = &mut operation.node.selection_set.node.items;
    let typename_key = |selection: &Selection| match selection {
        Selection::Field(field) if field.node.name.node == "__typename" => {
            Some(field.node.response_key().node.to_string())
        }
        _ => None,
    };
    let keys: Vec<String> = items.iter().filter_map(|item| typename_key(&item.node)).collect();
    if keys.len() == items.len() {
        return None;
    }
    items.retain(|item| typename_key(&item.node).is_none());
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(query: &str, name: Option<&str>) -> (Option<Vec<String>>, usize) {
        let mut document = async_graphql::parser::parse_query(query).unwrap();
        let keys = root_typenames(&mut document, name);
        let left = match &document.operations {
            DocumentOperations::Single(operation) => operation.node.selection_set.node.items.len(),
            DocumentOperations::Multiple(operations) => operations
                .values()
                .map(|operation| operation.node.selection_set.node.items.len())
                .sum(),
        };
        (keys, left)
    }

    #[test]
    fn root_typenames_are_answered_here_and_nothing_else_is_touched() {
        assert_eq!(
            keys(
                "subscription { __typename t: __typename deploymentEvents { __typename id } }",
                None
            ),
            (Some(vec!["__typename".to_string(), "t".to_string()]), 1)
        );
        assert_eq!(keys("subscription { __typename }", None), (None, 1));
        assert_eq!(keys("{ __typename systemNames }", None), (Some(vec![]), 2));
        assert_eq!(
            keys(
                "subscription A { __typename deploymentEvents { id } } query B { __typename }",
                Some("A")
            ),
            (Some(vec!["__typename".to_string()]), 2)
        );
    }
}
