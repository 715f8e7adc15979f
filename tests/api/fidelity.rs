//! Classes of wrong answers found on real payloads, each pinned with a payload of the shape the
//! tool sends (tests/fixtures/README.md says where each came from).

use serde_json::{Value, json};

use crate::contract::{send, send_fixture};
use crate::fixtures::{fixture_dir, fixture_headers};
use crate::helpers::{TestApp, TestDb, secret_of, spawn_app, spawn_app_on};

const FIELDS: &str = "externalId system { name } environment { name } ref status rawStatus
    startedAt finishedAt deployedAt timesEstimated actor";

async fn deployments(app: &TestApp, source: &str) -> Vec<Value> {
    let query = format!(
        "{{ deployments(first: 100, filter: {{ sources: [\"{source}\"] }}) {{ nodes {{ {FIELDS} }} }} }}"
    );
    app.data(&query, json!({})).await["deployments"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

async fn external_ids(app: &TestApp, source: &str) -> Vec<String> {
    deployments(app, source)
        .await
        .iter()
        .map(|d| d["externalId"].as_str().unwrap().to_string())
        .collect()
}

fn fixture(source: &str, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture_dir(source).join(name)).unwrap()).unwrap()
}

/// Posts a body derived in the test from a fixture (with that fixture's headers).
async fn post(app: &TestApp, source: &str, like: &str, body: &Value) -> (u16, Value) {
    let registry = crate::helpers::registry();
    let auth = registry.get(source).unwrap().auth().clone();
    let headers = fixture_headers(&fixture_dir(source).join(like));
    let response = send(
        app,
        source,
        &auth,
        Some(&secret_of(source)),
        serde_json::to_vec(body).unwrap(),
        &headers,
    )
    .await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn jenkins_jobs_are_told_apart_by_their_full_name_and_ci_jobs_are_not_deployments() {
    let app = spawn_app().await;
    for phase in ["queued", "started", "completed_success", "finalized_success"] {
        send_fixture(
            &app,
            "jenkins",
            &format!("folder_team-app-deploy_{phase}.derived.json"),
        )
        .await;
    }
    // Another team's job of the same short name (`name` is `deploy` for both).
    let mut other = fixture("jenkins", "folder_team-app-deploy_completed_success.derived.json");
    other["url"] = json!("job/team-b/job/app/job/deploy/");
    other["build"]["url"] = json!("job/team-b/job/app/job/deploy/18/");
    let (status, answer) = post(
        &app,
        "jenkins",
        "folder_team-app-deploy_completed_success.derived.json",
        &other,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // A CI job whose name only happens to hold an environment word.
    let mut ci = fixture("jenkins", "folder_team-app-deploy_completed_success.derived.json");
    ci["name"] = json!("billing_ci_test");
    ci["url"] = json!("job/billing_ci_test/");
    ci["build"].as_object_mut().unwrap().remove("parameters");
    let (status, answer) = post(
        &app,
        "jenkins",
        "folder_team-app-deploy_completed_success.derived.json",
        &ci,
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("ignored")),
        "{answer}"
    );

    let found = deployments(&app, "jenkins").await;
    let ids: Vec<&str> = found.iter().map(|d| d["externalId"].as_str().unwrap()).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        ids.contains(&"team/app/deploy#18") && ids.contains(&"team-b/app/deploy#18"),
        "{ids:?}"
    );
    let team = found
        .iter()
        .find(|d| d["externalId"] == "team/app/deploy#18")
        .unwrap();
    assert_eq!(team["system"]["name"], "team/app/deploy");
    assert_eq!(team["status"], "SUCCEEDED");
    assert_eq!(team["startedAt"], "2025-11-26T14:00:05.000Z", "{team}");
    assert_eq!(
        team["finishedAt"], "2025-11-26T14:03:05.000Z",
        "COMPLETED's time, not FINALIZED's: {team}"
    );
    assert_eq!(team["timesEstimated"], false);
}

