//! One GraphQL WebSocket connection, with the guards async-graphql leaves to its host: a client
//! must send `connection_init` within a few seconds (4408), a message is at most
//! `MAX_MESSAGE_BYTES` (close 1009), one socket holds at most `MAX_OPERATIONS` operations (an
//! error for the one over), an id in use cannot be reused (4409), and close codes follow the
//! graphql-transport-ws protocol: a refused token is 4403 (the client reconnects and can send a
//! fresh token), a malformed message 4400, an operation before the handshake 4401.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocket as GraphQLWs, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use crate::graphql::loaders::live_loader;

/// The largest message (and frame) a client may send: a subscribe message is a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How long a client has to send `connection_init` after the upgrade.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Operations (subscriptions, or queries over the socket) one connection may run at once.
pub const MAX_OPERATIONS: usize = 100;

/// What the connection is closed with, when the guards (not async-graphql) decide.
type Closing = Arc<Mutex<Option<(u16, String)>>>;

/// A message from the guards.
enum Side {
    Text(String),
    Close(u16, String),
}

/// What the guards remember about one connection.
#[derive(Default)]
struct Guard {
    /// Operation ids the client started and that have not completed.
    active: HashSet<String>,
    /// Whether a token was refused in `connection_init` (async-graphql closes with 1002).
    refused: bool,
    /// Operations that have had an answer (graphql-transport-ws).
    answered: HashSet<String>,
    /// Operations refused as a whole (an `error` message), whose `complete` is not sent.
    failed: HashSet<String>,
}

