//! The write API: `recordDeployment` with a write token, journaled like a delivery (replay
//! reproduces it), published to subscribers; refused without one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, spawn_app_on};

const RECORD: &str = "mutation($input: RecordDeploymentInput!) { recordDeployment(input: $input) {
    deliveryId outcome deployment { externalId status source discoveredBy version commitSha
      system { name } environment { name } } } }";

fn hotfix() -> Value {
    json!({ "input": { "id": "hotfix-7", "system": "billing-api", "environment": "prod",
        "status": "SUCCEEDED", "version": "1.4.3", "commitSha": "9f86d081884c7d65",
        "finishedAt": "2026-11-30T07:00:00Z", "actor": "alice" } })
}

async fn post(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn answer(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> Value {
    let response = post(app, token, query, variables).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn error_code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

#[tokio::test]
async fn a_recorded_deployment_is_journaled_published_and_replayed() {
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |s| s.write_tokens = vec!["write-1".into()]).await;
    let mut live = app
        .subscribe(
            "subscription { deploymentEvents { status deployment { externalId discoveredBy } } }",
            json!({}),
        )
        .await;
    let recorded = answer(&app, Some("write-1"), RECORD, hotfix()).await;
    let done = &recorded["data"]["recordDeployment"];
    assert_eq!(done["outcome"], "accepted", "{recorded}");
    assert_eq!(
        done["deployment"],
        json!({ "externalId": "hotfix-7", "status": "SUCCEEDED", "source": "generic", "discoveredBy": "API",
                "version": "1.4.3", "commitSha": "9f86d081884c7d65",
                "system": { "name": "billing-api" }, "environment": { "name": "production" } })
    );
    let event = live
        .next_event(Duration::from_secs(5))
        .await
        .expect("a live event");
    assert_eq!(
        event["deploymentEvents"],
        json!({ "status": "SUCCEEDED", "deployment": { "externalId": "hotfix-7", "discoveredBy": "API" } })
    );
    let delivery = app
        .data(
            "query($id: ID!) { delivery(id: $id) { kind recordedBy source body } }",
            json!({ "id": done["deliveryId"] }),
        )
        .await;
    let delivery = &delivery["delivery"];
    assert_eq!(
        (&delivery["kind"], &delivery["source"]),
        (&json!("API"), &json!("generic"))
    );
    let recorded_by = delivery["recordedBy"].as_str().unwrap();
    assert!(
        recorded_by.starts_with("token:") && !recorded_by.contains("write-1"),
        "{recorded_by}"
    );
    assert!(delivery["body"].as_str().unwrap().contains("\"actor\":\"alice\""));

    // The same record again changes nothing.
    let again = answer(&app, Some("write-1"), RECORD, hotfix()).await;
    assert_eq!(again["data"]["recordDeployment"]["outcome"], "duplicate");
    assert_eq!(
        again["data"]["recordDeployment"]["deployment"]["externalId"],
        "hotfix-7"
    );
    // A later state of the same deployment updates it, by the webhook's rules.
    let mut late = hotfix();
    late["input"]["status"] = json!("RUNNING");
    answer(&app, Some("write-1"), RECORD, late).await;
    let data = app
        .data("{ deployments { totalCount nodes { status } } }", json!({}))
        .await;
    assert_eq!(
        data["deployments"],
        json!({ "totalCount": 1, "nodes": [{ "status": "SUCCEEDED" }] }),
        "a late RUNNING never overwrites SUCCEEDED"
    );
    app.stop().await;

    // Replay re-reads the journaled mutation like any delivery: a new alias moves it.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, "[systems.billing]\naliases = [\"billing-api\"]\n").unwrap();
    let moved = crate::replay::replay(&db, &config);
    assert!(moved.contains("1 deployments moved"), "{moved}");
}

#[tokio::test]
async fn bad_input_is_refused_naming_each_problem_and_writes_nothing() {
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        s.write_tokens = vec!["write-1".into()]
    })
    .await;
    let mut bad = hotfix();
    bad["input"]["system"] = json!(" ");
    bad["input"]["commitSha"] = json!("not-a-sha");
    let refused = answer(&app, Some("write-1"), RECORD, bad).await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("`system`") && message.contains("`commitSha`"),
        "{message}"
    );
    let data = app
        .data(
            "{ deployments { totalCount } failed: deliveries(state: FAILED) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(data, json!({ "deployments": { "totalCount": 0 }, "failed": [] }));
    let over_get = app
        .client
        .get(app.url("/graphql"))
        .query(&[(
            "query",
            "mutation { recordDeployment(input: {id: \"g\", system: \"a\", environment: \"b\", status: SUCCEEDED}) { outcome } }",
        )])
        .bearer_auth("write-1")
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .unwrap();
    assert_eq!(over_get.status(), 405);
    app.stop().await;
}

#[tokio::test]
async fn only_a_write_token_writes() {
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        s.api_tokens = vec!["read-1".into()];
        s.write_tokens = vec!["write-1".into()];
    })
    .await;
    let read = answer(&app, Some("read-1"), RECORD, hotfix()).await;
    assert_eq!(error_code(&read), "FORBIDDEN", "{read}");
    assert!(
        read["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("SHIPLOG_WRITE_TOKENS")
    );
    assert_eq!(post(&app, None, RECORD, hotfix()).await.status(), 401);
    assert_eq!(post(&app, Some("write-2"), RECORD, hotfix()).await.status(), 401);
    // A write token reads too.
    let written = answer(&app, Some("write-1"), RECORD, hotfix()).await;
    assert_eq!(written["data"]["recordDeployment"]["outcome"], "accepted");
    let listed = answer(&app, Some("write-1"), "{ deployments { totalCount } }", json!({})).await;
    assert_eq!(listed["data"]["deployments"]["totalCount"], 1);
    app.stop().await;

    // With no write token configured, no token writes, whatever it is.
    let open = spawn_app_on(Arc::new(TestDb::new().await), |_| {}).await;
    for token in [None, Some("write-1"), Some("")] {
        let refused = answer(&open, token, RECORD, hotfix()).await;
        assert_eq!(error_code(&refused), "FORBIDDEN", "{token:?}: {refused}");
    }
    open.stop().await;
}

#[tokio::test]
async fn a_webhook_cannot_pass_itself_off_as_the_write_api() {
    let app = spawn_app_on(Arc::new(TestDb::new().await), |_| {}).await;
    for (header, value) in [
        ("x-shiplog-writer", "token:0123456789ab"),
        ("x-shiplog-kind", "api"),
    ] {
        let response = app
            .client
            .post(app.url("/webhooks/generic"))
            .bearer_auth(crate::helpers::SECRET)
            .header(header, value)
            .json(&crate::helpers::generic("spoofed", "succeeded"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{header}");
        let text = response.text().await.unwrap();
        assert!(text.contains(header), "{text}");
    }
    let data = app.data("{ deployments { totalCount } }", json!({})).await;
    assert_eq!(data["deployments"]["totalCount"], 0);
    app.stop().await;
}
