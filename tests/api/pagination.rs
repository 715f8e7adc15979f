//! Relay pagination over 250 deployments, forward and backward, with no gap or repeat.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::spawn_app;

const PAGE: &str = "query($first: Int, $after: String, $last: Int, $before: String) {
    deployments(first: $first, after: $after, last: $last, before: $before) {
        edges { cursor node { externalId deployedAt } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";

#[tokio::test]
async fn pages_walk_250_deployments_forward_and_backward_without_gaps_or_repeats() {
    let app = spawn_app().await;
    // Some share a time, so the id must break ties for the order to be total.
    let posts = (0..250).map(|i| {
        let body = json!({
            "id": format!("p-{i:03}"), "system": "billing", "environment": "production",
            "status": "succeeded", "finishedAt": 1_767_225_600_000_i64 + (i / 3) * 60_000
        });
        let app = &app;
        async move { app.deliver(body).await }
    });
    futures_util::future::join_all(posts).await;

    let mut forward: Vec<(String, String)> = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app.data(PAGE, json!({ "first": 40, "after": after })).await;
        let connection = &data["deployments"];
        for edge in connection["edges"].as_array().unwrap() {
            forward.push((
                edge["node"]["deployedAt"].as_str().unwrap().to_string(),
                edge["node"]["externalId"].as_str().unwrap().to_string(),
            ));
        }
        if !connection["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(forward.len(), 250);
    assert_eq!(
        forward.iter().map(|(_, id)| id).collect::<HashSet<_>>().len(),
        250
    );
    assert!(forward.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");

    let mut backward: Vec<String> = Vec::new();
    let mut before = Value::Null;
    loop {
        let data = app.data(PAGE, json!({ "last": 40, "before": before })).await;
        let connection = &data["deployments"];
        let page: Vec<String> = connection["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["externalId"].as_str().unwrap().to_string())
            .collect();
        backward.splice(0..0, page);
        if !connection["pageInfo"]["hasPreviousPage"].as_bool().unwrap() {
            break;
        }
        before = connection["pageInfo"]["startCursor"].clone();
    }
    let forward_ids: Vec<String> = forward.into_iter().map(|(_, id)| id).collect();
    assert_eq!(backward, forward_ids, "backward paging sees the same order");
}

#[tokio::test]
async fn a_new_deployment_does_not_shift_the_pages_after_a_cursor() {
    let app = spawn_app().await;
    for i in 0..10 {
        app.deliver(
            json!({ "id": format!("q-{i}"), "system": "s", "environment": "e", "status": "succeeded",
            "finishedAt": 1_767_225_600_000_i64 + i * 1000 }),
        )
        .await;
    }
    let first = app.data(PAGE, json!({ "first": 5 })).await;
    let cursor = first["deployments"]["pageInfo"]["endCursor"].clone();
    app.deliver(
        json!({ "id": "q-new", "system": "s", "environment": "e", "status": "succeeded",
        "finishedAt": 1_767_225_700_000_i64 }),
    )
    .await;
    let second = app.data(PAGE, json!({ "first": 5, "after": cursor })).await;
    let ids: Vec<&str> = second["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["externalId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["q-4", "q-3", "q-2", "q-1", "q-0"]);
    let garbage = app
        .graphql(PAGE, json!({ "first": 5, "after": "not-a-cursor" }))
        .await;
    assert!(
        garbage["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cursor"),
        "{garbage}"
    );
}
