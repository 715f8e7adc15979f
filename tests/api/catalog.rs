//! The catalog (`[systems.<name>]`): teams own systems, aliases fold the tools' names into the
//! catalog's, and every read path filters by team.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shiplog::config::Settings;

use crate::contract::send_fixture;
use crate::helpers::{TestDb, generic, spawn_app_on};

/// Three tools' names for one system (GitLab's project path, GitHub's repository, the generic
/// webhook's word), and a second team's system.
const CATALOG: &str = r#"
[systems.deployer]
team = "platform"
description = "Deploys the deployment-webhooks project"
repository = "gitlab:root/test-deployment-webhooks"
links = { runbook = "https://wiki.example.com/deployer", dashboard = "https://grafana.example.com/d/deployer" }
tags = { tier = "1", domain = "delivery" }
aliases = ["root/test-deployment-webhooks", "Codertocat/Hello-World", "deployer-api"]

[systems.billing]
team = "payments"
"#;

fn with_catalog(settings: &mut Settings, text: &str) {
    let parsed = Settings::from_toml(text).expect("the catalog is valid");
    settings.systems = parsed.systems;
    settings.checked_catalog = parsed.checked_catalog;
    settings.mapping = parsed.mapping;
}

async fn catalogued_app() -> (Arc<TestDb>, crate::helpers::TestApp) {
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |s| with_catalog(s, CATALOG)).await;
    send_fixture(&app, "gitlab", "deployment_success.json").await;
    send_fixture(&app, "github", "deployment_status_created_success.json").await;
    let mut api = generic("d-1", "failed");
    api["system"] = json!("deployer-api");
    app.deliver(api).await;
    app.deliver(generic("b-1", "succeeded")).await;
    (db, app)
}

