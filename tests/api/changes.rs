//! What a deployment changed: the deployment it replaced, rollbacks (by history and by the
//! tool's own word), the compare link, and DORA counting what a rollback undid.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, spawn_app_on};

async fn ship(app: &TestApp, id: &str, version: &str, sha: &str, finished: &str) {
    app.deliver(
        json!({ "id": id, "system": "billing", "environment": "production", "status": "succeeded",
        "version": version, "commitSha": sha, "finishedAt": finished }),
    )
    .await;
}

const HISTORY: &str = "{ deployments(filter: { systems: [\"billing\"] }, first: 10) { nodes {
    externalId isRollback compareUrl previousDeployment { version } rolledBackFrom { version } } } }";

fn by_id<'a>(data: &'a Value, id: &str) -> &'a Value {
    data["deployments"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["externalId"] == id)
        .unwrap()
}

#[tokio::test]
async fn a_rollback_is_told_from_history_and_dora_counts_what_it_undid() {
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db, |s| {
        let parsed =
            shiplog::config::Settings::from_toml("[systems.billing]\nrepository = \"github:acme/billing\"\n")
                .unwrap();
        s.systems = parsed.systems;
        s.checked_catalog = parsed.checked_catalog;
    })
    .await;
    ship(&app, "d-1", "1.0", "aaaaaaa1", "2026-11-02T10:00:00Z").await;
    ship(&app, "d-2", "1.1", "bbbbbbb2", "2026-11-02T11:00:00Z").await;
    // 1.1 broke something: 1.0 goes back out 30 minutes later.
    ship(&app, "d-3", "1.0", "aaaaaaa1", "2026-11-02T11:30:00Z").await;
    // The same version again is a redeploy.
    ship(&app, "d-4", "1.0", "aaaaaaa1", "2026-11-02T12:00:00Z").await;
    ship(&app, "d-5", "1.2", "ccccccc3", "2026-11-02T13:00:00Z").await;
    let data = app.data(HISTORY, json!({})).await;
    let d3 = by_id(&data, "d-3");
    assert_eq!(
        d3,
        &json!({ "externalId": "d-3", "isRollback": true, "previousDeployment": { "version": "1.1" },
                 "rolledBackFrom": { "version": "1.1" },
                 "compareUrl": "https://github.com/acme/billing/compare/bbbbbbb2...aaaaaaa1" })
    );
    assert_eq!(by_id(&data, "d-4")["isRollback"], false, "a redeploy");
    assert_eq!(
        by_id(&data, "d-4")["compareUrl"],
        Value::Null,
        "nothing between the same commit"
    );
    assert_eq!(by_id(&data, "d-5")["isRollback"], false);
    assert_eq!(by_id(&data, "d-1")["previousDeployment"], Value::Null);

    let dora = app
        .data(
            r#"{ doraMetrics(from: "2026-11-01T00:00:00Z", to: "2026-11-08T00:00:00Z", groupBy: []) {
                rollbacks rolledBackChanges failedChanges changeFailureRate recoveries medianTimeToRecoverySeconds } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        dora["doraMetrics"][0],
        json!({ "rollbacks": 1, "rolledBackChanges": 1, "failedChanges": 1, "changeFailureRate": 0.2,
                "recoveries": 1, "medianTimeToRecoverySeconds": 1800.0 })
    );
    app.stop().await;
}

#[tokio::test]
async fn the_tools_own_word_for_a_rollback_counts() {
    let app = spawn_app_on(Arc::new(TestDb::new().await), |_| {}).await;
    // The spec's examples share one context id (one deployment): what ran before comes from
    // the generic webhook, a day earlier, under the same names.
    app.deliver(
        json!({ "id": "before", "system": "mySubject123", "environment": "test123", "status": "succeeded",
        "version": "0.9", "finishedAt": "2023-03-19T14:27:05Z" }),
    )
    .await;
    crate::contract::send_fixture(&app, "cdevents", "service_rolledback.v0.5.1.json").await;
    let data = app
        .data(
            "{ deployments { nodes { rawStatus isRollback tags { key value } rolledBackFrom { version } } } }",
            json!({}),
        )
        .await;
    let rolled = data["deployments"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["rawStatus"] == "rolledback")
        .expect("the rolledback event is a deployment")
        .clone();
    assert_eq!(rolled["tags"], json!([{ "key": "rollback", "value": "true" }]));
    assert_eq!(
        (&rolled["isRollback"], &rolled["rolledBackFrom"]),
        (&json!(true), &json!({ "version": "0.9" })),
        "{data}"
    );
    app.stop().await;
}

async fn ship_to(app: &TestApp, id: &str, environment: &str, (version, sha): (&str, &str), finished: &str) {
    app.deliver(
        json!({ "id": id, "system": "billing", "environment": environment, "status": "succeeded",
        "version": version, "commitSha": sha, "finishedAt": finished }),
    )
    .await;
}

#[tokio::test]
async fn drift_tells_what_staging_runs_that_production_waits_for() {
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        let parsed =
            shiplog::config::Settings::from_toml("[systems.billing]\nrepository = \"gitlab:acme/billing\"\n")
                .unwrap();
        s.systems = parsed.systems;
        s.checked_catalog = parsed.checked_catalog;
    })
    .await;
    ship_to(
        &app,
        "s-1",
        "staging",
        ("1.0", "aaaaaaa1"),
        "2026-11-02T09:00:00Z",
    )
    .await;
    ship_to(
        &app,
        "p-1",
        "production",
        ("1.0", "aaaaaaa1"),
        "2026-11-02T10:00:00Z",
    )
    .await;
    ship_to(
        &app,
        "s-2",
        "staging",
        ("1.1", "bbbbbbb2"),
        "2026-11-03T09:00:00Z",
    )
    .await;
    ship_to(
        &app,
        "s-3",
        "staging",
        ("1.2", "ccccccc3"),
        "2026-11-04T09:00:00Z",
    )
    .await;
    let query = "{ system(name: \"billing\") { drift(from: \"staging\", to: \"production\") {
        inSync deploymentsWaiting waitingSince compareUrl fromDeployment { version } toDeployment { version } } } }";
    let data = app.data(query, json!({})).await;
    assert_eq!(
        data["system"]["drift"],
        json!({ "inSync": false, "deploymentsWaiting": 2, "waitingSince": "2026-11-03T09:00:00.000Z",
                "compareUrl": "https://gitlab.com/acme/billing/-/compare/aaaaaaa1...ccccccc3",
                "fromDeployment": { "version": "1.2" }, "toDeployment": { "version": "1.0" } })
    );
    ship_to(
        &app,
        "p-2",
        "production",
        ("1.2", "ccccccc3"),
        "2026-11-05T10:00:00Z",
    )
    .await;
    let data = app.data(query, json!({})).await;
    let drift = &data["system"]["drift"];
    assert_eq!(
        (
            &drift["inSync"],
            &drift["deploymentsWaiting"],
            &drift["compareUrl"]
        ),
        (&json!(true), &Value::Null, &Value::Null)
    );
    let unknown = app
        .graphql(
            "{ system(name: \"billing\") { drift(from: \"staging\", to: \"prod-eu\") { inSync } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{unknown}"
    );
    assert!(
        unknown["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("prod-eu")
    );
    app.stop().await;
}
