//! Sources declared in a TOML file, served by the real binary: every kind of auth, `when`, the
//! status table, several deployments from one delivery, redelivery, and a mistake in a mapping
//! (stored failed, 202) recovered by `shiplog replay` once the mapping is fixed. Also the
//! commands for writing one (`try-source`, `check-config`, `recipes`) and a bad file stopping
//! the server with a message that names the source and the key.

use serde_json::{Value, json};

use crate::crash::Server;
use crate::fixtures::fixture_dir;
use crate::helpers::TestDb;

const BUILDKITE: &str = "webhook_build_finished.from-rest.derived.json";

/// Declarations over Buildkite's webhook (the recipe, with each kind of auth), Flux's signed
/// one, a monorepo build listing its services, and one with a mistake in `system`.
fn declarations(system_of_broken: &str) -> String {
    format!(
        r#"
[sources.kite]
recipe = "buildkite"

[sources.kite-bearer]
recipe = "buildkite"
[sources.kite-bearer.auth]
kind = "bearer"

[sources.kite-basic]
recipe = "buildkite"
[sources.kite-basic.auth]
kind = "basic"

[sources.kite-query]
recipe = "buildkite"
[sources.kite-query.auth]
kind = "query"
name = "key"

[sources.gitops]
recipe = "flux"

# One build deploys every service it lists: one deployment per id, fields paired by position.
[sources.monorepo]
recipe = "buildkite"
id = '.build.id + ":" + (.build.meta_data.services | split(",")[])'
system = '.build.meta_data.services | split(",")[]'

[sources.broken]
recipe = "buildkite"
system = '{system_of_broken}'

[secrets]
kite = "kite-secret"
kite-bearer = "bearer-secret"
kite-basic = "basic-secret"
kite-query = "query-secret"
gitops = "flux-hmac-secret"
monorepo = "mono-secret"
broken = "broken-secret"
"#
    )
}

fn body(tool: &str, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture_dir(tool).join(name)).unwrap()).unwrap()
}

fn shiplog(config: &std::path::Path, db: &TestDb, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["--config", config.to_str().unwrap(), "--database-url", db.url()])
        .args(args)
        .env_remove("SHIPLOG_CONFIG")
        .output()
        .unwrap()
}

type Auth = fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder;

async fn post(server: &Server, route: &str, auth: Auth, body: &[u8]) -> (u16, Value) {
    let request = reqwest::Client::new()
        .post(server.url(route))
        .header("content-type", "application/json")
        .body(body.to_vec());
    let response = auth(request).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn deployments(server: &Server) -> Vec<Value> {
    let query = json!({ "query": "{ deployments(first: 100) { nodes { source externalId system { name }
        environment { name } status rawStatus commitSha } } }" });
    let answer = server.graphql(query).await;
    answer["data"]["deployments"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn find<'a>(found: &'a [Value], source: &str, id: &str) -> &'a Value {
    found
        .iter()
        .find(|d| d["source"] == source && d["externalId"] == id)
        .unwrap_or_else(|| panic!("{source} {id} in {found:?}"))
}

