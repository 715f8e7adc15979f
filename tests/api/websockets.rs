//! What one WebSocket client may cost: a bounded message size, a few seconds to send
//! `connection_init`, a bounded number of operations per socket, and the graphql-transport-ws
//! protocol's close codes for each refusal.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{TestApp, spawn_app_on};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const TOKEN: &str = "ws-test-token";

async fn locked_app() -> TestApp {
    let db = std::sync::Arc::new(crate::helpers::TestDb::new().await);
    spawn_app_on(db, |settings| settings.api_tokens = vec![TOKEN.into()]).await
}

async fn open(app: &TestApp) -> Socket {
    let mut request = format!("ws://{}/graphql/ws", app.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// Reads until the server closes; the close code, or None when the socket just ended.
async fn close_code(socket: &mut Socket, wait: Duration) -> Option<u16> {
    tokio::time::timeout(wait, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the server closes the socket")
}

/// The next JSON text message.
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn initialised(app: &TestApp) -> Socket {
    let mut socket = open(app).await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {TOKEN}") } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

#[tokio::test]
async fn a_socket_that_never_sends_connection_init_is_closed_with_4408() {
    let app = locked_app().await;
    let mut socket = open(&app).await;
    let started = Instant::now();
    assert_eq!(close_code(&mut socket, Duration::from_secs(15)).await, Some(4408));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "not before the few seconds it is given"
    );
}

#[tokio::test]
async fn an_oversized_message_closes_the_socket_before_it_is_read_whole() {
    let app = locked_app().await;
    let mut socket = open(&app).await;
    // 8 MiB in one message, without connection_init: refused at the first frame's header.
    let huge = format!(
        r#"{{"type":"connection_init","payload":{{"x":"{}"}}}}"#,
        "x".repeat(8 << 20)
    );
    let _ = socket.send(Message::Text(huge.into())).await;
    assert_eq!(close_code(&mut socket, Duration::from_secs(10)).await, Some(1009));
    // The server is fine and the next client is served.
    let mut next = initialised(&app).await;
    send(&mut next, json!({ "type": "ping" })).await;
    assert_eq!(next_json(&mut next).await["type"], "pong");
}

#[tokio::test]
async fn a_refused_token_is_4403_so_clients_can_retry_with_a_fresh_one() {
    let app = locked_app().await;
    let mut socket = open(&app).await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": "Bearer wrong" } }),
    )
    .await;
    assert_eq!(close_code(&mut socket, Duration::from_secs(5)).await, Some(4403));
}

#[tokio::test]
async fn operations_per_socket_are_capped_and_ids_cannot_be_reused() {
    let app = locked_app().await;
    let mut socket = initialised(&app).await;
    let subscription = json!({ "query": "subscription { deploymentEvents { status } }" });
    for id in 0..100 {
        send(
            &mut socket,
            json!({ "type": "subscribe", "id": id.to_string(), "payload": subscription }),
        )
        .await;
    }
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "one-too-many", "payload": subscription }),
    )
    .await;
    let refusal = next_json(&mut socket).await;
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert_eq!(refusal["id"], "one-too-many");
    assert_eq!(refusal["payload"][0]["extensions"]["code"], "TOO_MANY_OPERATIONS");
    // Completing one frees its place.
    send(&mut socket, json!({ "type": "complete", "id": "7" })).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "in-its-place", "payload": subscription }),
    )
    .await;
    send(&mut socket, json!({ "type": "ping" })).await;
    loop {
        let message = next_json(&mut socket).await;
        assert_ne!(
            message["type"], "error",
            "no refusal for the freed place: {message}"
        );
        if message["type"] == "pong" {
            break;
        }
    }
    // An id in use is a protocol error.
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "3", "payload": subscription }),
    )
    .await;
    assert_eq!(close_code(&mut socket, Duration::from_secs(5)).await, Some(4409));
}

#[tokio::test]
async fn an_operation_before_the_handshake_is_4401() {
    let app = locked_app().await;
    let mut socket = open(&app).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "1", "payload": { "query": "subscription { deploymentEvents { status } }" } }),
    )
    .await;
    assert_eq!(close_code(&mut socket, Duration::from_secs(5)).await, Some(4401));
}

#[tokio::test]
async fn typename_at_the_subscription_root_works_and_a_bad_operation_is_one_error() {
    let app = locked_app().await;
    let mut socket = initialised(&app).await;
    // Clients add `__typename` everywhere, the subscription's root included.
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "live", "payload": {
            "query": "subscription { __typename kind: __typename deploymentEvents { __typename deployment { externalId } } }" } }),
    )
    .await;
    // A document that does not validate: one `error` message (the protocol's answer to an
    // operation that cannot run), each error once, and no `complete` after it.
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "bad", "payload": { "query": "mutation { nothing }" } }),
    )
    .await;
    let refused = next_json(&mut socket).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "bad");
    let errors = refused["payload"].as_array().expect("a list of errors");
    assert_eq!(errors.len(), 1, "each error once: {refused}");
    assert_eq!(errors[0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    // A parse error: one line, its position in `locations`.
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "typo", "payload": { "query": "subscription { deploymentEvents { id }" } }),
    )
    .await;
    let typo = next_json(&mut socket).await;
    assert_eq!(typo["type"], "error", "{typo}");
    assert_eq!(typo["payload"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED");
    assert!(
        !typo["payload"][0]["message"].as_str().unwrap().contains('\n'),
        "{typo}"
    );
    assert_eq!(typo["payload"][0]["locations"][0]["column"], 39);

    tokio::time::sleep(Duration::from_millis(100)).await;
    app.client
        .post(app.url("/webhooks/generic"))
        .bearer_auth(crate::helpers::SECRET)
        .json(&crate::helpers::generic("t-1", "succeeded"))
        .send()
        .await
        .unwrap();
    let event = next_json(&mut socket).await;
    assert_eq!(
        event["type"], "next",
        "no `complete` for the refused operations: {event}"
    );
    assert_eq!(event["id"], "live");
    let data = &event["payload"]["data"];
    assert_eq!(data["__typename"], "SubscriptionRoot", "{event}");
    assert_eq!(data["kind"], "SubscriptionRoot", "{event}");
    assert_eq!(
        data["deploymentEvents"]["deployment"]["externalId"], "t-1",
        "{event}"
    );
    assert!(event["payload"].get("errors").is_none(), "{event}");
}
