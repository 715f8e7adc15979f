//! Read access tokens, CORS and GraphQL limits.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Subscriber, TestDb, generic, spawn_app, spawn_app_on};

const TOKEN: &str = "read-token-1";

async fn locked_app() -> crate::helpers::TestApp {
    let db = std::sync::Arc::new(TestDb::new().await);
    spawn_app_on(db, |settings| {
        settings.api_tokens = vec![TOKEN.into(), "read-token-2".into()];
        settings.cors_origins = vec!["https://grafana.example.com".into()];
    })
    .await
}

#[tokio::test]
async fn with_api_tokens_nothing_is_readable_without_one() {
    let app = locked_app().await;
    app.deliver(generic("t-1", "succeeded")).await; // webhooks keep their own secrets
    let query = json!({ "query": "{ deployments { totalCount } }" });
    let anonymous = app
        .client
        .post(app.url("/graphql"))
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("SHIPLOG_API_TOKENS")
    );
    let wrong = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth("guess")
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let get = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ systemNames }")])
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 401);

    let bearer: Value = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(TOKEN)
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bearer["data"]["deployments"]["totalCount"], 1);
    let basic: Value = app
        .client
        .post(app.url("/graphql"))
        .basic_auth("grafana", Some("read-token-2"))
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        basic["data"]["deployments"]["totalCount"], 1,
        "Basic with the token as password"
    );

    // Pages and probes hold no data and stay open.
    for path in ["/", "/graphql", "/healthz", "/readyz"] {
        assert_eq!(
            app.client.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
}

#[tokio::test]
async fn websocket_clients_pass_the_token_in_connection_init() {
    let app = locked_app().await;
    let query = "subscription { deploymentEvents { status } }";
    // Without a token the connection is refused at init.
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/graphql/ws", app.address),
    )
    .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({ "type": "connection_init", "payload": {} })
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap();
    let reason = match answer {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => frame.reason.to_string(),
        other => panic!("expected a close frame, got {other:?}"),
    };
    assert!(
        reason.contains("SHIPLOG_API_TOKENS"),
        "the close says what to send: {reason}"
    );

    let mut subscriber = Subscriber::connect_with(
        app.address,
        "graphql-transport-ws",
        query,
        json!({}),
        json!({ "Authorization": format!("Bearer {TOKEN}") }),
    )
    .await;
    app.deliver(generic("t-2", "running")).await;
    let event = subscriber
        .next_event(Duration::from_secs(5))
        .await
        .expect("an event with the token");
    assert_eq!(event["deploymentEvents"]["status"], "RUNNING");
}

#[tokio::test]
async fn cors_allows_the_configured_origins_only() {
    let app = locked_app().await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization,content-type")
            .send()
    };
    let allowed = preflight("https://grafana.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://grafana.example.com"
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// The introspection query GraphiQL and Grafana's editors send (depth 13 through `ofType`).
const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } mutationType { name }
  subscriptionType { name } types { ...FullType } directives { name description locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description
  args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason } inputFields { ...InputValue }
  interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

#[tokio::test]
async fn limits_keep_introspection_working_and_refuse_abuse() {
    let app = spawn_app().await;
    let introspection = app.graphql(INTROSPECTION, json!({})).await;
    assert!(
        introspection.get("errors").is_none(),
        "GraphiQL's introspection passes the limits: {introspection}"
    );

    let batch: Vec<Value> = (0..17).map(|_| json!({ "query": "{ systemNames }" })).collect();
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BATCH_TOO_LARGE");
    let small: Vec<Value> = (0..3).map(|_| json!({ "query": "{ systemNames }" })).collect();
    let answers: Value = app
        .client
        .post(app.url("/graphql"))
        .json(&small)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answers.as_array().unwrap().len(), 3);

    let deep = format!(
        "{{ deployments {{ edges {{ node {{ {} }} }} }} }}",
        "events { deployment { ".repeat(8) + "id" + &" } }".repeat(8)
    );
    let refused = app.graphql(&deep, json!({})).await;
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("nested"),
        "{refused}"
    );
    assert_eq!(
        refused["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );

    let wide = format!(
        "{{ {} }}",
        (0..2100)
            .map(|i| format!("a{i}: systemNames"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let refused = app.graphql(&wide, json!({})).await;
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("complex"),
        "{refused}"
    );
}

#[tokio::test]
async fn one_noisy_sender_is_rate_limited_with_a_clear_429() {
    let db = std::sync::Arc::new(TestDb::new().await);
    let app = spawn_app_on(db, |settings| settings.webhook_rate_limit = 2.0).await; // bursts of 8
    let mut statuses = Vec::new();
    for i in 0..12 {
        let response = app.post_generic(&generic(&format!("rl-{i}"), "running")).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "rate_limited");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("SHIPLOG_WEBHOOK_RATE_LIMIT")
            );
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 8, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 4, "{statuses:?}");
}

#[tokio::test]
async fn metrics_and_request_ids_are_there_for_operators() {
    let app = spawn_app().await;
    app.deliver(generic("m-1", "running")).await;
    let refused = app
        .client
        .post(app.url("/webhooks/generic"))
        .json(&generic("m-2", "running"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        refused.headers().contains_key("x-request-id"),
        "every answer carries a request id"
    );
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        echoed.headers()["x-request-id"],
        "abc-123",
        "a client's id is kept"
    );
    app.data("{ systemNames }", json!({})).await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "shiplog_deliveries_total{source=\"generic\",outcome=\"accepted\"}",
        "shiplog_deliveries_total{source=\"generic\",outcome=\"unauthorized\"}",
        "shiplog_delivery_seconds_bucket",
        "shiplog_graphql_seconds_bucket",
        "shiplog_deliveries_pending",
        "shiplog_deliveries_failed",
        "shiplog_live_subscribers",
        "shiplog_ingest_batches_total",
        "shiplog_ingest_batched_deliveries_total",
        "shiplog_ingest_batch_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }
    let locked = locked_app().await;
    assert_eq!(
        locked
            .client
            .get(locked.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        locked
            .client
            .get(locked.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn hostile_bodies_get_a_4xx_never_a_500() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let nested = app
        .client
        .post(app.url("/webhooks/generic"))
        .bearer_auth(crate::helpers::SECRET)
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(nested.status(), 400);
    let huge_graphql = json!({ "query": format!("{{ systemNames }} #{}", "x".repeat(2 * 1024 * 1024)) });
    let too_big = app
        .client
        .post(app.url("/graphql"))
        .json(&huge_graphql)
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    let wrong_type = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "text/plain")
        .body("{ systemNames }")
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong_type.status(),
        415,
        "a query must be sent as JSON (or in the URL)"
    );
    let garbage = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let bad_utf8 = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_utf8.status(), 400);
}
