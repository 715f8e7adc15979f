//! GraphQL over HTTP and WebSocket. Each request gets its own DataLoader.

use std::str::FromStr;

use async_graphql::BatchRequest;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use crate::graphql::budget::{Cost, Held};
use crate::graphql::loaders::request_loader;

/// The most requests one batch may carry.
pub const MAX_BATCH: usize = 16;
/// The longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

fn refused(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, axum::Json(body)).into_response()
}

fn unauthorized() -> Response {
    let mut response = refused(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "send one of SHIPLOG_API_TOKENS as `Authorization: Bearer <token>`",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"shiplog\""),
    );
    response
}

/// Per-request data: its own DataLoader, the slot for its share of the big-answer budget, and
/// what the whole HTTP request (all of a batch) has asked for so far.
fn per_request(
    state: &AppState,
    held: &Held,
    cost: &Cost,
    request: async_graphql::Request,
) -> async_graphql::Request {
    request
        .data(request_loader(state.store.clone()))
        .data(held.clone())
        .data(cost.clone())
}

/// Runs the request and writes its JSON; `_held`, the request's share of the big-answer budget,
/// goes to the next big answer when this returns, after the JSON is written.
async fn run(state: &AppState, request: BatchRequest, _held: Held) -> Response {
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(QUERY_TIMEOUT, state.schema.execute_batch(request)).await;
    metrics::histogram!("shiplog_graphql_seconds").record(started.elapsed().as_secs_f64());
    match answer {
        Ok(response) => GraphQLResponse::from(with_codes(response)).into_response(),
        Err(_) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "TIMEOUT",
            "the query ran longer than 30 s; narrow the time range or the filters",
        ),
    }
}

/// Gives every error an `extensions.code`: resolvers set their own; errors without one come
/// from parsing or validation (depth, complexity, unknown fields) or from input coercion.
fn with_codes(response: async_graphql::BatchResponse) -> async_graphql::BatchResponse {
    let fill = |mut response: async_graphql::Response| {
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
    };
    match response {
        async_graphql::BatchResponse::Single(one) => async_graphql::BatchResponse::Single(fill(one)),
        async_graphql::BatchResponse::Batch(many) => {
            async_graphql::BatchResponse::Batch(many.into_iter().map(fill).collect())
        }
    }
}

/// `POST /graphql`: queries (and bounded batches of them).
pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: GraphQLBatchRequest,
) -> Response {
    if !state.tokens.allows(&headers) {
        return unauthorized();
    }
    let held = Held::default();
    let cost = Cost::default();
    let request = match request.into_inner() {
        BatchRequest::Single(request) => BatchRequest::Single(per_request(&state, &held, &cost, request)),
        BatchRequest::Batch(requests) if requests.len() > MAX_BATCH => {
            return refused(
                StatusCode::BAD_REQUEST,
                "BATCH_TOO_LARGE",
                &format!("a batch holds at most {MAX_BATCH} queries"),
            );
        }
        BatchRequest::Batch(requests) => BatchRequest::Batch(
            requests
                .into_iter()
                .map(|request| per_request(&state, &held, &cost, request))
                .collect(),
        ),
    };
    run(&state, request, held).await
}

/// `GET /graphql`: GraphiQL in a browser; a query when the URL carries one (queries only:
/// shiplog has no mutations, so nothing changes over GET).
pub async fn get(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.filter(|q| q.split('&').any(|p| p.starts_with("query=")));
    match query {
        Some(query) => {
            if !state.tokens.allows(&headers) {
                return unauthorized();
            }
            match async_graphql::http::parse_query_string(&query) {
                Ok(request) => {
                    let held = Held::default();
                    let request = per_request(&state, &held, &Cost::default(), request);
                    run(&state, BatchRequest::Single(request), held).await
                }
                Err(error) => super::error::ApiError::BadRequest {
                    code: "bad_query_string",
                    message: format!("the query string is not a GraphQL request: {error}"),
                }
                .into_response(),
            }
        }
        None => Html(super::pages::GRAPHIQL).into_response(),
    }
}

/// `GET /graphql/ws`: subscriptions, over `graphql-transport-ws` or the legacy `graphql-ws`.
pub async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The first sub-protocol we speak, as the client listed them; the legacy protocol when
    // the client names none (as old clients do).
    let protocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|name| WebSocketProtocols::from_str(name.trim()).ok())
        .unwrap_or(WebSocketProtocols::SubscriptionsTransportWS);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(super::socket::MAX_MESSAGE_BYTES)
        .max_frame_size(super::socket::MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let authorized = state.tokens.allows(&headers);
            super::socket::serve(socket, state, protocol, authorized)
        })
}