#[tokio::test]
async fn a_multibranch_job_is_its_project_and_the_branch_is_the_ref() {
    let db = std::sync::Arc::new(TestDb::new().await);
    let app = spawn_app_on(db, |settings| {
        // Deployments of the multibranch project `app`, by its rules.
        let rules: toml::Value =
            toml::from_str("deployment_jobs = '^app/'\ndefault_environment = 'staging'").unwrap();
        settings.sections.insert("jenkins".into(), rules);
    })
    .await;
    send_fixture(
        &app,
        "jenkins",
        "multibranch_app_feature-foo_started.derived.json",
    )
    .await;
    send_fixture(
        &app,
        "jenkins",
        "multibranch_app_feature-foo_completed_failure.derived.json",
    )
    .await;
    send_fixture(
        &app,
        "jenkins",
        "multibranch_app_PR-12_completed_success.derived.json",
    )
    .await;
    let found = deployments(&app, "jenkins").await;
    let feature = found
        .iter()
        .find(|d| d["externalId"] == "app/feature%2Ffoo#7")
        .unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(feature["system"]["name"], "app");
    assert_eq!(feature["ref"], "feature/foo");
    assert_eq!(feature["status"], "FAILED");
    let pr = found.iter().find(|d| d["externalId"] == "app/PR-12#3").unwrap();
    assert_eq!(
        (pr["system"]["name"].as_str(), pr["ref"].as_str()),
        (Some("app"), Some("PR-12"))
    );
}

