//! The two kinds of GraphQL error resolvers raise: one the client caused (with the code that
//! says what to change) and an opaque server-side one (its cause logged once); and how every
//! answer's errors are finished: a code on each, each listed once, parse errors on one line.

use async_graphql::{ErrorExtensions, ServerError};

/// A GraphQL error a client caused, with `extensions.code`.
pub fn user_error(code: &str, message: &str) -> async_graphql::Error {
    let code = code.to_string();
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code.clone()))
}

/// An error about a request as a whole (nothing ran), with `extensions.code`.
pub fn request_error(code: &str, message: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

/// An opaque server-side error; the cause is logged once here.
pub fn internal(error: crate::store::StoreError) -> async_graphql::Error {
    tracing::error!(%error, "GraphQL resolver failed");
    async_graphql::Error::new("the database did not answer; try again")
        .extend_with(|_, e| e.set("code", "INTERNAL_SERVER_ERROR"))
}

/// Gives every error an `extensions.code` (resolvers set their own; errors without one come
/// from validation: depth, complexity, unknown fields; or from input coercion), and lists each
/// error once (two validation rules can report the same fault).
pub fn with_codes(mut response: async_graphql::Response) -> async_graphql::Response {
    let mut seen = std::collections::HashSet::new();
    response.errors.retain(|error| {
        seen.insert(format!(
            "{}|{:?}|{:?}",
            error.message, error.locations, error.path
        ))
    });
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            let code = if error.path.is_empty() {
                "GRAPHQL_VALIDATION_FAILED"
            } else {
                "BAD_USER_INPUT"
            };
            extensions.set("code", code);
        }
    }
    response
}

/// A parse error in one line with its position in `locations`, coded `GRAPHQL_PARSE_FAILED`
/// (the parser's own message is a multi-line diagram of the source).
pub fn parse_error(error: async_graphql::parser::Error) -> ServerError {
    let locations: Vec<async_graphql::Pos> = error.positions().collect();
    let message = match &error {
        async_graphql::parser::Error::Syntax { message, start, .. } => {
            let expected = message
                .lines()
                .rev()
                .find_map(|line| line.trim().strip_prefix("= "))
                .unwrap_or("valid GraphQL")
                .replace('_', " ");
            format!(
                "syntax error at line {}, column {}: {expected}",
                start.line, start.column
            )
        }
        other => other.to_string(),
    };
    let mut error = request_error("GRAPHQL_PARSE_FAILED", &message);
    error.locations = locations;
    error
}