/// Runs one WebSocket connection until the client leaves or the server shuts down; on
/// shutdown the client gets a proper close frame (1001, going away).
pub async fn serve(socket: WebSocket, state: AppState, protocol: WebSocketProtocols, authorized: bool) {
    let (mut sink, stream) = socket.split();
    let guard = Arc::new(Mutex::new(Guard::default()));
    let closing: Closing = Arc::default();
    // Messages the guards answer themselves (an operation refused), beside async-graphql's.
    let (side, mut side_messages) = mpsc::unbounded_channel::<Side>();
    let input = client_messages(stream, guard.clone(), closing.clone(), side, protocol);
    let mut data = Data::default();
    data.insert(live_loader(state.store.clone()));
    let executor = crate::graphql::live::LiveExecutor(state.schema.clone());
    let tokens = state.tokens.clone();
    // A write token reads too (subscriptions never write: no mutation runs over WebSocket).
    let writers = state.write_tokens.clone();
    let init_guard = guard.clone();
    let mut output = std::pin::pin!(
        GraphQLWs::new(executor, input, protocol)
            .connection_data(data)
            .on_connection_init(move |payload| async move {
                if authorized
                    || tokens.allows_init(&payload)
                    || (writers.required() && writers.allows_init(&payload))
                {
                    Ok(Data::default())
                } else {
                    if let Ok(mut guard) = init_guard.lock() {
                        guard.refused = true;
                    }
                    Err(async_graphql::Error::new(
                        "send one of SHIPLOG_API_TOKENS in connection_init: {\"Authorization\": \"Bearer <token>\"}",
                    ))
                }
            })
            .keepalive_timeout(None)
    );
    let mut shutdown = std::pin::pin!(stopped(state.shutdown.clone()));
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    let mut init_deadline = std::pin::pin!(init_deadline);
    let mut acknowledged = false;
    loop {
        let frame = tokio::select! {
            message = output.next() => {
                let Some(message) = message else { break };
                match message {
                    WsMessage::Text(text) => {
                        acknowledged |= text.starts_with(r#"{"type":"connection_ack""#);
                        let text = match protocol {
                            WebSocketProtocols::GraphQLWS => request_errors_as_error(&guard, text),
                            _ => Some(text),
                        };
                        let Some(text) = text else { continue };
                        forget_finished(&guard, &text);
                        Message::Text(text.into())
                    }
                    WsMessage::Close(code, reason) => {
                        let refused = guard.lock().is_ok_and(|g| g.refused);
                        let code = protocol_close_code(code, refused);
                        Message::Close(Some(close_frame(code, &reason)))
                    }
                }
            }
            Some(side) = side_messages.recv() => match side {
                Side::Text(text) => Message::Text(text.into()),
                Side::Close(code, reason) => Message::Close(Some(close_frame(code, &reason))),
            },
            _ = &mut init_deadline, if !acknowledged => {
                close_with(&closing, 4408, "Connection initialisation timeout");
                break;
            }
            _ = &mut shutdown => {
                close_with(&closing, 1001, "shiplog is shutting down");
                break;
            }
        };
        let close = matches!(frame, Message::Close(_));
        if sink.send(frame).await.is_err() || close {
            return;
        }
        if closing.lock().is_ok_and(|c| c.is_some()) {
            break;
        }
    }
    let closing = closing.lock().ok().and_then(|mut c| c.take());
    if let Some((code, reason)) = closing {
        let _ = sink.send(Message::Close(Some(close_frame(code, &reason)))).await;
    }
}

/// The client's messages as async-graphql reads them, through the guards; the stream ends at
/// the first error (an oversized message closes with 1009).
fn client_messages(
    stream: futures_util::stream::SplitStream<WebSocket>,
    guard: Arc<Mutex<Guard>>,
    closing: Closing,
    side: mpsc::UnboundedSender<Side>,
    protocol: WebSocketProtocols,
) -> impl futures_util::Stream<Item = Vec<u8>> {
    stream
        .map(move |message| match message {
            Ok(message) => Some(message),
            Err(error) => {
                // tungstenite's capacity error ("Space limit exceeded: Message too long").
                if error.to_string().contains("Space limit exceeded") {
                    close_with(
                        &closing,
                        1009,
                        &format!("a message is at most {MAX_MESSAGE_BYTES} bytes"),
                    );
                }
                None
            }
        })
        .take_while(|message| futures_util::future::ready(message.is_some()))
        .filter_map(move |message| {
            let bytes = match message {
                Some(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Some(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            };
            futures_util::future::ready(bytes.and_then(|bytes| admit(&guard, &side, protocol, bytes)))
        })
}

/// Lets a client message through to async-graphql, or handles it here: a second operation with
/// an id in use closes the socket (4409), one over `MAX_OPERATIONS` gets an error of its own.
fn admit(
    guard: &Mutex<Guard>,
    side: &mpsc::UnboundedSender<Side>,
    protocol: WebSocketProtocols,
    bytes: Vec<u8>,
) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
        id: Option<String>,
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&bytes) else {
        // async-graphql answers what it cannot read (4400).
        return Some(bytes);
    };
    let Ok(mut guard) = guard.lock() else {
        return Some(bytes);
    };
    let id = envelope.id.unwrap_or_default();
    match envelope.kind.as_str() {
        "subscribe" | "start" => {
            if guard.active.contains(&id) {
                let _ = side.send(Side::Close(4409, format!("Subscriber for {id} already exists")));
                return None;
            }
            if guard.active.len() >= MAX_OPERATIONS {
                let error = json!([{
                    "message": format!("a connection runs at most {MAX_OPERATIONS} operations at once; complete one or open another connection"),
                    "extensions": { "code": "TOO_MANY_OPERATIONS" },
                }]);
                let message = match protocol {
                    WebSocketProtocols::GraphQLWS => json!({ "type": "error", "id": id, "payload": error }),
                    // The legacy protocol's error payload is one error object.
                    _ => json!({ "type": "error", "id": id, "payload": error[0] }),
                };
                let _ = side.send(Side::Text(message.to_string()));
                return None;
            }
            guard.active.insert(id);
        }
        "complete" | "stop" => {
            guard.active.remove(&id);
        }
        _ => {}
    }
    Some(bytes)
}

/// graphql-transport-ws answers an operation that cannot run (its document does not parse or
/// validate, its variables do not coerce) with one `error` message, which ends it: async-graphql
/// sends a `next` carrying the errors and a `complete`; this sends `error` instead, and drops
/// the `complete` that follows. `None`: send nothing.
fn request_errors_as_error(guard: &Mutex<Guard>, text: String) -> Option<String> {
    let next = text.starts_with(r#"{"type":"next","id":"#);
    let complete = text.starts_with(r#"{"type":"complete","id":"#);
    if !next && !complete {
        return Some(text);
    }
    let Ok(mut guard) = guard.lock() else {
        return Some(text);
    };
    let id = message_id(&text)?;
    if complete {
        guard.answered.remove(&id);
        return (!guard.failed.remove(&id)).then_some(text);
    }
    if !guard.answered.insert(id.clone()) {
        return Some(text);
    }
    let Ok(message) = serde_json::from_str::<Value>(&text) else {
        return Some(text);
    };
    let payload = &message["payload"];
    let errors = payload["errors"].as_array().filter(|errors| !errors.is_empty());
    match errors {
        Some(errors) if payload["data"].is_null() && errors.iter().all(|e| e.get("path").is_none()) => {
            guard.failed.insert(id.clone());
            // `type` first: the guards read a message's kind from its start.
            Some(format!(
                r#"{{"type":"error","id":{},"payload":{}}}"#,
                Value::String(id),
                Value::Array(errors.clone())
            ))
        }
        _ => Some(text),
    }
}

/// The `id` of a server message that starts `{"type":...,"id":"..."`, read without parsing
/// the payload behind it.
fn message_id(text: &str) -> Option<String> {
    let start = text.find(r#""id":"#)? + r#""id":"#.len();
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<String>()
        .next()?
        .ok()
}

/// An operation that ended on the server's side frees its id and its place.
fn forget_finished(guard: &Mutex<Guard>, text: &str) {
    if !(text.starts_with(r#"{"type":"complete""#) || text.starts_with(r#"{"type":"error""#)) {
        return;
    }
    let id = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|message| message.get("id").and_then(Value::as_str).map(str::to_string));
    if let (Some(id), Ok(mut guard)) = (id, guard.lock()) {
        guard.active.remove(&id);
    }
}

/// async-graphql closes with 1002 for a refused `connection_init` and for a malformed message,
/// and with 1011 for an operation before the handshake; the protocol names 4403, 4400 and 4401.
fn protocol_close_code(code: u16, refused: bool) -> u16 {
    match code {
        1002 if refused => 4403,
        1002 => 4400,
        1011 => 4401,
        other => other,
    }
}

fn close_with(closing: &Closing, code: u16, reason: &str) {
    if let Ok(mut closing) = closing.lock()
        && closing.is_none()
    {
        *closing = Some((code, reason.to_string()));
    }
}

/// A close frame; its reason must fit in 123 bytes (cut at a character boundary).
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_frame_and_codes_follow_the_protocol() {
        let long = "é".repeat(100);
        assert!(close_frame(4400, &long).reason.len() <= 123);
        assert_eq!(protocol_close_code(1002, true), 4403);
        assert_eq!(protocol_close_code(1002, false), 4400);
        assert_eq!(protocol_close_code(1011, false), 4401);
        assert_eq!(protocol_close_code(1001, false), 1001);
    }
}
