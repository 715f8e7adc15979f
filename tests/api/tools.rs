//! The sources most companies also have, end to end through the real server with their
//! published payloads: GitHub, Argo CD, CircleCI, CDEvents and DevLake's webhook. What they
//! report shows on every read path (lists, board, Grafana fields, subscriptions) with no code
//! of their own there.

use std::time::Duration;

use serde_json::{Value, json};

use crate::contract::{send, send_fixture};
use crate::fixtures::{fixture_dir, fixture_headers};
use crate::helpers::{TestApp, secret_of, spawn_app};

const DEPLOYMENTS: &str = "query($f: DeploymentFilter) { deployments(filter: $f) { totalCount edges { node {
    source externalId system { name } environment { name } environmentTier status rawStatus
    startedAt finishedAt commitSha ref version url actor events { status rawStatus } } } } }";

async fn deployments(app: &TestApp, source: &str) -> Vec<Value> {
    let data = app
        .data(DEPLOYMENTS, json!({ "f": { "sources": [source] } }))
        .await;
    data["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

/// Posts a body to a source with its secret, the way the source takes it, and these headers.
async fn post(
    app: &TestApp,
    source: &str,
    body: Vec<u8>,
    headers: &axum::http::HeaderMap,
) -> reqwest::Response {
    let registry = crate::helpers::registry();
    let auth = registry.get(source).unwrap().auth().clone();
    send(app, source, &auth, Some(&secret_of(source)), body, headers).await
}

fn fixture(source: &str, name: &str) -> (Vec<u8>, axum::http::HeaderMap) {
    let path = fixture_dir(source).join(name);
    (std::fs::read(&path).unwrap(), fixture_headers(&path))
}

#[tokio::test]
async fn github_deployment_and_its_statuses_are_one_deployment_and_inactive_changes_nothing() {
    let app = spawn_app().await;
    for name in [
        "deployment_created.json",
        "deployment_status_created_pending.derived.json",
        "deployment_status_created_success.json",
        "deployment_status_created_inactive.derived.json",
    ] {
        let answer = send_fixture(&app, "github", name).await;
        assert_eq!(answer["status"], "accepted", "{name}: {answer}");
    }
    let all = deployments(&app, "github").await;
    assert_eq!(all.len(), 1, "{all:?}");
    let node = &all[0];
    assert_eq!(
        node["externalId"], "145988746",
        "the deployment id, as GitHub's API names it"
    );
    assert_eq!(node["system"]["name"], "Codertocat/Hello-World");
    assert_eq!(node["environment"]["name"], "production");
    assert_eq!(node["status"], "SUCCEEDED", "inactive did not undo the success");
    assert_eq!(node["commitSha"], "f95f852bd8fca8fcc58a9a2d6c842781e32a215e");
    assert_eq!(node["actor"], "Codertocat");
    let words: Vec<&str> = node["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rawStatus"].as_str().unwrap())
        .collect();
    assert!(
        words.contains(&"inactive"),
        "inactive is kept as an event: {words:?}"
    );

    // A workflow named for deploying counts; a CI workflow and a ping do not.
    let run = send_fixture(&app, "github", "workflow_run_completed_deploy.derived.json").await;
    assert_eq!(run["status"], "accepted", "{run}");
    for name in [
        "workflow_run_completed.json",
        "ping.json",
        "workflow_job_queued.with-deployment.json",
    ] {
        let answer = send_fixture(&app, "github", name).await;
        assert_eq!(answer["status"], "ignored", "{name}: {answer}");
    }
    assert_eq!(deployments(&app, "github").await.len(), 2);
    // A wrong signature is refused.
    let (body, headers) = fixture("github", "deployment_created.json");
    let registry = crate::helpers::registry();
    let auth = registry.get("github").unwrap().auth().clone();
    let refused = send(&app, "github", &auth, Some("not-the-secret"), body, &headers).await;
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn argocd_notifications_of_one_sync_are_one_deployment() {
    let app = spawn_app().await;
    for name in [
        "body_running.rendered.derived.json",
        "body_succeeded.rendered.derived.json",
    ] {
        let answer = send_fixture(&app, "argocd", name).await;
        assert_eq!(answer["status"], "accepted", "{name}: {answer}");
    }
    let answer = send_fixture(&app, "argocd", "body_no_operation_state.rendered.derived.json").await;
    assert_eq!(
        answer["status"], "ignored",
        "no operation: 2xx, or Argo CD resends it: {answer}"
    );
    let all = deployments(&app, "argocd").await;
    assert_eq!(all.len(), 1, "{all:?}");
    let node = &all[0];
    assert_eq!(node["system"]["name"], "velero-test");
    assert_eq!(node["environment"]["name"], "test-lla");
    assert_eq!(node["status"], "SUCCEEDED");
    assert_eq!(node["startedAt"], "2024-03-05T07:33:03.000Z");
    assert_eq!(node["finishedAt"], "2024-03-05T07:33:04.000Z");
    assert_eq!(node["commitSha"], "ea8759964626a583667a2bfd08f334ec2070040a");
    assert_eq!(
        node["url"],
        "https://cd.apps.argoproj.io/applications/argo-cd/velero-test"
    );

    // The same operation later degraded: a failure.
    let (body, headers) = fixture("argocd", "body_succeeded.rendered.derived.json");
    let mut degraded: Value = serde_json::from_slice(&body).unwrap();
    degraded["health"]["status"] = json!("Degraded");
    degraded["health"]["lastTransitionTime"] = json!("2024-03-05T07:40:00Z");
    let answer = post(&app, "argocd", serde_json::to_vec(&degraded).unwrap(), &headers).await;
    assert_eq!(answer.status(), 200);
    let node = &deployments(&app, "argocd").await[0];
    assert_eq!(node["status"], "FAILED");
    assert_eq!(node["rawStatus"], "Succeeded/Degraded");
}

#[tokio::test]
async fn circleci_workflows_are_deployments_by_name_and_redeliveries_are_stored_once() {
    let app = spawn_app().await;
    let answer = send_fixture(&app, "circleci", "workflow_completed.github-oauth.json").await;
    assert_eq!(answer["status"], "accepted", "{answer}");
    let again = send_fixture(&app, "circleci", "workflow_completed.github-oauth.json").await;
    assert_eq!(again["status"], "duplicate", "{again}");
    for name in [
        "workflow_completed.gitlab-githubapp-bbdc.json",
        "job_completed.github-oauth.json",
    ] {
        let answer = send_fixture(&app, "circleci", name).await;
        assert_eq!(answer["status"], "ignored", "{name}: {answer}");
    }
    let node = &deployments(&app, "circleci").await[0];
    assert_eq!(node["system"]["name"], "webhook-service");
    assert_eq!(node["status"], "SUCCEEDED");
    assert_eq!(node["ref"], "main");
    // Unauthorized: nothing ran.
    let (body, headers) = fixture(
        "circleci",
        "workflow_completed.github-oauth.unauthorized.derived.json",
    );
    let mut other: Value = serde_json::from_slice(&body).unwrap();
    other["id"] = json!("another-event");
    other["workflow"]["id"] = json!("another-workflow");
    let answer = post(&app, "circleci", serde_json::to_vec(&other).unwrap(), &headers).await;
    assert_eq!(answer.status(), 200);
    let statuses: Vec<Value> = deployments(&app, "circleci")
        .await
        .iter()
        .map(|n| n["status"].clone())
        .collect();
    assert!(statuses.contains(&json!("CANCELLED")), "{statuses:?}");
}

#[tokio::test]
async fn cdevents_in_binary_and_structured_mode_and_runs_by_rules() {
    let app = spawn_app().await;
    // Binary mode: ce-* headers, the CDEvent as the body.
    let (body, headers) = fixture("cdevents", "service_deployed.v0.5.1.json");
    assert!(headers.contains_key("ce-id"));
    assert_eq!(post(&app, "cdevents", body, &headers).await.status(), 200);
    // Structured mode, the same event: the same source and id, so stored once.
    let (body, headers) = fixture("cdevents", "service_deployed.v0.5.1.structured-mode.derived.json");
    let answer: Value = post(&app, "cdevents", body, &headers).await.json().await.unwrap();
    assert_eq!(answer["status"], "duplicate", "{answer}");
    // A rollback keeps its word.
    let (body, headers) = fixture("cdevents", "service_rolledback.v0.5.1.json");
    let mut rollback: Value = serde_json::from_slice(&body).unwrap();
    rollback["context"]["id"] = json!("rollback-1");
    let answer = post(&app, "cdevents", serde_json::to_vec(&rollback).unwrap(), &headers).await;
    assert_eq!(answer.status(), 200);
    // A pipeline named for deploying: started, then finished, one deployment.
    for name in [
        "pipelinerun_started.v0.5.1.deploy.derived.json",
        "pipelinerun_finished.v0.5.1.deploy.derived.json",
    ] {
        let (body, headers) = fixture("cdevents", name);
        let mut event: Value = serde_json::from_slice(&body).unwrap();
        event["context"]["id"] = json!(name);
        let answer: Value = post(&app, "cdevents", serde_json::to_vec(&event).unwrap(), &headers)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "accepted", "{name}: {answer}");
    }
    let all = deployments(&app, "cdevents").await;
    assert_eq!(all.len(), 3, "{all:?}");
    let by_word = |word: &str| {
        all.iter()
            .find(|n| n["rawStatus"] == word)
            .unwrap_or_else(|| panic!("{word}: {all:?}"))
            .clone()
    };
    let deployed = by_word("deployed");
    assert_eq!(deployed["system"]["name"], "mySubject123");
    assert_eq!(deployed["environment"]["name"], "test123");
    assert_eq!(
        deployed["version"],
        "sha256:0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427"
    );
    assert_eq!(by_word("rolledback")["status"], "SUCCEEDED");
    let run = all
        .iter()
        .find(|n| n["system"]["name"] == "deploy-production")
        .unwrap();
    assert_eq!(
        run["status"], "FAILED",
        "the 0.5.1 finished example's outcome is failure"
    );
    assert!(
        run["startedAt"].is_string() && run["finishedAt"].is_string(),
        "{run}"
    );
}

#[tokio::test]
async fn devlake_bodies_deploy_each_repository_and_devlake_s_own_path_works() {
    let app = spawn_app().await;
    let answer = send_fixture(&app, "devlake", "deployment_multi_repo.docs-sample.json").await;
    assert_eq!(answer["deploymentIds"].as_array().unwrap().len(), 2, "{answer}");
    let all = deployments(&app, "devlake").await;
    let ids: Vec<&str> = all.iter().map(|n| n["externalId"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&"required-id:required-repo-url") && ids.contains(&"required-id:repo-2"),
        "{ids:?}"
    );

    // DevLake's path, as its docs' curl sends it: a bearer key and no Content-Type.
    let body = json!({ "id": "devlake-42", "startedDate": "2023-01-10T15:35:00+0000", "finishedDate": "2023-01-10T15:40:00+0000",
        "result": "SUCCESS", "environment": "STAGING",
        "deploymentCommits": [{ "repoUrl": "https://github.com/acme/billing.git", "commitSha": "015e3d3b480e417aede5a1293bd61de9b0fd051d",
            "startedDate": "2023-01-10T15:35:00+0000", "finishedDate": "2023-01-10T15:40:00+0000" }] });
    let response = app
        .client
        .post(app.url("/api/rest/plugins/webhook/connections/1/deployments"))
        .bearer_auth(secret_of("devlake"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let node = deployments(&app, "devlake")
        .await
        .into_iter()
        .find(|n| n["externalId"] == "devlake-42:acme/billing")
        .unwrap();
    assert_eq!(node["system"]["name"], "acme/billing");
    assert_eq!(node["environment"]["name"], "staging");
    assert_eq!(node["environmentTier"], "staging");
    assert_eq!(node["finishedAt"], "2023-01-10T15:40:00.000Z");

    // A person's curl step gets a 400 that says what to fix.
    let wrong = app
        .client
        .post(app.url("/webhooks/devlake"))
        .bearer_auth(secret_of("devlake"))
        .body(json!({ "id": "x", "environment": "prod" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let message = wrong.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("PRODUCTION") && message.contains("startedDate"),
        "{message}"
    );
}

#[tokio::test]
async fn the_new_sources_show_on_the_board_in_grafana_and_on_the_subscription() {
    let app = spawn_app().await;
    let mut subscriber = app
        .subscribe("subscription { deploymentEvents(filter: { sources: [\"github\", \"argocd\"] }) { deployment { source } } }", json!({}))
        .await;
    send_fixture(&app, "github", "deployment_status_created_success.json").await;
    send_fixture(&app, "argocd", "body_succeeded.rendered.derived.json").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = subscriber
            .next_event(Duration::from_secs(5))
            .await
            .expect("a live event");
        seen.push(
            event["deploymentEvents"]["deployment"]["source"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    seen.sort();
    assert_eq!(seen, ["argocd", "github"]);
    let board = app
        .data(
            "{ board { rows { system { name } cells { environment { name } current { source } } } } }",
            json!({}),
        )
        .await;
    let text = board.to_string();
    assert!(
        text.contains("Codertocat/Hello-World") && text.contains("velero-test"),
        "{text}"
    );
    let rows = app
        .data(
            r#"{ deploymentList(from: "2019-01-01T00:00:00Z", to: "2030-01-01T00:00:00Z", sources: ["github", "argocd"]) { source system } }"#,
            json!({}),
        )
        .await;
    assert_eq!(rows["deploymentList"].as_array().unwrap().len(), 2, "{rows}");
    let dora = app
        .data(
            r#"{ doraMetrics(from: "2019-01-01T00:00:00Z", to: "2030-01-01T00:00:00Z", environments: ["production", "test-lla"]) { system succeededDeployments } }"#,
            json!({}),
        )
        .await;
    assert_eq!(dora["doraMetrics"].as_array().unwrap().len(), 2, "{dora}");
}
