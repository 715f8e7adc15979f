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

const ANNOTATE: &str = "mutation($id: ID!, $tags: [TagInput!]!, $note: String) {
    annotateDeployment(id: $id, tags: $tags, note: $note) { deliveryId deployment { tags { key value } note } } }";

fn tagged(data: &Value) -> Vec<String> {
    data["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t["key"].as_str().unwrap(), t["value"].as_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn tags_come_from_payloads_and_annotations_and_filter_every_read_path() {
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |s| s.write_tokens = vec!["write-1".into()]).await;
    let mut body = crate::helpers::generic("r-1", "succeeded");
    body["tags"] = json!({ "region": "eu", "release-train": 42 });
    body["description"] = json!("Hotfix for INV-12");
    app.deliver(body).await;
    crate::contract::send_fixture(&app, "github", "workflow_run_completed_deploy.derived.json").await;
    let window = r#"from: "2000-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z""#;
    let query = format!(
        "{{ eu: deployments(filter: {{ tags: [\"region:eu\"] }}) {{ totalCount nodes {{ id tags {{ key value }} note }} }}
            upper: deployments(filter: {{ tags: [\"region:EU\"] }}) {{ totalCount }}
            workflow: deployments(filter: {{ tags: [\"workflow:Deploy to production\"] }}) {{ totalCount }}
            list: deploymentList({window}, tags: [\"region:eu\"]) {{ tags note }}
            annotations: deploymentAnnotations({window}, tags: [\"release-train:42\"]) {{ tags text }}
            frequency: deploymentFrequency({window}, interval: WEEK, tags: [\"region:eu\"]) {{ count }} }}"
    );
    let data = app.data(&query, json!({})).await;
    assert_eq!(data["eu"]["totalCount"], 1);
    let node = &data["eu"]["nodes"][0];
    assert_eq!(tagged(node), ["region:eu", "release-train:42"]);
    assert_eq!(node["note"], "Hotfix for INV-12");
    assert_eq!(
        data["upper"]["totalCount"], 0,
        "tags match exactly, on both backends"
    );
    assert_eq!(
        data["workflow"]["totalCount"], 1,
        "GitHub's workflow name is a tag"
    );
    assert_eq!(
        data["list"],
        json!([{ "tags": "region:eu,release-train:42", "note": "Hotfix for INV-12" }])
    );
    let annotation = &data["annotations"][0];
    assert!(
        annotation["tags"]
            .as_str()
            .unwrap()
            .ends_with(",region:eu,release-train:42")
    );
    assert!(annotation["text"].as_str().unwrap().contains("Hotfix for INV-12"));
    let weekly: i64 = data["frequency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .sum();
    assert_eq!(weekly, 1);
    let refused = app
        .graphql(
            "{ deployments(filter: { tags: [\"region\"] }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");

    // People move it to another region and drop a tag; subscribers to the new tag hear it.
    let id = node["id"].clone();
    let mut moved = app
        .subscribe(
            "subscription { deploymentEvents(filter: { tags: [\"region:us\"] }) { deployment { externalId note } } }",
            json!({}),
        )
        .await;
    let tags = json!([{ "key": "region", "value": "us" }, { "key": "release-train", "value": null }]);
    let annotated = answer(
        &app,
        Some("write-1"),
        ANNOTATE,
        json!({ "id": id, "tags": tags, "note": "moved to us-east" }),
    )
    .await;
    let done = &annotated["data"]["annotateDeployment"];
    assert_eq!(tagged(&done["deployment"]), ["region:us"], "{annotated}");
    assert_eq!(done["deployment"]["note"], "moved to us-east");
    let event = moved
        .next_event(Duration::from_secs(5))
        .await
        .expect("the annotation's event");
    assert_eq!(
        event["deploymentEvents"]["deployment"],
        json!({ "externalId": "r-1", "note": "moved to us-east" })
    );
    let journaled = app
        .data(
            "query($id: ID!) { delivery(id: $id) { source kind recordedBy body } }",
            json!({ "id": done["deliveryId"] }),
        )
        .await;
    assert_eq!(journaled["delivery"]["source"], "shiplog");
    assert_eq!(journaled["delivery"]["kind"], "API");
    assert!(
        journaled["delivery"]["recordedBy"]
            .as_str()
            .unwrap()
            .starts_with("token:")
    );
    assert!(
        journaled["delivery"]["body"]
            .as_str()
            .unwrap()
            .contains("annotateDeployment")
    );
    // A later delivery from the tool without tags keeps people's.
    app.deliver(crate::helpers::generic("r-1", "succeeded")).await;
    let missing = answer(
        &app,
        Some("write-1"),
        ANNOTATE,
        json!({ "id": "999999", "tags": [] }),
    )
    .await;
    assert_eq!(error_code(&missing), "NOT_FOUND", "{missing}");
    app.stop().await;

    // Replay moves the deployment to a new name; people's tags and note stay on it.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, "[systems.payments]\naliases = [\"billing\"]\n").unwrap();
    let replayed = crate::replay::replay(&db, &config);
    assert!(replayed.contains("deployments moved"), "{replayed}");
    let app = spawn_app_on(db, |_| {}).await;
    let data = app
        .data(
            "{ deployments(filter: { tags: [\"region:us\"] }) { nodes { system { name } note } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["deployments"]["nodes"],
        json!([{ "system": { "name": "payments" }, "note": "moved to us-east" }])
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_change_mark_moves_doras_change_failure_rate() {
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        s.write_tokens = vec!["write-1".into()]
    })
    .await;
    for (id, finished) in [("d-1", "2026-11-02T10:00:00Z"), ("d-2", "2026-11-02T10:30:00Z")] {
        let mut body = crate::helpers::generic(id, "succeeded");
        body["finishedAt"] = json!(finished);
        app.deliver(body).await;
    }
    let dora = r#"{ doraMetrics(from: "2026-11-01T00:00:00Z", to: "2026-11-08T00:00:00Z", groupBy: []) {
        failedDeployments markedFailedChanges failedChanges changeFailureRate recoveries medianTimeToRecoverySeconds }
        deployments(filter: { statuses: [SUCCEEDED] }) { nodes { id externalId failedChange failedChangeReason } } }"#;
    let before = app.data(dora, json!({})).await;
    assert_eq!(before["doraMetrics"][0]["changeFailureRate"], 0.0);
    let first = before["deployments"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["externalId"] == "d-1")
        .unwrap()["id"]
        .clone();
    let mark = "mutation($id: ID!, $failed: Boolean) { markFailedChange(id: $id, failed: $failed, reason: \"broke checkout\") {
        deployment { failedChange failedChangeReason } } }";
    let marked = answer(
        &app,
        Some("write-1"),
        mark,
        json!({ "id": first, "failed": true }),
    )
    .await;
    assert_eq!(
        marked["data"]["markFailedChange"]["deployment"],
        json!({ "failedChange": true, "failedChangeReason": "broke checkout" })
    );
    let after = app.data(dora, json!({})).await;
    assert_eq!(
        after["doraMetrics"][0],
        json!({ "failedDeployments": 0, "markedFailedChanges": 1, "failedChanges": 1, "changeFailureRate": 0.5,
                "recoveries": 1, "medianTimeToRecoverySeconds": 1800.0 })
    );
    // null takes the mark back: the deployment's status decides again.
    let cleared = answer(
        &app,
        Some("write-1"),
        mark,
        json!({ "id": first, "failed": null }),
    )
    .await;
    assert_eq!(
        cleared["data"]["markFailedChange"]["deployment"],
        json!({ "failedChange": null, "failedChangeReason": null })
    );
    let unmarked = app.data(dora, json!({})).await;
    assert_eq!(unmarked["doraMetrics"][0]["changeFailureRate"], 0.0);
    let refused = answer(&app, None, mark, json!({ "id": first, "failed": true })).await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    app.stop().await;
}

const CORRECT: &str = "mutation($id: ID!, $status: DeploymentStatus, $system: String, $environment: String, $reason: String) {
    correctDeployment(id: $id, status: $status, system: $system, environment: $environment, reason: $reason) {
      deliveryId deployment { status rawStatus rawSystem correctedFields correctionReason system { name } environment { name } } } }";

const DELETE: &str = "mutation($id: ID!, $reason: String!) {
    deleteDeployment(id: $id, reason: $reason) { deliveryId deployment { deletedAt deletionReason } } }";

/// What every read path says about the window the test's deployments are in.
const VIEWS: &str = r#"{
    deployments { totalCount nodes { externalId status system { name } } }
    deploymentFrequency(from: "2026-11-02T00:00:00Z", to: "2026-11-02T23:59:59Z", interval: DAY, groupBy: [SYSTEM]) { system count }
    doraMetrics(from: "2026-11-01T00:00:00Z", to: "2026-11-08T00:00:00Z", groupBy: []) { deployments failedDeployments }
    board { rows { system { name } cells { environment { name } current { externalId } inProgress { externalId } latest { externalId } } } }
  }"#;

fn id_of(views: &Value, external_id: &str) -> Value {
    views["deployments"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["externalId"] == external_id)
        .map(|n| n["id"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn corrections_and_deletions_move_every_view_stay_put_and_survive_replay() {
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |s| s.write_tokens = vec!["write-1".into()]).await;
    // billing: a success, then one stuck RUNNING; "biling" is a typo in one tool's job name.
    for (id, system, status, at) in [
        ("d-1", "billing", "succeeded", "2026-11-02T10:00:00Z"),
        ("d-2", "billing", "running", "2026-11-02T11:00:00Z"),
        ("d-3", "biling", "succeeded", "2026-11-02T12:00:00Z"),
        ("d-4", "billing", "succeeded", "2026-11-02T13:00:00Z"),
    ] {
        let mut body = crate::helpers::generic(id, status);
        body["system"] = json!(system);
        body["startedAt"] = json!(at);
        if status == "succeeded" {
            body["finishedAt"] = json!(at);
        }
        app.deliver(body).await;
    }
    let ids_query = "{ deployments { nodes { id externalId } } }";
    let ids = app.data(ids_query, json!({})).await;
    let (stuck, typo, test_run) = (id_of(&ids, "d-2"), id_of(&ids, "d-3"), id_of(&ids, "d-4"));
    let mut live = app
        .subscribe(
            "subscription { deploymentEvents { status previousStatus deployment { externalId deletedAt } } }",
            json!({}),
        )
        .await;

    // The stuck deployment died: corrected to FAILED, with why.
    let failed = answer(
        &app,
        Some("write-1"),
        CORRECT,
        json!({ "id": stuck, "status": "FAILED", "reason": "the runner died; nothing was deployed" }),
    )
    .await;
    assert_eq!(
        failed["data"]["correctDeployment"]["deployment"],
        json!({ "status": "FAILED", "rawStatus": "running", "rawSystem": "billing", "correctedFields": ["status"],
                "correctionReason": "the runner died; nothing was deployed",
                "system": { "name": "billing" }, "environment": { "name": "production" } }),
        "{failed}"
    );
    let event = live
        .next_event(Duration::from_secs(5))
        .await
        .expect("the correction's event");
    assert_eq!(
        event["deploymentEvents"],
        json!({ "status": "FAILED", "previousStatus": "RUNNING", "deployment": { "externalId": "d-2", "deletedAt": null } })
    );
    // The typo moved to billing.
    let moved = answer(
        &app,
        Some("write-1"),
        CORRECT,
        json!({ "id": typo, "system": "billing" }),
    )
    .await;
    assert_eq!(
        moved["data"]["correctDeployment"]["deployment"]["system"]["name"], "billing",
        "{moved}"
    );
    // The test run is deleted.
    let deleted = answer(
        &app,
        Some("write-1"),
        DELETE,
        json!({ "id": test_run, "reason": "a load test, not a release" }),
    )
    .await;
    assert_eq!(
        deleted["data"]["deleteDeployment"]["deployment"]["deletionReason"], "a load test, not a release",
        "{deleted}"
    );
    live.next_event(Duration::from_secs(5))
        .await
        .expect("the move's event");
    let gone = live
        .next_event(Duration::from_secs(5))
        .await
        .expect("the deletion's event");
    assert_eq!(gone["deploymentEvents"]["deployment"]["externalId"], "d-4");
    assert!(
        gone["deploymentEvents"]["deployment"]["deletedAt"].is_string(),
        "{gone}"
    );

    let expect_views = |views: &Value| {
        assert_eq!(views["deployments"]["totalCount"], 3, "{views}");
        assert_eq!(
            views["deploymentFrequency"],
            json!([{ "system": "billing", "count": 3 }]),
            "the rollup follows the move and the deletion: {views}"
        );
        assert_eq!(
            views["doraMetrics"][0],
            json!({ "deployments": 3, "failedDeployments": 1 }),
            "{views}"
        );
        assert_eq!(
            views["board"]["rows"],
            json!([{ "system": { "name": "billing" }, "cells": [{ "environment": { "name": "production" },
                "current": { "externalId": "d-3" }, "inProgress": null, "latest": { "externalId": "d-3" } }] }]),
            "the board's cells were rebuilt: {views}"
        );
    };
    expect_views(&app.data(VIEWS, json!({})).await);

    // The tool reports all three again, later and further along: what people corrected and
    // deleted stays.
    for (id, system, status) in [
        ("d-2", "billing", "succeeded"),
        ("d-3", "biling", "succeeded"),
        ("d-4", "billing", "succeeded"),
    ] {
        let mut body = crate::helpers::generic(id, status);
        body["system"] = json!(system);
        body["startedAt"] = json!("2026-11-02T14:00:00Z");
        app.deliver(body).await;
    }
    expect_views(&app.data(VIEWS, json!({})).await);
    // The deleted one is still read by id, for the audit; a deleted one is not changed again.
    let audit = app
        .data(
            "query($id: ID!) { deployment(id: $id) { externalId deletedAt deletionReason } }",
            json!({ "id": test_run }),
        )
        .await;
    assert_eq!(
        audit["deployment"]["deletionReason"],
        "a load test, not a release"
    );
    let again = answer(
        &app,
        Some("write-1"),
        DELETE,
        json!({ "id": test_run, "reason": "twice" }),
    )
    .await;
    assert_eq!(error_code(&again), "BAD_USER_INPUT", "{again}");
    // Refused without a write token, without a reason, or with nothing to correct.
    let read = answer(&app, None, DELETE, json!({ "id": stuck, "reason": "x" })).await;
    assert_eq!(error_code(&read), "FORBIDDEN", "{read}");
    let no_reason = answer(
        &app,
        Some("write-1"),
        DELETE,
        json!({ "id": stuck, "reason": " " }),
    )
    .await;
    assert_eq!(error_code(&no_reason), "BAD_USER_INPUT", "{no_reason}");
    let nothing = answer(&app, Some("write-1"), CORRECT, json!({ "id": stuck })).await;
    assert_eq!(error_code(&nothing), "BAD_USER_INPUT", "{nothing}");
    app.stop().await;

    // Replay with an alias for billing: the corrected deployment moves with its system (people's
    // name is mapped like a tool's), the deletion stays.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, "[systems.payments]\naliases = [\"billing\"]\n").unwrap();
    let replayed = crate::replay::replay(&db, &config);
    assert!(replayed.contains("deployments moved"), "{replayed}");
    let app = spawn_app_on(db, |_| {}).await;
    let after = app.data(VIEWS, json!({})).await;
    assert_eq!(after["deployments"]["totalCount"], 3, "{after}");
    let systems: Vec<&str> = after["deployments"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["system"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(systems, ["payments"; 3], "{after}");
    app.stop().await;
}
