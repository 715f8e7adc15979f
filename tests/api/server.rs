//! The server as a process: probes, GraphiQL, graceful shutdown, restarts.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Subscriber, generic, spawn_app, spawn_app_on};

#[tokio::test]
async fn health_and_readiness_probes_answer() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn graphiql_is_served_and_wired_to_the_subscription_endpoint() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("graphiql"), "GraphiQL page");
    assert!(html.contains("/graphql/ws"), "names the subscription endpoint");
}

#[tokio::test]
async fn a_graceful_stop_closes_subscribers_properly_and_keeps_every_delivery() {
    let app = spawn_app().await;
    let db = app.db.clone();
    let mut subscriber = Subscriber::connect(
        app.address,
        "graphql-transport-ws",
        "subscription { deploymentEvents { status } }",
        json!({}),
    )
    .await;
    for i in 0..20 {
        app.deliver(generic(&format!("stop-{i}"), "succeeded")).await;
    }
    app.stop().await;
    // Skip the events, then expect a close frame with "going away".
    let code = subscriber.closed(Duration::from_secs(5)).await;
    assert_eq!(code, Some(1001));

    let restarted = spawn_app_on(db, |_| {}).await;
    let data = restarted
        .data("{ deployments(first: 100) { totalCount } }", json!({}))
        .await;
    assert_eq!(data["deployments"]["totalCount"], 20);
}

#[tokio::test]
async fn a_generated_secret_is_stored_once_and_reused_after_a_restart() {
    let db = std::sync::Arc::new(crate::helpers::TestDb::new().await);
    let first = spawn_app_on(db.clone(), |settings| {
        settings.secrets.remove("generic");
    })
    .await;
    let stored = first
        .store
        .setting("secret.generic")
        .await
        .unwrap()
        .expect("a generated secret");
    assert!(stored.len() >= 32);
    let accepted = first
        .client
        .post(first.url("/webhooks/generic"))
        .bearer_auth(&stored)
        .json(&generic("sec-1", "running"))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    first.stop().await;
    let second = spawn_app_on(db, |settings| {
        settings.secrets.remove("generic");
    })
    .await;
    assert_eq!(
        second.store.setting("secret.generic").await.unwrap(),
        Some(stored)
    );
}
