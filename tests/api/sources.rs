//! Real payloads end to end: GitLab's three hook kinds and Jenkins' phases merge into one
//! deployment each, shown by queries and on the subscription.

use std::time::Duration;

use serde_json::{Value, json};

use crate::contract::send_fixture;
use crate::helpers::spawn_app;

const DEPLOYMENT: &str = "query($f: DeploymentFilter) { deployments(filter: $f) { totalCount edges { node {
    source externalId system { name } environment { name } environmentTier status rawStatus
    startedAt finishedAt durationSeconds commitSha ref version url actor events { status rawStatus } } } } }";

async fn only_deployment(app: &crate::helpers::TestApp, source: &str) -> Value {
    let data = app
        .data(DEPLOYMENT, json!({ "f": { "sources": [source] } }))
        .await;
    assert_eq!(data["deployments"]["totalCount"], 1, "{data}");
    data["deployments"]["edges"][0]["node"].clone()
}

#[tokio::test]
async fn gitlab_job_deployment_and_pipeline_events_for_one_job_make_one_deployment() {
    let app = spawn_app().await;
    let mut subscriber = app
        .subscribe("subscription { deploymentEvents(filter: { sources: [\"gitlab\"] }) { status deployment { externalId status } } }", json!({}))
        .await;
    // Out of order, through every kind, and the success twice (deployment and job hooks).
    for fixture in [
        "deployment_success.json",
        "job_796_running.json",
        "pipeline_796_pending.json",
        "deployment_running.json",
        "job_796_success_older_gitlab.json",
    ] {
        let answer = send_fixture(&app, "gitlab", fixture).await;
        assert_eq!(answer["status"], "accepted", "{fixture}: {answer}");
    }
    let node = only_deployment(&app, "gitlab").await;
    assert_eq!(node["externalId"], "796");
    assert_eq!(node["system"]["name"], "root/test-deployment-webhooks");
    assert_eq!(node["environment"]["name"], "staging");
    assert_eq!(node["environmentTier"], "staging");
    assert_eq!(node["status"], "SUCCEEDED");
    assert_eq!(
        node["startedAt"], "2021-04-28T19:45:00.000Z",
        "the deployment hook's running time is the earliest start"
    );
    assert_eq!(node["finishedAt"], "2021-04-28T19:50:00.000Z");
    assert_eq!(node["durationSeconds"], 300.0);
    assert_eq!(
        node["commitSha"], "279484c09fbe69ededfced8c1bb6e6d24616b468",
        "the full sha, not short_sha"
    );
    assert_eq!(node["ref"], "master");
    // The newest report names the actor: GitLab's documented job event has a user without a username.
    assert_eq!(node["actor"], "User");
    assert!(
        node["url"]
            .as_str()
            .unwrap()
            .ends_with("/root/test-deployment-webhooks/-/jobs/796")
    );
    assert_eq!(node["events"].as_array().unwrap().len(), 5);
    let mut seen = Vec::new();
    while let Some(event) = subscriber.next_event(Duration::from_millis(500)).await {
        seen.push(event["deploymentEvents"]["status"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["SUCCEEDED", "RUNNING", "QUEUED", "RUNNING", "SUCCEEDED"]);
}

#[tokio::test]
async fn gitlab_events_that_are_not_deployments_are_journaled_as_ignored() {
    let app = spawn_app().await;
    for fixture in [
        "push_hook.json",
        "job_without_environment.json",
        "job_stop_environment.json",
        "pipeline_without_environments.json",
    ] {
        let answer = send_fixture(&app, "gitlab", fixture).await;
        assert_eq!(answer["status"], "ignored", "{fixture}: {answer}");
    }
    let data = app
        .data("{ deployments { totalCount } systems { name } }", json!({}))
        .await;
    assert_eq!(data["deployments"]["totalCount"], 0);
    assert_eq!(data["systems"], json!([]));
    assert_eq!(
        crate::ingest::delivery_count(&app).await,
        4,
        "ignored deliveries are journaled"
    );
}

#[tokio::test]
async fn gitlab_pipeline_jobs_with_environments_each_become_a_deployment() {
    let app = spawn_app().await;
    send_fixture(&app, "gitlab", "pipeline_with_environments.json").await;
    let data = app
        .data(
            "{ deployments { edges { node { externalId environment { name } status rawStatus } } } }",
            json!({}),
        )
        .await;
    let mut rows: Vec<(String, String, String)> = data["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = &e["node"];
            (
                n["externalId"].as_str().unwrap().into(),
                n["environment"]["name"].as_str().unwrap().into(),
                n["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("379".to_string(), "staging".to_string(), "QUEUED".to_string()),
            (
                "380".to_string(),
                "production".to_string(),
                "CANCELLED".to_string()
            )
        ]
    );
}

#[tokio::test]
async fn jenkins_phases_of_one_build_merge_into_one_deployment() {
    let app = spawn_app().await;
    let mut subscriber = app
        .subscribe("subscription { deploymentEvents(filter: { systems: [\"billing\"] }) { status deployment { status } } }", json!({}))
        .await;
    for fixture in [
        "deploy_queued.json",
        "deploy_started.json",
        "deploy_finalized_success.json",
        "deploy_completed_success.json",
    ] {
        let answer = send_fixture(&app, "jenkins", fixture).await;
        assert_eq!(answer["status"], "accepted", "{fixture}: {answer}");
    }
    let node = only_deployment(&app, "jenkins").await;
    assert_eq!(
        node["externalId"], "billing/deploy#18",
        "folder jobs keep their full name"
    );
    assert_eq!(node["system"]["name"], "billing", "from the APP parameter");
    assert_eq!(
        node["environment"]["name"], "production",
        "ENVIRONMENT=prod, folded by the default alias"
    );
    assert_eq!(node["status"], "SUCCEEDED");
    assert_eq!(node["rawStatus"], "SUCCESS");
    assert_eq!(node["startedAt"], "2025-11-26T14:00:05.000Z");
    assert_eq!(
        node["finishedAt"], "2025-11-26T14:03:05.000Z",
        "COMPLETED's time, not FINALIZED's"
    );
    assert_eq!(node["durationSeconds"], 180.0);
    assert_eq!(node["commitSha"], "c6d86dc654b12425e706bcf951adfe5a8627a517");
    assert_eq!(node["ref"], "master");
    assert_eq!(node["version"], "2.4.0");
    assert_eq!(node["url"], "http://localhost:8080/job/billing/job/deploy/18/");
    let mut statuses = Vec::new();
    while let Some(event) = subscriber.next_event(Duration::from_millis(500)).await {
        statuses.push(event["deploymentEvents"]["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["QUEUED", "RUNNING", "SUCCEEDED", "SUCCEEDED"]);
}

#[tokio::test]
async fn jenkins_builds_are_deployments_by_the_configured_rules() {
    let app = spawn_app().await;
    let ignored = send_fixture(&app, "jenkins", "completed_wiki_example.json").await;
    assert_eq!(
        ignored["status"], "ignored",
        "`asgard` names no environment and is not a deploy job"
    );
    send_fixture(&app, "jenkins", "job_name_names_environment.json").await;
    for fixture in ["deploy_completed_failure.json", "deploy_completed_aborted.json"] {
        send_fixture(&app, "jenkins", fixture).await;
    }
    let data = app
        .data(
            "{ deployments { edges { node { externalId system { name } environment { name } status } } } }",
            json!({}),
        )
        .await;
    let mut rows: Vec<String> = data["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = &e["node"];
            format!(
                "{} {} {} {}",
                n["externalId"].as_str().unwrap(),
                n["system"]["name"].as_str().unwrap(),
                n["environment"]["name"].as_str().unwrap(),
                n["status"].as_str().unwrap()
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            "billing/deploy#19 billing production FAILED",
            "billing/deploy#20 billing production CANCELLED",
            "search-deploy-staging#7 search-deploy-staging staging SUCCEEDED",
        ]
    );
}