#[tokio::test]
async fn an_empty_jenkins_status_is_no_result_yet() {
    let app = spawn_app().await;
    // The notifyEndpoints step can send COMPLETED while the build runs: no result, or "".
    let mut early = fixture("jenkins", "folder_team-app-deploy_completed_success.derived.json");
    early["build"]["status"] = json!("");
    let (status, answer) = post(
        &app,
        "jenkins",
        "folder_team-app-deploy_completed_success.derived.json",
        &early,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let found = deployments(&app, "jenkins").await;
    assert_eq!(
        found[0]["status"], "RUNNING",
        "not a word, not an ending: {found:?}"
    );
    assert_eq!(found[0]["finishedAt"], Value::Null);
    send_fixture(
        &app,
        "jenkins",
        "folder_team-app-deploy_completed_success.derived.json",
    )
    .await;
    assert_eq!(deployments(&app, "jenkins").await[0]["status"], "SUCCEEDED");
}

#[tokio::test]
async fn times_are_never_invented() {
    let app = spawn_app().await;
    // A deploy job skipped before it ran: only its creation time.
    send_fixture(&app, "gitlab", "job_deploy_skipped.derived.json").await;
    let skipped = deployments(&app, "gitlab").await;
    assert_eq!(skipped[0]["status"], "CANCELLED");
    assert_eq!(
        (&skipped[0]["startedAt"], &skipped[0]["finishedAt"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(skipped[0]["timesEstimated"], true, "{skipped:?}");
    // No time in the body: the receive time stands in, and says so.
    app.deliver(
        json!({ "id": "t-1", "system": "billing", "environment": "production", "status": "succeeded" }),
    )
    .await;
    app.deliver(
        json!({ "id": "t-2", "system": "billing", "environment": "production", "status": "succeeded",
        "finishedAt": "2026-11-26T14:03:00Z" }),
    )
    .await;
    let generic = deployments(&app, "generic").await;
    let guessed = generic.iter().find(|d| d["externalId"] == "t-1").unwrap();
    assert_eq!(
        (
            guessed["finishedAt"].is_null(),
            guessed["timesEstimated"].as_bool()
        ),
        (true, Some(true))
    );
    let told = generic.iter().find(|d| d["externalId"] == "t-2").unwrap();
    assert_eq!(
        (told["finishedAt"].as_str(), told["timesEstimated"].as_bool()),
        (Some("2026-11-26T14:03:00.000Z"), Some(false))
    );
}

#[tokio::test]
async fn gitlab_approvals_map_to_the_lifecycle_and_never_move_a_deployment_back() {
    let app = spawn_app().await;
    send_fixture(&app, "gitlab", "deployment_blocked.json").await;
    assert_eq!(deployments(&app, "gitlab").await[0]["status"], "QUEUED");
    send_fixture(&app, "gitlab", "deployment_running.json").await;
    // An approval recorded after the job started (the deployment event's `approved`).
    let mut approved = fixture("gitlab", "deployment_blocked.json");
    approved["status"] = json!("approved");
    approved["status_changed_at"] = json!("2021-04-28 21:55:00 +0200");
    let (status, answer) = post(&app, "gitlab", "deployment_blocked.json", &approved).await;
    assert_eq!(status, 200, "{answer}");
    let found = deployments(&app, "gitlab").await;
    assert_eq!(
        found[0]["status"], "RUNNING",
        "approved never moves it back: {found:?}"
    );
    // A rejected approval fails the job: nothing was deployed.
    send_fixture(
        &app,
        "gitlab",
        "job_deploy_failed_deployment_rejected.derived.json",
    )
    .await;
    let rejected = deployments(&app, "gitlab").await;
    let job = rejected.iter().find(|d| d["externalId"] == "1977").unwrap();
    assert_eq!(job["status"], "CANCELLED", "{job}");
    assert_eq!(job["rawStatus"], "failed (deployment_rejected)");
}

#[tokio::test]
async fn gitlab_ids_are_scoped_to_their_instance_and_the_first_instance_keeps_bare_ids() {
    let db = std::sync::Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    // The instance shiplog hears from first keeps bare ids (as every id was before).
    send_fixture(&app, "gitlab", "deployment_success.json").await;
    // Made through the API: no job behind it (and, as captured, no instance header).
    send_fixture(
        &app,
        "gitlab",
        "deployment_success_api_created_no_job.derived.json",
    )
    .await;
    app.stop().await;
    // After a restart, another instance's job 796 is another deployment: the first instance
    // is learned back from the journal, not taken from whoever sends next.
    let app = spawn_app_on(db, |_| {}).await;
    send_fixture(
        &app,
        "gitlab",
        "deployment_success.wikimedia-instance.derived.json",
    )
    .await;
    let ids = external_ids(&app, "gitlab").await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in ["796", "https://gitlab.wikimedia.org#796", "deployment:15"] {
        assert!(ids.contains(&id.to_string()), "{id} in {ids:?}");
    }

    // Written in the settings, the home instance wins over what arrives first.
    let db = std::sync::Arc::new(TestDb::new().await);
    let home = spawn_app_on(db, |settings| {
        let section: toml::Value = toml::from_str("home_instance = 'https://gitlab.wikimedia.org/'").unwrap();
        settings.sections.insert("gitlab".into(), section);
    })
    .await;
    send_fixture(&home, "gitlab", "deployment_success.json").await;
    send_fixture(
        &home,
        "gitlab",
        "deployment_success.wikimedia-instance.derived.json",
    )
    .await;
    let ids = external_ids(&home, "gitlab").await;
    assert!(
        ids.contains(&"https://gitlab.example.com#796".to_string()),
        "{ids:?}"
    );
    assert!(ids.contains(&"796".to_string()), "{ids:?}");
}

#[tokio::test]
async fn octopus_never_names_its_system_account_as_the_deployer() {
    let app = spawn_app().await;
    // A real DeploymentFailed (raised by `system`), and a DeploymentQueued raised by the API key
    // that queued the deployment (from Octopus's events API, in a webhook's envelope).
    send_fixture(
        &app,
        "octopus",
        "subscription_deployment_failed.octopus-subscription-listener-2023.json",
    )
    .await;
    send_fixture(
        &app,
        "octopus",
        "deployment_queued_by_api_key.from-events-api.derived.json",
    )
    .await;
    let found = deployments(&app, "octopus").await;
    let failed = found
        .iter()
        .find(|d| d["externalId"] == "Spaces-282/Deployments-12519")
        .unwrap();
    assert_eq!(failed["actor"], Value::Null, "{failed}");
    let queued = found
        .iter()
        .find(|d| d["externalId"] == "Spaces-792/Deployments-28312")
        .unwrap();
    assert_eq!(queued["actor"], "DemoSpaceManager");
}
