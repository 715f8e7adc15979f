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

    // The statement counter is the whole process's, so a background poll (the enrichment and
    // commits workers) can land in one measurement: the fewest of three is the board's cost.
    let mut cost = u64::MAX;
    let mut board = Value::Null;
    for _ in 0..3 {
        app.settle().await;
        let before = app.store.statements();
        board = app.data(BOARD, json!({})).await["board"].clone();
        cost = cost.min(app.store.statements() - before);
    }
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

#[tokio::test]
async fn review_apps_share_one_column_and_a_quiet_one_leaves_the_board() {
    let app = spawn_app().await;
    let now = chrono::Utc::now();
    let days_ago = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339();
    deploy(
        &app,
        "p-1",
        "billing",
        "production",
        "succeeded",
        "1.0",
        &days_ago(40),
    )
    .await;
    deploy(
        &app,
        "r-1",
        "billing",
        "review/feature-x",
        "succeeded",
        "pr-1",
        &days_ago(1),
    )
    .await;
    deploy(
        &app,
        "r-2",
        "billing",
        "review/feature-y",
        "succeeded",
        "pr-2",
        &days_ago(2),
    )
    .await;
    // Nothing deployed to it for 9 days: stopped after the default 7.
    deploy(
        &app,
        "r-3",
        "billing",
        "review/old",
        "succeeded",
        "pr-0",
        &days_ago(9),
    )
    .await;
    deploy(
        &app,
        "r-4",
        "search",
        "review/old-search",
        "succeeded",
        "pr-9",
        &days_ago(20),
    )
    .await;
    // GitLab's deployment event carries the environment's URL and tier.
    crate::contract::send_fixture(&app, "gitlab", "deployment_success.json").await;
    let query = "query($stopped: Boolean!) { board(includeStopped: $stopped) {
        environments { name } ephemeralEnvironments { name }
        rows { system { name } cells { environment { name } } ephemeralCells { environment { name } current { version } } } }
      staging: environment(name: \"staging\") { tier url lastDeployedAt ephemeral stopped }
      old: environment(name: \"review/old\") { ephemeral stopped } }";
    let data = app.data(query, json!({ "stopped": false })).await;
    let board = &data["board"];
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&board["environments"]), ["staging", "production"]);
    assert_eq!(
        names(&board["ephemeralEnvironments"]),
        ["review/feature-x", "review/feature-y"],
        "newest first; the quiet ones left"
    );
    let systems: Vec<&str> = board["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["system"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        ["billing", "root/test-deployment-webhooks"],
        "search had only a stopped review app"
    );
    assert_eq!(
        board["rows"][0]["ephemeralCells"],
        json!([{ "environment": { "name": "review/feature-x" }, "current": { "version": "pr-1" } },
               { "environment": { "name": "review/feature-y" }, "current": { "version": "pr-2" } }])
    );
    assert_eq!(board["rows"][0]["cells"].as_array().unwrap().len(), 2);
    assert_eq!(
        (
            &data["staging"]["tier"],
            &data["staging"]["url"],
            &data["staging"]["ephemeral"],
            &data["staging"]["stopped"]
        ),
        (
            &json!("staging"),
            &json!("https://staging.example.com"),
            &json!(false),
            &json!(false)
        )
    );
    assert!(data["staging"]["lastDeployedAt"].is_string());
    assert_eq!(data["old"], json!({ "ephemeral": true, "stopped": true }));

    let everything = app.data(query, json!({ "stopped": true })).await;
    assert_eq!(
        names(&everything["board"]["ephemeralEnvironments"]),
        [
            "review/feature-x",
            "review/feature-y",
            "review/old",
            "review/old-search"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_deployment_the_tool_renames_leaves_its_old_cell() {
    let app = spawn_app().await;
    deploy(
        &app,
        "d-1",
        "billing",
        "production",
        "succeeded",
        "1.0",
        "2026-11-02T10:00:00Z",
    )
    .await;
    deploy(
        &app,
        "d-2",
        "billing",
        "staging",
        "succeeded",
        "1.0",
        "2026-11-02T10:00:00Z",
    )
    .await;
    // The tool reports d-1 again, later, under the environment's new name.
    deploy(
        &app,
        "d-1",
        "billing",
        "prod-eu",
        "succeeded",
        "1.0",
        "2026-11-02T11:00:00Z",
    )
    .await;
    let board = app.data(BOARD, json!({})).await["board"].clone();
    let cells: Vec<&str> = board["rows"][0]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["current"].is_null())
        .map(|c| c["environment"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cells,
        ["staging", "prod-eu"],
        "production no longer runs d-1: {board}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_environment_its_tool_stopped_leaves_the_board_until_the_next_deployment() {
    // The fixtures are years old: idleness alone would stop every environment here.
    let app = crate::helpers::spawn_app_on(std::sync::Arc::new(crate::helpers::TestDb::new().await), |s| {
        s.environments.ephemeral_stopped_after_days = 0
    })
    .await;
    // GitLab's review app and GitHub's transient pr-42, each deployed before their tool stops them.
    let gitlab = "root/test-deployment-webhooks";
    deploy(
        &app,
        "g-1",
        gitlab,
        "production",
        "succeeded",
        "1.0",
        "2021-04-28T18:00:00Z",
    )
    .await;
    deploy(
        &app,
        "g-2",
        gitlab,
        "review/feature-x",
        "succeeded",
        "mr-1",
        "2021-04-28T19:00:00Z",
    )
    .await;
    deploy(
        &app,
        "h-1",
        "Codertocat/Hello-World",
        "pr-42",
        "succeeded",
        "pr-42",
        "2019-05-15T15:00:00Z",
    )
    .await;
    let query = "query($stopped: Boolean!) { board(includeStopped: $stopped) { environments { name } ephemeralEnvironments { name } }
      review: environment(name: \"review/feature-x\") { stopped stoppedAt }
      pr: environment(name: \"pr-42\") { stopped stoppedAt } }";
    let columns = |data: &Value| -> Vec<String> {
        let board = &data["board"];
        ["environments", "ephemeralEnvironments"]
            .iter()
            .flat_map(|list| board[list].as_array().unwrap().clone())
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    let before = app.data(query, json!({ "stopped": false })).await;
    assert_eq!(columns(&before), ["production", "pr-42", "review/feature-x"]);
    assert_eq!(before["review"], json!({ "stopped": false, "stoppedAt": null }));

    // A running stop job stops nothing; the finished one does.
    crate::contract::send_fixture(&app, "gitlab", "job_stop_environment.json").await;
    let running = app.data(query, json!({ "stopped": false })).await;
    assert_eq!(running["review"]["stopped"], false, "{running}");
    crate::contract::send_fixture(&app, "gitlab", "job_stop_environment_success.derived.json").await;
    // GitHub: `inactive` on a lasting environment is only "replaced"; on a transient one, gone.
    crate::contract::send_fixture(
        &app,
        "github",
        "deployment_status_created_inactive_transient.derived.json",
    )
    .await;
    let after = app.data(query, json!({ "stopped": false })).await;
    assert_eq!(columns(&after), ["production"], "{after}");
    assert_eq!(
        after["review"],
        json!({ "stopped": true, "stoppedAt": "2021-04-28T19:45:10.500Z" })
    );
    assert_eq!(after["pr"]["stopped"], true);
    let everything = app.data(query, json!({ "stopped": true })).await;
    assert_eq!(columns(&everything), ["production", "pr-42", "review/feature-x"]);

    // Deployed to again: started again, the stop kept for the record.
    deploy(
        &app,
        "g-3",
        gitlab,
        "review/feature-x",
        "succeeded",
        "mr-2",
        "2021-04-29T09:00:00Z",
    )
    .await;
    let again = app.data(query, json!({ "stopped": false })).await;
    assert_eq!(columns(&again), ["production", "review/feature-x"], "{again}");
    assert_eq!(again["review"]["stopped"], false);
    app.stop().await;
}
