//! "Why is this (not) a deployment?": every delivery keeps its decision; `shiplog explain`
//! prints it, `Delivery.decision` serves it, deployments filter by rule, and `shiplog replay
//! --dry-run` shows what changed settings would change before anything does. Through the real
//! binary, on the database a real server wrote.

use serde_json::{Value, json};

use crate::contract::{send, send_fixture};
use crate::helpers::{TestApp, TestDb, secret_of, spawn_app_on};

/// Runs the binary against the test database; its standard output.
fn shiplog(db: &TestDb, config: Option<&std::path::Path>, args: &[&str]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"));
    if let Some(config) = config {
        command.args(["--config", config.to_str().unwrap()]);
    }
    let output = command
        .args(["--database-url", db.url()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The new rules: a multibranch project's builds are deployments to staging, and the folder
/// job is the system `billing`.
const RULES: &str = "[jenkins]\ndeployment_jobs = '(?i)deploy|release|^app/'\ndefault_environment = 'staging'\n\n[mapping.system_aliases]\nbilling = ['team/app/deploy']\n";

fn with_rules(settings: &mut shiplog::config::Settings) {
    let rules: toml::Value = toml::from_str(RULES).unwrap();
    settings
        .sections
        .insert("jenkins".into(), rules["jenkins"].clone());
    settings
        .mapping
        .system_aliases
        .insert("billing".into(), vec!["team/app/deploy".into()]);
}

async fn systems(app: &TestApp) -> Value {
    app.data(
        "{ deployments { nodes { externalId system { name } } } }",
        json!({}),
    )
    .await["deployments"]["nodes"]
        .clone()
}

#[tokio::test]
async fn explain_and_a_dry_run_say_why_and_what_would_change() {
    let db = std::sync::Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let started = send_fixture(&app, "jenkins", "folder_team-app-deploy_started.derived.json").await;
    let completed = send_fixture(
        &app,
        "jenkins",
        "folder_team-app-deploy_completed_success.derived.json",
    )
    .await;
    let branch = send_fixture(
        &app,
        "jenkins",
        "multibranch_app_feature-foo_completed_failure.derived.json",
    )
    .await;
    assert_eq!(branch["status"], "ignored", "{branch}");
    let auth = shiplog::sources::Auth::Query("token".into());
    let not_understood = send(
        &app,
        "jenkins",
        &auth,
        Some(&secret_of("jenkins")),
        br#"{"name": 5, "build": {}}"#.to_vec(),
        &Default::default(),
    )
    .await;
    assert_eq!(not_understood.status(), 202);
    let dead: Value = not_understood.json().await.unwrap();

    // The rule, the words and the names, and the deployment now.
    let id = completed["deliveryId"].to_string();
    let explained = shiplog(&db, None, &["explain", &id]);
    for line in [
        "rule: jenkins.environment_parameters",
        "deployment team/app/deploy#18",
        "prod -> production",
        "alias of `production` (shiplog's default environment aliases)",
        "SUCCESS -> SUCCEEDED",
        "now: deployment",
    ] {
        assert!(explained.contains(line), "`{line}` in:\n{explained}");
    }
    let ignored = shiplog(&db, None, &["explain", &branch["deliveryId"].to_string()]);
    assert!(
        ignored.contains("outcome: ignored") && ignored.contains("rule: jenkins.deployment_jobs"),
        "{ignored}"
    );
    assert!(
        ignored.contains("does not match [jenkins] deployment_jobs"),
        "{ignored}"
    );
    let failed = shiplog(&db, None, &["explain", &dead["deliveryId"].to_string()]);
    assert!(
        failed.contains("outcome: failed") && failed.contains("`name`"),
        "{failed}"
    );

    // The same over GraphQL, and deployments by the rule that made them.
    let query = "query($id: ID!) { delivery(id: $id) { decision { outcome rule deployments {
        externalId environment { raw value by } status { raw value } } } } }";
    let decision = app
        .data(query, json!({ "id": started["deliveryId"].to_string() }))
        .await;
    let decision = &decision["delivery"]["decision"];
    assert_eq!(decision["rule"], "jenkins.environment_parameters", "{decision}");
    assert_eq!(decision["deployments"][0]["environment"]["value"], "production");
    assert_eq!(decision["deployments"][0]["status"]["raw"], "STARTED");
    let by_rule = app
        .data(
            "{ deployments(filter: { rule: \"jenkins.environment_parameters\" }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(by_rule["deployments"]["totalCount"], 1, "{by_rule}");
    let none = app
        .data(
            "{ deployments(filter: { rule: \"jenkins.deployment_jobs\" }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(none["deployments"]["totalCount"], 0, "{none}");
    app.stop().await;

    // New settings: a dry run shows what would move and appear, and changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, RULES).unwrap();
    let dry = shiplog(&db, Some(&config), &["replay", "--dry-run"]);
    for line in [
        "1 deployments would move",
        "team/app/deploy#18: team/app/deploy in production -> billing in production",
        "1 deployments would appear",
        "jenkins app/feature%2Ffoo#7",
        "dry run: nothing was changed",
    ] {
        assert!(dry.contains(line), "`{line}` in:\n{dry}");
    }
    let app = spawn_app_on(db.clone(), with_rules).await;
    assert_eq!(
        systems(&app).await[0]["system"]["name"],
        "team/app/deploy",
        "the dry run changed nothing"
    );

    // Applied: names move at once, the branch's build appears once the server (running with
    // the same settings) has read its delivery again.
    let applied = shiplog(&db, Some(&config), &["replay"]);
    assert!(applied.contains("1 deliveries are pending again"), "{applied}");
    let found = app
        .eventually_within(
            "{ deployments { totalCount nodes { externalId system { name } ref } } }",
            |data| data["deployments"]["totalCount"] == 2,
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        found["deployments"]["totalCount"], 2,
        "the requeued delivery was not applied: {found}"
    );
    let nodes = found["deployments"]["nodes"].as_array().unwrap();
    let folder = nodes
        .iter()
        .find(|n| n["externalId"] == "team/app/deploy#18")
        .unwrap();
    assert_eq!(folder["system"]["name"], "billing");
    let feature = nodes
        .iter()
        .find(|n| n["externalId"] == "app/feature%2Ffoo#7")
        .unwrap();
    assert_eq!(
        (feature["system"]["name"].as_str(), feature["ref"].as_str()),
        (Some("app"), Some("feature/foo"))
    );
    let again = shiplog(&db, Some(&config), &["replay", "--dry-run"]);
    assert!(
        again.contains("0 deployments would move") && again.contains("0 deployments would appear"),
        "{again}"
    );
}
