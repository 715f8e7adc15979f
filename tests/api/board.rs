//! The board: what runs where, in the API and as a page served from the binary.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const BOARD: &str = "query($systems: [String!], $environments: [String!]) { board(systems: $systems, environments: $environments) {
    environments { name }
    rows { system { name } cells { environment { name }
        current { version status } inProgress { version status } lastFailure { version status } } } } }";

async fn deploy(
    app: &TestApp,
    id: &str,
    system: &str,
    environment: &str,
    status: &str,
    version: &str,
    at: &str,
) {
    app.deliver(json!({ "id": id, "system": system, "environment": environment, "status": status,
        "version": version, "startedAt": at, "finishedAt": if status == "running" { Value::Null } else { json!(at) } }))
        .await;
}

fn cell<'a>(board: &'a Value, system: &str, environment: &str) -> &'a Value {
    let row = board["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["system"]["name"] == system)
        .unwrap();
    row["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["environment"]["name"] == environment)
        .unwrap()
}

#[tokio::test]
async fn the_board_shows_current_in_progress_and_newer_failures_per_environment() {
    let app = spawn_app().await;
    deploy(
        &app,
        "1",
        "billing",
        "production",
        "succeeded",
        "1.0",
        "2026-01-01T10:00:00Z",
    )
    .await;
    deploy(
        &app,
        "2",
        "billing",
        "production",
        "failed",
        "1.1",
        "2026-01-02T10:00:00Z",
    )
    .await;
    deploy(
        &app,
        "3",
        "billing",
        "staging",
        "succeeded",
        "1.2",
        "2026-01-03T10:00:00Z",
    )
    .await;
    deploy(
        &app,
        "4",
        "billing",
        "staging",
        "running",
        "1.3",
        "2026-01-04T10:00:00Z",
    )
    .await;
    deploy(
        &app,
        "5",
        "search",
        "dev",
        "succeeded",
        "7",
        "2026-01-01T10:00:00Z",
    )
    .await;
    deploy(
        &app,
        "6",
        "search",
        "production",
        "failed",
        "6",
        "2025-12-01T10:00:00Z",
    )
    .await;
    deploy(
        &app,
        "7",
        "search",
        "production",
        "succeeded",
        "7",
        "2026-01-05T10:00:00Z",
    )
    .await;

    app.settle().await;
    let before = app.store.statements();
    let board = app.data(BOARD, json!({})).await["board"].clone();
    let cost = app.store.statements() - before;
    assert!(
        cost <= 4,
        "the board reads cells, not deployments: {cost} statements"
    );

    let columns: Vec<&str> = board["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["development", "staging", "production"],
        "ordered by tier"
    );
    let billing_prod = cell(&board, "billing", "production");
    assert_eq!(billing_prod["current"]["version"], "1.0");
    assert_eq!(
        billing_prod["lastFailure"]["version"], "1.1",
        "a failure after the current deployment shows"
    );
    let billing_staging = cell(&board, "billing", "staging");
    assert_eq!(billing_staging["current"]["version"], "1.2");
    assert_eq!(billing_staging["inProgress"]["version"], "1.3");
    let search_prod = cell(&board, "search", "production");
    assert_eq!(search_prod["current"]["version"], "7");
    assert_eq!(
        search_prod["lastFailure"],
        Value::Null,
        "an older failure does not show"
    );
    assert_eq!(cell(&board, "billing", "development")["current"], Value::Null);

    // The running deployment finishes: the cell moves on.
    deploy(
        &app,
        "4",
        "billing",
        "staging",
        "succeeded",
        "1.3",
        "2026-01-04T10:05:00Z",
    )
    .await;
    let board = app
        .data(
            BOARD,
            json!({ "systems": ["billing"], "environments": ["staging"] }),
        )
        .await["board"]
        .clone();
    assert_eq!(board["rows"].as_array().unwrap().len(), 1);
    let staging = cell(&board, "billing", "staging");
    assert_eq!(staging["current"]["version"], "1.3");
    assert_eq!(staging["inProgress"], Value::Null);
}

#[tokio::test]
async fn the_board_and_graphiql_are_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("graphql-transport-ws") && html.contains("board("),
        "the board page subscribes and queries"
    );
    let graphiql = app
        .client
        .get(app.url("/graphql"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in graphiql
        .lines()
        .filter(|l| l.contains("src=") || l.contains("href="))
    {
        assert!(
            !line.contains("https://") && !line.contains("http://"),
            "an external asset: {line}"
        );
    }
    for asset in [
        "graphiql.min.js",
        "graphiql.min.css",
        "react.production.min.js",
        "react-dom.production.min.js",
    ] {
        assert!(graphiql.contains(asset), "{asset} is linked");
        let response = app
            .client
            .get(app.url(&format!("/assets/graphiql/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(
            response.bytes().await.unwrap().len() > 5_000,
            "{asset} is the real file"
        );
    }
    assert_eq!(
        app.client
            .get(app.url("/assets/graphiql/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
