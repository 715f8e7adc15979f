//! Real GraphQL clients against a real server: graphql-http's server audit (the GraphQL
//! Foundation's GraphQL-over-HTTP checks) and Apollo Client's InMemoryCache reading two
//! selections of the board. Both are Node scripts in tests/clients, pinned by its lockfile.
//!
//! Needs Node 20+ and npm: the first run installs the pinned packages (`npm ci`). `.ci/run`
//! sets SHIPLOG_REQUIRE_NODE=1, so there neither check can be skipped; elsewhere, without
//! Node, they say so and pass without running.

use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::sync::OnceCell;

use crate::helpers::{TestApp, spawn_app};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Installs the pinned packages once per test run; false when Node cannot be used here.
async fn node_ready() -> bool {
    static READY: OnceCell<bool> = OnceCell::const_new();
    *READY
        .get_or_init(|| async {
            let dir = scripts();
            let installed = dir.join("node_modules/graphql-http/package.json").exists();
            let ready = installed || {
                let npm = tokio::process::Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir)
                    .status()
                    .await;
                matches!(npm, Ok(status) if status.success())
            };
            let node = tokio::process::Command::new("node")
                .arg("--version")
                .output()
                .await;
            let ready = ready && matches!(node, Ok(out) if out.status.success());
            assert!(
                ready || std::env::var("SHIPLOG_REQUIRE_NODE").is_err(),
                "SHIPLOG_REQUIRE_NODE is set but Node/npm could not install tests/clients"
            );
            ready
        })
        .await
}

/// Runs one script against the app's /graphql; its report is the failure message.
async fn run(app: &TestApp, script: &str, args: &[&str]) {
    let output = tokio::process::Command::new("node")
        .arg(scripts().join(script))
        .arg(app.url("/graphql"))
        .args(args)
        .current_dir(scripts())
        .output()
        .await
        .expect("run node");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{script} failed:\n{report}");
    eprintln!("{report}");
}

#[tokio::test]
async fn graphql_http_audit_passes_every_must_and_should() {
    if !node_ready().await {
        eprintln!("skipped: Node 20+ and npm run graphql-http's audit (.ci/run requires them)");
        return;
    }
    let app = spawn_app().await;
    run(&app, "audit.mjs", &[]).await;
}

#[tokio::test]
async fn apollo_client_caches_two_views_of_the_board_without_losing_either() {
    if !node_ready().await {
        eprintln!("skipped: Node 20+ and npm run Apollo Client (.ci/run requires them)");
        return;
    }
    let app = spawn_app().await;
    for (id, environment) in [("a-1", "staging"), ("a-2", "production")] {
        app.deliver(json!({ "id": id, "system": "billing", "environment": environment,
            "status": "succeeded", "version": "1.0.0" }))
            .await;
    }
    app.settle().await;
    // Two views selecting different parts of the board, each with the ids Apollo keys by.
    run(&app, "apollo-board.mjs", &["--ids"]).await;
}
