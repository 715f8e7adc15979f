//! The two kinds of GraphQL error resolvers raise: one the client caused (with the code that
//! says what to change) and an opaque server-side one (its cause logged once).

use async_graphql::ErrorExtensions;

/// A GraphQL error a client caused, with `extensions.code`.
pub fn user_error(code: &str, message: &str) -> async_graphql::Error {
    let code = code.to_string();
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code.clone()))
}

/// An opaque server-side error; the cause is logged once here.
pub fn internal(error: crate::store::StoreError) -> async_graphql::Error {
    tracing::error!(%error, "GraphQL resolver failed");
    async_graphql::Error::new("the database did not answer; try again")
        .extend_with(|_, e| e.set("code", "INTERNAL_SERVER_ERROR"))
}
