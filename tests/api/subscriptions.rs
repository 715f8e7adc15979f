//! Live events over WebSocket, in both protocols.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Subscriber, generic, spawn_app};

const EVENTS: &str = "subscription($filter: DeploymentFilter) { deploymentEvents(filter: $filter) {
    status previousStatus occurredAt deployment { externalId status system { name } environment { name } } } }";

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);

#[tokio::test]
async fn a_subscriber_receives_the_event_posted_afterwards() {
    let app = spawn_app().await;
    let mut everything = app.subscribe(EVENTS, json!({})).await;
    let mut search_only = app
        .subscribe(EVENTS, json!({ "filter": { "systems": ["search"] } }))
        .await;
    let mut failures = app
        .subscribe(EVENTS, json!({ "filter": { "statuses": ["FAILED"] } }))
        .await;

    app.deliver(generic("live-1", "running")).await;
    let event = everything.next_event(WAIT).await.expect("an event");
    let event = &event["deploymentEvents"];
    assert_eq!(event["status"], "RUNNING");
    assert_eq!(event["previousStatus"], serde_json::Value::Null);
    assert_eq!(event["deployment"]["externalId"], "live-1");
    assert_eq!(event["deployment"]["system"]["name"], "billing");
    assert_eq!(event["deployment"]["environment"]["name"], "production");

    app.deliver(generic("live-1", "failed")).await;
    let event = everything.next_event(WAIT).await.expect("the second event");
    assert_eq!(event["deploymentEvents"]["previousStatus"], "RUNNING");
    let failed = failures.next_event(WAIT).await.expect("the failure");
    assert_eq!(failed["deploymentEvents"]["deployment"]["status"], "FAILED");

    let mut search = generic("live-2", "succeeded");
    search["system"] = json!("search");
    app.deliver(search).await;
    let event = search_only.next_event(WAIT).await.expect("the search event");
    assert_eq!(event["deploymentEvents"]["deployment"]["externalId"], "live-2");
    assert!(
        search_only.next_event(QUIET).await.is_none(),
        "billing events were filtered out"
    );
    assert!(
        failures.next_event(QUIET).await.is_none(),
        "only the failure matched"
    );
}

#[tokio::test]
async fn a_redelivery_publishes_no_second_event() {
    let app = spawn_app().await;
    let mut subscriber = app.subscribe(EVENTS, json!({})).await;
    let body = generic("live-3", "succeeded");
    app.deliver(body.clone()).await;
    assert!(subscriber.next_event(WAIT).await.is_some());
    app.deliver(body).await;
    assert!(subscriber.next_event(QUIET).await.is_none());
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_works_too() {
    let app = spawn_app().await;
    let mut subscriber = Subscriber::connect(app.address, "graphql-ws", EVENTS, json!({})).await;
    while app.hub.subscribers() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.deliver(generic("live-4", "queued")).await;
    let event = subscriber
        .next_event(WAIT)
        .await
        .expect("an event over graphql-ws");
    assert_eq!(event["deploymentEvents"]["status"], "QUEUED");
}