fn names(list: &Value, field: &str) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap_or("null").to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn aliases_fold_three_tools_names_into_one_system_its_team_owns() {
    let (_db, app) = catalogued_app().await;
    let data = app
        .data(
            "{ systems { name team { name } description repository repositoryUrl links { name url } tags { key value } }
               teams { name systemNames systems { name } deployments { totalCount nodes { rawSystem source } } }
               teamNames team(name: \"nobody\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(names(&data["systems"], "name"), ["billing", "deployer"]);
    let deployer = data["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "deployer")
        .unwrap();
    assert_eq!(deployer["team"]["name"], "platform");
    assert_eq!(deployer["description"], "Deploys the deployment-webhooks project");
    assert_eq!(deployer["repository"], "gitlab:root/test-deployment-webhooks");
    assert_eq!(
        deployer["repositoryUrl"],
        "https://gitlab.com/root/test-deployment-webhooks"
    );
    assert_eq!(
        deployer["links"],
        json!([{ "name": "dashboard", "url": "https://grafana.example.com/d/deployer" },
               { "name": "runbook", "url": "https://wiki.example.com/deployer" }])
    );
    assert_eq!(
        deployer["tags"],
        json!([{ "key": "domain", "value": "delivery" }, { "key": "tier", "value": "1" }])
    );
    assert_eq!(data["teamNames"], json!(["payments", "platform"]));
    assert_eq!(data["team"], Value::Null);
    let platform = &data["teams"][1];
    assert_eq!(platform["name"], "platform");
    assert_eq!(platform["systemNames"], json!(["deployer"]));
    assert_eq!(platform["deployments"]["totalCount"], 3);
    assert_eq!(
        names(&platform["deployments"]["nodes"], "rawSystem"),
        [
            "Codertocat/Hello-World",
            "deployer-api",
            "root/test-deployment-webhooks"
        ],
        "the tools' own words are kept beside the catalog's name"
    );
    assert_eq!(data["teams"][0]["deployments"]["totalCount"], 1);
    app.stop().await;
}

#[tokio::test]
async fn every_read_path_filters_by_team() {
    let (_db, app) = catalogued_app().await;
    let window = r#"from: "2000-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z""#;
    let query = format!(
        "{{ platform: deployments(filter: {{ teams: [\"platform\"] }}) {{ totalCount }}
            both: deployments(filter: {{ teams: [\"platform\"], systems: [\"billing\"] }}) {{ totalCount }}
            nobody: deployments(filter: {{ teams: [\"nobody\"] }}) {{ totalCount nodes {{ id }} }}
            list: deploymentList({window}, teams: [\"payments\"]) {{ system team }}
            all: deploymentList({window}) {{ team }}
            frequency: deploymentFrequency({window}, interval: WEEK, teams: [\"platform\"]) {{ count }}
            annotations: deploymentAnnotations({window}, teams: [\"payments\"]) {{ tags }}
            systemNames(teams: [\"payments\"])
            board(teams: [\"platform\"]) {{ rows {{ system {{ name }} }} }}
            dora: doraMetrics({window}, environments: [\"production\", \"staging\"], groupBy: [TEAM]) {{ team deployments failedDeployments }}
            team(name: \"platform\") {{ doraMetrics({window}, environments: [\"production\", \"staging\"]) {{ team deployments }} }}
            system(name: \"billing\") {{ team {{ name systemNames }} }} }}"
    );
    let data = app.data(&query, json!({})).await;
    assert_eq!(data["platform"]["totalCount"], 3);
    assert_eq!(data["both"]["totalCount"], 0, "billing is not platform's");
    assert_eq!(data["nobody"], json!({ "totalCount": 0, "nodes": [] }));
    assert_eq!(data["list"], json!([{ "system": "billing", "team": "payments" }]));
    assert_eq!(
        names(&data["all"], "team"),
        ["payments", "platform", "platform", "platform"]
    );
    let counted: i64 = data["frequency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 3);
    assert!(
        data["annotations"][0]["tags"]
            .as_str()
            .unwrap()
            .ends_with(",payments"),
        "{}",
        data["annotations"]
    );
    assert_eq!(data["systemNames"], json!(["billing"]));
    assert_eq!(
        data["board"]["rows"],
        json!([{ "system": { "name": "deployer" } }])
    );
    let dora = &data["dora"];
    assert_eq!(
        dora,
        &json!([{ "team": "payments", "deployments": 1, "failedDeployments": 0 },
                 { "team": "platform", "deployments": 3, "failedDeployments": 1 }])
    );
    assert_eq!(
        data["team"]["doraMetrics"],
        json!([{ "team": "platform", "deployments": 3 }])
    );
    assert_eq!(
        data["system"]["team"],
        json!({ "name": "payments", "systemNames": ["billing"] })
    );
    app.stop().await;
}

#[tokio::test]
async fn a_team_subscription_hears_only_its_systems() {
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db, |s| with_catalog(s, CATALOG)).await;
    let events = "subscription($filter: DeploymentFilter) { deploymentEvents(filter: $filter) {
        deployment { externalId system { name team { name } } } } }";
    let mut platform = app
        .subscribe(events, json!({ "filter": { "teams": ["platform"] } }))
        .await;
    app.deliver(generic("b-1", "succeeded")).await;
    let mut api = generic("d-1", "running");
    api["system"] = json!("deployer-api");
    app.deliver(api).await;
    let event = platform
        .next_event(Duration::from_secs(5))
        .await
        .expect("the platform event");
    assert_eq!(
        event["deploymentEvents"]["deployment"],
        json!({ "externalId": "d-1", "system": { "name": "deployer", "team": { "name": "platform" } } })
    );
    assert!(
        platform.next_event(Duration::from_millis(500)).await.is_none(),
        "billing (payments) was filtered out"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_catalog_alias_is_replayed_over_history() {
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let mut api = generic("d-1", "succeeded");
    api["system"] = json!("deployer-api");
    app.deliver(api).await;
    app.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, CATALOG).unwrap();
    let moved = crate::replay::replay(&db, &config);
    assert!(moved.contains("1 deployments moved"), "{moved}");
    let app = spawn_app_on(db, |s| with_catalog(s, CATALOG)).await;
    let data = app
        .data(
            "{ systemNames deployments { nodes { system { team { name } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["systemNames"], json!(["deployer"]));
    assert_eq!(
        data["deployments"]["nodes"][0]["system"]["team"]["name"],
        "platform"
    );
    app.stop().await;
}

#[test]
fn a_bad_catalog_names_the_table_and_what_to_write() {
    let cases = [
        (
            "[systems.billing]\nrepository = \"acme/billing\"\n",
            "[systems.billing] repository",
        ),
        (
            "[systems.billing]\nlinks = { runbook = \"wiki/billing\" }\n",
            "[systems.billing] links",
        ),
        ("[systems.billing]\nowner = \"payments\"\n", "owner"),
        (
            "[mapping.system_aliases]\nledger = [\"shared\"]\n[systems.billing]\naliases = [\"shared\"]\n",
            "already an alias of `ledger`",
        ),
    ];
    for (text, said) in cases {
        let error = Settings::from_toml(text).unwrap_err().to_string();
        assert!(error.contains(said), "{text}: {error}");
    }
}

fn backstage_dir() -> std::path::PathBuf {
    crate::fixtures::fixture_dir("backstage")
}

#[tokio::test]
async fn backstage_files_fold_three_tools_names_and_a_table_wins_field_by_field() {
    let text = format!(
        "[catalog]\nbackstage_files = [\"{}/*.yaml\"]\n[systems.deployer]\ndescription = \"From the TOML table\"\n",
        backstage_dir().display()
    );
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db, |s| with_catalog(s, &text)).await;
    send_fixture(&app, "gitlab", "deployment_success.json").await;
    send_fixture(&app, "github", "deployment_status_created_success.json").await;
    send_fixture(&app, "argocd", "body_succeeded.rendered.derived.json").await;
    let data = app
        .data(
            "{ systemNames system(name: \"deployer\") { team { name } description repository links { name url }
                 tags { key value } deployments { totalCount nodes { rawSystem source tags { key value } } } }
               teams { name systemNames } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["systemNames"],
        json!(["deployer"]),
        "three tools, one system"
    );
    let deployer = &data["system"];
    assert_eq!(
        deployer["team"]["name"], "platform",
        "spec.owner group:default/platform"
    );
    assert_eq!(deployer["description"], "From the TOML table");
    assert_eq!(deployer["repository"], "github:Codertocat/Hello-World");
    assert_eq!(
        deployer["links"],
        json!([{ "name": "Dashboard", "url": "https://grafana.example.com/d/deployer" }])
    );
    assert_eq!(
        deployer["tags"],
        json!([{ "key": "lifecycle", "value": "production" }, { "key": "type", "value": "service" }])
    );
    assert_eq!(deployer["deployments"]["totalCount"], 3);
    assert_eq!(
        names(&deployer["deployments"]["nodes"], "source"),
        ["argocd", "github", "gitlab"]
    );
    let argo = deployer["deployments"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["source"] == "argocd")
        .unwrap();
    assert!(
        argo["tags"]
            .as_array()
            .unwrap()
            .contains(&json!({ "key": "cluster_name", "value": "gke-alpha-01-europe-west1" })),
        "Argo CD's labels are tags: {argo}"
    );
    assert_eq!(
        data["teams"],
        json!([{ "name": "CNCF", "systemNames": ["backstage-existing"] },
               { "name": "platform", "systemNames": ["deployer"] },
               { "name": "team-a", "systemNames": ["artist-lookup"] }]),
        "the Group and the API entities are not systems"
    );
    app.stop().await;
}

#[test]
fn backstage_paths_start_at_the_settings_file_and_a_pattern_matching_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("catalog")).unwrap();
    std::fs::copy(
        backstage_dir().join("deployer.catalog-info.yaml"),
        dir.path().join("catalog/catalog-info.yaml"),
    )
    .unwrap();
    let config = dir.path().join("shiplog.toml");
    let run = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
            .current_dir(std::env::temp_dir())
            .args(["--config", config.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, said) = run("[catalog]\nbackstage_files = [\"catalog/**/catalog-info.yaml\"]\n");
    assert!(
        ok && said.contains("catalog: 1 systems, 1 teams (platform)"),
        "{said}"
    );
    let (ok, said) = run("[catalog]\nbackstage_files = [\"catalgo/*.yaml\"]\n");
    assert!(
        !ok && said.contains("no file matches") && said.contains("catalgo"),
        "{said}"
    );
    // A monorepo: two Components with one repository slug. The shared alias names neither,
    // and the server starts.
    std::fs::write(
        dir.path().join("catalog/sibling.yaml"),
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: deployer-worker\n  annotations:\n    github.com/project-slug: Codertocat/Hello-World\nspec:\n  type: service\n  lifecycle: production\n  owner: platform\n",
    )
    .unwrap();
    let (ok, said) = run("[catalog]\nbackstage_files = [\"catalog/*.yaml\"]\n");
    assert!(
        ok && said.contains("catalog: 2 systems, 1 teams (platform)"),
        "{said}"
    );
    let (ok, said) = run(
        "[catalog]\nbackstage_files = [\"catalog/*.yaml\"]\n[systems.other]\naliases = [\"velero-test\"]\n",
    );
    assert!(
        !ok && said.contains("velero-test") && said.contains("catalog-info.yaml (Component deployer)"),
        "an alias two places claim names both: {said}"
    );
}

/// The running server's teams.
async fn read(server: &crate::crash::Server) -> Value {
    server
        .graphql(json!({ "query": "{ teams { name systemNames } }" }))
        .await["data"]["teams"]
        .clone()
}

/// The server's teams once they are `expected`, or as they are after 15 s.
async fn until(server: &crate::crash::Server, expected: &Value) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = read(server).await;
        if now == *expected || std::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Backstage Component, as `catalog-info.yaml` holds it.
fn component(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: group:default/{owner}\n"
    )
}

#[tokio::test]
async fn the_running_server_reads_a_changed_catalog_and_on_sighup_keeping_the_last_good_one() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::create_dir(dir.path().join("catalog")).unwrap();
    std::fs::write(
        dir.path().join("catalog/billing.yaml"),
        component("billing", "payments"),
    )
    .unwrap();
    let settings = |team: &str| {
        format!(
            "[catalog]\nbackstage_files = [\"catalog/*.yaml\"]\n\n[systems.billing]\nteam = \"{team}\"\naliases = [\"billing-api\"]\n"
        )
    };
    std::fs::write(&config, settings("payments")).unwrap();
    let server = crate::crash::Server::start_with(&db, |command| {
        command.arg("--config").arg(&config);
    })
    .await;
    assert_eq!(
        read(&server).await,
        json!([{ "name": "payments", "systemNames": ["billing"] }])
    );

    // The file changes: the server reads it by itself.
    std::fs::write(&config, settings("platform")).unwrap();
    let expected = json!([{ "name": "platform", "systemNames": ["billing"] }]);
    assert_eq!(until(&server, &expected).await, expected);
    // A broken file is logged; the last good catalog stays.
    std::fs::write(&config, "[systems.billing]\nteam = \n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(read(&server).await, expected);
    std::fs::write(&config, settings("platform")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A new Backstage file is no change to any file read so far: SIGHUP reads it.
    std::fs::write(
        dir.path().join("catalog/search.yaml"),
        component("search", "discovery"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(read(&server).await, expected, "nothing re-read it yet");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let both = json!([{ "name": "discovery", "systemNames": ["search"] }, { "name": "platform", "systemNames": ["billing"] }]);
    assert_eq!(until(&server, &both).await, both);

    // The new rules apply to deliveries from now on: the alias folds into billing.
    let response = reqwest::Client::new()
        .post(server.url("/webhooks/generic"))
        .bearer_auth(crate::helpers::SECRET)
        .json(&json!({ "id": "a-1", "system": "billing-api", "environment": "production", "status": "succeeded" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let data = server
        .graphql(json!({ "query": "{ deployments { nodes { system { name team { name } } } } }" }))
        .await;
    assert_eq!(
        data["data"]["deployments"]["nodes"],
        json!([{ "system": { "name": "billing", "team": { "name": "platform" } } }]),
        "{data}"
    );
}
