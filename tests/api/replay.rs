//! `shiplog replay` re-maps history after the mapping rules change: in place, idempotently.

use serde_json::json;

use crate::helpers::{TestDb, generic, spawn_app_on};

pub fn replay(db: &TestDb, config: &std::path::Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--database-url",
            db.url(),
            "replay",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn a_new_system_alias_is_replayed_over_history() {
    let db = std::sync::Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let mut api = generic("r-1", "succeeded");
    api["system"] = json!("billing-api");
    app.deliver(api).await;
    app.deliver(generic("r-2", "succeeded")).await;
    let mut search = generic("r-3", "failed");
    search["system"] = json!("search");
    app.deliver(search).await;
    let systems = app.data("{ systemNames }", json!({})).await;
    assert_eq!(
        systems["systemNames"],
        json!(["billing", "billing-api", "search"])
    );
    app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, "[mapping.system_aliases]\nbilling = [\"billing-api\"]\n").unwrap();
    let first = replay(&db, &config);
    assert!(
        first.contains("1 deployments moved") && first.contains("1 systems"),
        "{first}"
    );
    let second = replay(&db, &config);
    assert!(second.contains("0 deployments moved"), "idempotent: {second}");

    let app = spawn_app_on(db, |_| {}).await;
    let data = app
        .data(
            "{ systemNames system(name: \"billing\") { deployments { totalCount edges { node { rawSystem } } } }
               board { rows { system { name } cells { current { externalId } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["systemNames"], json!(["billing", "search"]));
    assert_eq!(data["system"]["deployments"]["totalCount"], 2);
    let raw: Vec<&str> = data["system"]["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["rawSystem"].as_str().unwrap())
        .collect();
    assert!(
        raw.contains(&"billing-api"),
        "the tool's own word is kept: {raw:?}"
    );
    let rows: Vec<&str> = data["board"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["system"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ["billing", "search"], "the board was rebuilt");
}

#[tokio::test]
async fn a_replay_while_serving_costs_at_most_one_retry() {
    let db = std::sync::Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let mut api = generic("w-1", "succeeded");
    api["system"] = json!("billing-api");
    app.deliver(api).await;
    app.deliver(generic("w-2", "succeeded")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, "[mapping.system_aliases]\nbilling = [\"billing-api\"]\n").unwrap();
    assert!(replay(&db, &config).contains("1 systems"));
    // This server still runs without the alias: `billing-api` comes back as a system of its own.
    let mut again = generic("w-3", "running");
    again["system"] = json!("billing-api");
    let first = app.post_generic(&again).await.status();
    let status = if first == 200 {
        first
    } else {
        app.post_generic(&again).await.status()
    };
    assert_eq!(
        status, 200,
        "accepted at the latest on the sender's retry (first answer {first})"
    );
    let data = app
        .data(
            "{ system(name: \"billing-api\") { deployments { totalCount } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["system"]["deployments"]["totalCount"], 1);
}
