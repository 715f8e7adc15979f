//! GraphQL over HTTP and WebSocket. Each request gets its own DataLoader.

use std::str::FromStr;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocket as GraphQLWs, WebSocketProtocols, WsMessage};
use async_graphql::{BatchRequest, Data};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use super::AppState;
use crate::graphql::loaders::{live_loader, request_loader};

/// `POST /graphql`: queries (and batches of them).
pub async fn post(State(state): State<AppState>, request: GraphQLBatchRequest) -> GraphQLResponse {
    let request = match request.into_inner() {
        BatchRequest::Single(request) => {
            BatchRequest::Single(request.data(request_loader(state.store.clone())))
        }
        BatchRequest::Batch(requests) => BatchRequest::Batch(
            requests
                .into_iter()
                .map(|request| request.data(request_loader(state.store.clone())))
                .collect(),
        ),
    };
    state.schema.execute_batch(request).await.into()
}

/// `GET /graphql`: GraphiQL in a browser; a query when the URL carries one.
pub async fn get(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let query = query.filter(|q| q.split('&').any(|p| p.starts_with("query=")));
    match query {
        Some(query) => match async_graphql::http::parse_query_string(&query) {
            Ok(request) => {
                let request = request.data(request_loader(state.store.clone()));
                GraphQLResponse::from(state.schema.execute(request).await).into_response()
            }
            Err(error) => super::error::ApiError::BadRequest {
                code: "bad_query_string",
                message: format!("the query string is not a GraphQL request: {error}"),
            }
            .into_response(),
        },
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
        .on_upgrade(move |socket| serve(socket, state, protocol))
}

/// Runs one WebSocket connection until the client leaves or the server shuts down; on
/// shutdown the client gets a proper close frame (1001, going away).
async fn serve(socket: WebSocket, state: AppState, protocol: WebSocketProtocols) {
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|message| futures_util::future::ready(message.is_ok()))
        .filter_map(|message| {
            futures_util::future::ready(match message {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            })
        });
    let mut data = Data::default();
    data.insert(live_loader(state.store.clone()));
    let executor = state.schema.clone();
    let mut output = std::pin::pin!(
        GraphQLWs::new(executor, input, protocol)
            .connection_data(data)
            .keepalive_timeout(None)
    );
    let mut shutdown = std::pin::pin!(stopped(state.shutdown.clone()));
    loop {
        tokio::select! {
            message = output.next() => {
                let Some(message) = message else { break };
                let frame = match message {
                    WsMessage::Text(text) => Message::Text(text.into()),
                    WsMessage::Close(code, reason) => Message::Close(Some(CloseFrame { code, reason: reason.into() })),
                };
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            _ = &mut shutdown => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame { code: 1001, reason: "shiplog is shutting down".into() })))
                    .await;
                break;
            }
        }
    }
}

/// Completes when the server starts shutting down (or the signal's sender is gone).
async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let stopping = *shutdown.borrow_and_update();
        if stopping || shutdown.changed().await.is_err() {
            return;
        }
    }
}
