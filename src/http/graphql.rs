//! GraphQL over HTTP and WebSocket. Each request gets its own DataLoader.

use std::str::FromStr;
use std::time::Duration;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols};
use async_graphql::parser::types::OperationType;
use async_graphql::{BatchResponse, Response as GraphqlResponse};
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

use super::AppState;
use super::over_http::{self, Media, Prepared, Refusal, Requests};
use crate::graphql::budget::{Cost, Held};
use crate::graphql::errors;
use crate::graphql::loaders::request_loader;
use crate::graphql::mutation::WriteAccess;

/// The most requests one batch may carry.
pub const MAX_BATCH: usize = 16;
/// The longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

fn unauthorized(media: Media) -> Response {
    let mut response = Refusal::new(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "send one of SHIPLOG_API_TOKENS as `Authorization: Bearer <token>`",
    )
    .into_response(media);
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
    (held, cost): (&Held, &Cost),
    writer: Option<&WriteAccess>,
    request: async_graphql::Request,
) -> async_graphql::Request {
    let request = request
        .data(request_loader(state.store.clone()))
        .data(held.clone())
        .data(cost.clone());
    match writer {
        Some(writer) => request.data(writer.clone()),
        None => request,
    }
}

/// Runs the requests (a document that did not parse is answered with its parse error) and
/// writes the answer; `held`, the HTTP request's share of the big-answer budget, goes to the
/// next big answer when this returns, after the JSON is written.
async fn run(state: &AppState, media: Media, requests: Requests, writer: Option<WriteAccess>) -> Response {
    let held = Held::default();
    let cost = Cost::default();
    let (requests, batch) = match requests {
        Requests::One(one) => (vec![*one], false),
        Requests::Batch(many) => (many, true),
    };
    let started = std::time::Instant::now();
    let answers: FuturesOrdered<_> = requests
        .into_iter()
        .map(|prepared| {
            let subscription = prepared.operation() == Some(OperationType::Subscription);
            let Prepared { mut request, parsed } = prepared;
            let (held, cost, writer) = (&held, &cost, writer.as_ref());
            async move {
                match parsed {
                    Ok(_) if subscription => GraphqlResponse::from_errors(vec![errors::request_error(
                        "SUBSCRIPTION_OVER_HTTP",
                        "subscriptions run over WebSocket at /graphql/ws (graphql-transport-ws or graphql-ws)",
                    )]),
                    Ok(document) => {
                        request.set_parsed_query(document);
                        state
                            .schema
                            .execute(per_request(state, (held, cost), writer, request))
                            .await
                    }
                    Err(error) => GraphqlResponse::from_errors(vec![error]),
                }
            }
        })
        .collect();
    let answers = tokio::time::timeout(QUERY_TIMEOUT, answers.collect::<Vec<_>>()).await;
    metrics::histogram!("shiplog_graphql_seconds").record(started.elapsed().as_secs_f64());
    let Ok(answers) = answers else {
        return Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TIMEOUT",
            "the query ran longer than 30 s; narrow the time range or the filters",
        )
        .into_response(media);
    };
    let mut answers: Vec<GraphqlResponse> = answers.into_iter().map(errors::with_codes).collect();
    let response = match (batch, answers.pop()) {
        (false, Some(one)) => BatchResponse::Single(one),
        (_, last) => BatchResponse::Batch(answers.into_iter().chain(last).collect()),
    };
    let answer = over_http::answer(media, response);
    drop(held);
    answer
}

/// `POST /graphql`: queries (and bounded batches of them), as JSON.
pub async fn post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let media = match Media::negotiate(&headers) {
        Ok(media) => media,
        Err(refusal) => return refusal.into_response(Media::Json),
    };
    let writer = state
        .write_tokens
        .holder(&headers)
        .map(|writer| WriteAccess { writer });
    if writer.is_none() && !state.tokens.allows(&headers) {
        return unauthorized(media);
    }
    let requests = over_http::check_content_type(&headers).and_then(|()| over_http::parse_body(&body));
    match requests {
        Ok(Requests::Batch(many)) if many.len() > MAX_BATCH => Refusal::new(
            StatusCode::BAD_REQUEST,
            "BATCH_TOO_LARGE",
            format!("a batch holds at most {MAX_BATCH} queries"),
        )
        .into_response(media),
        Ok(requests) => run(&state, media, requests, writer).await,
        Err(refusal) => refusal.into_response(media),
    }
}

/// `GET /graphql`: GraphiQL in a browser; a query when the URL carries one (never a mutation:
/// nothing changes over GET).
pub async fn get(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let Some(query) = query.filter(|q| q.split('&').any(|p| p.starts_with("query="))) else {
        return Html(super::pages::GRAPHIQL).into_response();
    };
    let media = match Media::negotiate(&headers) {
        Ok(media) => media,
        Err(refusal) => return refusal.into_response(Media::Json),
    };
    if !state.reads(&headers) {
        return unauthorized(media);
    }
    match over_http::parse_url(&query) {
        Ok(prepared) if prepared.operation() == Some(OperationType::Mutation) => Refusal {
            allow: Some("POST"),
            ..Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "a mutation cannot run over GET: send it with POST",
            )
        }
        .into_response(media),
        Ok(prepared) => run(&state, media, Requests::One(Box::new(prepared)), None).await,
        Err(refusal) => refusal.into_response(media),
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
            let authorized = state.reads(&headers);
            super::socket::serve(socket, state, protocol, authorized)
        })
}