#[tokio::test]
async fn a_declared_source_is_verified_journaled_deduplicated_and_recovered() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, declarations(".pipeline.slugg")).unwrap();
    let path = config.clone();
    let server = Server::start_with(&db, move |command| {
        command.args(["--config", path.to_str().unwrap()]);
    })
    .await;
    let kite = serde_json::to_vec(&body("buildkite", BUILDKITE)).unwrap();
    let id = "f62a1b4d-10f9-4790-bc1c-e2c3a0c80983";

    // Each kind of auth: the right secret is taken, a wrong one is 401.
    let ways: [(&str, Auth, Auth); 4] = [
        (
            "/webhooks/kite",
            |r| r.header("X-Buildkite-Token", "kite-secret"),
            |r| r.header("X-Buildkite-Token", "nope"),
        ),
        (
            "/webhooks/kite-bearer",
            |r| r.bearer_auth("bearer-secret"),
            |r| r.bearer_auth("nope"),
        ),
        (
            "/webhooks/kite-basic",
            |r| r.basic_auth("buildkite", Some("basic-secret")),
            |r| r.basic_auth("buildkite", Some("nope")),
        ),
        (
            "/webhooks/kite-query?key=query-secret",
            |r| r,
            |r| r.query(&[("key", "nope")]),
        ),
    ];
    for (route, right, wrong) in ways {
        let (status, answer) = post(&server, route, right, &kite).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("accepted")),
            "{route}: {answer}"
        );
        let wrong_route = route.split('?').next().unwrap();
        let (status, answer) = post(&server, wrong_route, wrong, &kite).await;
        assert_eq!(status, 401, "{route} with a wrong secret: {answer}");
    }
    // HMAC over the body (Flux's generic-hmac provider).
    let flux = std::fs::read(
        fixture_dir("flux").join("generic_webhook_kustomization_reconciliation_succeeded.derived.json"),
    )
    .unwrap();
    let signature = shiplog::sources::Signature {
        header: "X-Signature".into(),
        encoding: shiplog::sources::Encoding::Hex,
        prefix: "sha256=".into(),
    };
    let signed = signature.sign(b"flux-hmac-secret", &flux);
    let request = reqwest::Client::new().post(server.url("/webhooks/gitops?env=staging"));
    let response = request
        .header("X-Signature", signed)
        .body(flux.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let forged = signature.sign(b"another-secret", &flux);
    let response = reqwest::Client::new()
        .post(server.url("/webhooks/gitops"))
        .header("X-Signature", forged)
        .body(flux)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Redelivery: the same delivery key, nothing twice.
    let (_, again) = post(
        &server,
        "/webhooks/kite",
        |r| r.header("X-Buildkite-Token", "kite-secret"),
        &kite,
    )
    .await;
    assert_eq!(again["status"], "duplicate", "{again}");
    // `when`: another event is journaled as ignored, with the rule's reason.
    let mut created = body("buildkite", BUILDKITE);
    created["event"] = json!("build.created");
    let (status, ignored) = post(
        &server,
        "/webhooks/kite",
        |r| r.header("X-Buildkite-Token", "kite-secret"),
        &serde_json::to_vec(&created).unwrap(),
    )
    .await;
    assert_eq!(
        (status, ignored["status"].as_str()),
        (200, Some("ignored")),
        "{ignored}"
    );
    // The status table: blocked is QUEUED; a word the table lacks is UNKNOWN, kept as sent.
    let mut odd = body("buildkite", BUILDKITE);
    odd["build"]["id"] = json!("odd-build");
    odd["build"]["state"] = json!("teleported");
    post(
        &server,
        "/webhooks/kite",
        |r| r.header("X-Buildkite-Token", "kite-secret"),
        &serde_json::to_vec(&odd).unwrap(),
    )
    .await;
    // Several deployments from one delivery: one per service the build lists.
    let mut mono = body("buildkite", BUILDKITE);
    mono["build"]["meta_data"]["services"] = json!("api,web");
    let (status, answer) = post(
        &server,
        "/webhooks/monorepo",
        |r| r.header("X-Buildkite-Token", "mono-secret"),
        &serde_json::to_vec(&mono).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["deploymentIds"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    // A mapping mistake: stored as failed, 202, with the expression that failed.
    let (status, failed) = post(
        &server,
        "/webhooks/broken",
        |r| r.header("X-Buildkite-Token", "broken-secret"),
        &kite,
    )
    .await;
    assert_eq!(
        (status, failed["status"].as_str()),
        (202, Some("stored_as_failed")),
        "{failed}"
    );
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("`system` = '.pipeline.slugg'"),
        "{failed}"
    );

    let found = deployments(&server).await;
    assert_eq!(find(&found, "kite", id)["status"], "SUCCEEDED");
    assert_eq!(find(&found, "kite", id)["system"]["name"], "great-pipeline");
    assert_eq!(
        find(&found, "kite-basic", id)["commitSha"],
        "abcd0b72a1e580e90712cdd9eb26d3fb41cd09c8"
    );
    assert_eq!(
        find(
            &found,
            "gitops",
            "7d0cdc51-ddcf-4743-b223-83ca5c699632:main@sha1:731f7eaddfb6af01cb2173e18f0f75b0ba780ef1"
        )["environment"]["name"],
        "staging"
    );
    let unknown = find(&found, "kite", "odd-build");
    assert_eq!(
        (unknown["status"].as_str(), unknown["rawStatus"].as_str()),
        (Some("UNKNOWN"), Some("teleported"))
    );
    assert_eq!(
        find(&found, "monorepo", &format!("{id}:api"))["system"]["name"],
        "api"
    );
    assert_eq!(
        find(&found, "monorepo", &format!("{id}:web"))["system"]["name"],
        "web"
    );
    assert!(found.iter().all(|d| d["source"] != "broken"), "{found:?}");
    drop(server);

    // The mapping fixed: replay reads the failed delivery again and the server applies it.
    std::fs::write(&config, declarations(".pipeline.slug")).unwrap();
    let path = config.clone();
    let server = Server::start_with(&db, move |command| {
        command.args(["--config", path.to_str().unwrap()]);
    })
    .await;
    let replay = shiplog(&config, &db, &["replay"]);
    let printed = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success() && printed.contains("1 deliveries are pending again"),
        "{printed}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = deployments(&server).await;
        if found.iter().any(|d| d["source"] == "broken") {
            assert_eq!(find(&found, "broken", id)["system"]["name"], "great-pipeline");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fixed mapping never applied: {found:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_tools_for_writing_one_and_a_bad_file_stopping_the_server() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, declarations(".pipeline.slugg")).unwrap();
    let fixture = fixture_dir("buildkite").join(BUILDKITE);
    // try-source: what it would store, and the failing expression for the broken mapping.
    let tried = shiplog(&config, &db, &["try-source", "kite", fixture.to_str().unwrap()]);
    let printed: Value = serde_json::from_slice(&tried.stdout).unwrap_or(Value::Null);
    assert_eq!(
        printed["parsed"]["deployments"][0]["system"], "great-pipeline",
        "{printed}"
    );
    let tried = shiplog(&config, &db, &["try-source", "broken", fixture.to_str().unwrap()]);
    assert!(!tried.status.success());
    assert!(String::from_utf8_lossy(&tried.stderr).contains("`system` = '.pipeline.slugg' failed"));
    // check-config: a declared source without a secret must be fixed.
    let checked = shiplog(&config, &db, &["check-config"]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    std::fs::write(
        &config,
        declarations(".x").replace("broken = \"broken-secret\"\n", ""),
    )
    .unwrap();
    let checked = shiplog(&config, &db, &["check-config"]);
    assert!(!checked.status.success());
    assert!(String::from_utf8_lossy(&checked.stderr).contains("SHIPLOG_BROKEN_SECRET"));
    // recipes: listed, and printed to copy.
    let listed = String::from_utf8(shiplog(&config, &db, &["recipes"]).stdout).unwrap();
    for recipe in ["aws-codedeploy", "azure-devops", "buildkite", "flux", "harness"] {
        assert!(listed.contains(recipe), "{listed}");
    }
    let printed = String::from_utf8(shiplog(&config, &db, &["recipes", "flux"]).stdout).unwrap();
    assert!(
        printed.contains("[sources.flux.auth]") && printed.contains("hmac-sha256"),
        "{printed}"
    );
    // A mistake stops the server, naming the source, the key and the problem.
    for (bad, says) in [
        (
            "[sources.x]\nrecipe = 'buildkite'\nid = '.build.id |'\n",
            "[sources.x] id: expected",
        ),
        (
            "[sources.x]\nrecipe = 'buildkite'\n[sources.x.statuses]\npassed = 'done'\n",
            "[sources.x.statuses] passed = \"done\"",
        ),
        (
            "[sources.gitlab]\nrecipe = 'buildkite'\n",
            "`gitlab` is a built-in source",
        ),
        (
            "[sources.x]\nrecipe = 'jenkinz'\n",
            "there is no recipe `jenkinz`",
        ),
        (
            "[sources.x]\nrecipe = 'buildkite'\nwhen_ = 'true'\n",
            "unknown field `when_`",
        ),
    ] {
        std::fs::write(&config, bad).unwrap();
        let output = shiplog(&config, &db, &["--listen", "127.0.0.1:0"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad}");
        assert!(stderr.contains(says), "`{says}` for {bad}: {stderr}");
    }
}
