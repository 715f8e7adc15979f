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

/// A fake of GitHub's and GitLab's compare APIs answering with the recorded pages: any compare
/// of `acme/billing` is the PyGithub recording (4 commits over 2 pages), of `acme/search`
/// GitLab's documented answer; `acme/gone` and a base named `deadbeef...` (force-pushed away)
/// are 404s, as the hosts answer them.
mod fake_hosts {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, RawQuery, State};
    use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use serde_json::{Value, json};

    use crate::fixtures::fixture_dir;

    pub const GONE_BASE: &str = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

    #[derive(Default)]
    pub struct Hosts {
        pub base: Mutex<String>,
        pub asked: AtomicUsize,
        /// Answers 502 to this many requests first (the worker retries).
        pub failing: AtomicUsize,
    }

    fn recorded(tool: &str, name: &str) -> (Value, HeaderMap) {
        let dir = fixture_dir(tool).join("api");
        let body = serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
        let mut headers = HeaderMap::new();
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}.headers"))) {
            for line in text.lines() {
                if let Some((key, value)) = line.split_once(':') {
                    let key = key.trim().to_lowercase();
                    // The body is sent as it is, not compressed or chunked.
                    if matches!(
                        key.as_str(),
                        "content-encoding" | "transfer-encoding" | "content-length"
                    ) {
                        continue;
                    }
                    if let (Ok(key), Ok(value)) =
                        (HeaderName::try_from(key), HeaderValue::from_str(value.trim()))
                    {
                        headers.append(key, value);
                    }
                }
            }
        }
        (body, headers)
    }

    fn not_found() -> Response {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest/commits/commits#compare-two-commits", "status": "404" })),
        )
            .into_response()
    }

    fn failing(hosts: &Hosts) -> Option<Response> {
        hosts.asked.fetch_add(1, Ordering::SeqCst);
        let left = hosts.failing.load(Ordering::SeqCst);
        (left > 0).then(|| {
            hosts.failing.store(left - 1, Ordering::SeqCst);
            (StatusCode::BAD_GATEWAY, "upstream hiccup").into_response()
        })
    }

    async fn github_compare(
        State(hosts): State<Arc<Hosts>>,
        Path((owner, repo, spec)): Path<(String, String, String)>,
    ) -> Response {
        if let Some(failure) = failing(&hosts) {
            return failure;
        }
        let known = matches!(
            (owner.as_str(), repo.as_str()),
            ("acme", "billing") | ("circleci", "webhook-service")
        );
        if !known || spec.starts_with(GONE_BASE) {
            return not_found();
        }
        let (body, mut headers) = recorded("github", "compare_per_page3_page1.pygithub-replay-2025");
        let base = hosts.base.lock().unwrap().clone();
        let next = format!("{base}/repositories/3544490/compare/{spec}?per_page=3&page=2");
        let link = format!(
            "<{next}>; rel=\"last\", <{next}>; rel=\"next\", <{base}/repositories/3544490/compare/{spec}?per_page=3&page=1>; rel=\"first\""
        );
        headers.insert("link", HeaderValue::from_str(&link).unwrap());
        (headers, axum::Json(body)).into_response()
    }

    async fn github_page_two(State(hosts): State<Arc<Hosts>>, Path(_): Path<(String, String)>) -> Response {
        if let Some(failure) = failing(&hosts) {
            return failure;
        }
        let (body, mut headers) = recorded("github", "compare_per_page3_page2.pygithub-replay-2025");
        headers.remove("link");
        (headers, axum::Json(body)).into_response()
    }

    async fn gitlab_compare(
        State(hosts): State<Arc<Hosts>>,
        Path(project): Path<String>,
        RawQuery(query): RawQuery,
    ) -> Response {
        if let Some(failure) = failing(&hosts) {
            return failure;
        }
        let query = query.unwrap_or_default();
        if project != "acme/search" || !query.contains("from=") || !query.contains("to=") {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "message": "404 Project Not Found" })),
            )
                .into_response();
        }
        let (body, _) = recorded("gitlab", "repository_compare.response.docs");
        axum::Json(body).into_response()
    }

    pub async fn serve() -> (Arc<Hosts>, String) {
        let hosts = Arc::new(Hosts::default());
        let app = axum::Router::new()
            .route("/repos/{owner}/{repo}/compare/{spec}", get(github_compare))
            .route("/repositories/{id}/compare/{spec}", get(github_page_two))
            .route(
                "/api/v4/projects/{project}/repository/compare",
                get(gitlab_compare),
            )
            .with_state(hosts.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        *hosts.base.lock().unwrap() = base.clone();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hosts, base)
    }
}

const CHANGES: &str = "query($system: String!, $first: Int, $after: String) {
    deployments(filter: { systems: [$system] }, first: 1) { nodes { externalId changeCount
      changes(first: $first, after: $after) { state totalCount error nodes { sha title author committedAt url }
        pageInfo { hasNextPage endCursor } } } } }";

async fn changes_of(app: &TestApp, system: &str, first: i64, after: Option<&str>) -> Value {
    let data = app
        .data(
            CHANGES,
            json!({ "system": system, "first": first, "after": after }),
        )
        .await;
    data["deployments"]["nodes"][0].clone()
}

/// The newest deployment's changes once their state is not `PENDING` (the worker reads in the
/// background), or as they are after 20 s.
async fn read_changes(app: &TestApp, system: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let node = changes_of(app, system, 10, None).await;
        let state = node["changes"]["state"].as_str().unwrap_or_default().to_string();
        if (state != "PENDING" && state != "UNKNOWN" && state != "FAILED")
            || std::time::Instant::now() > deadline
        {
            return node;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn deploy(app: &TestApp, id: &str, system: &str, sha: &str, finished: &str) {
    app.deliver(
        json!({ "id": id, "system": system, "environment": "production", "status": "succeeded",
        "commitSha": sha, "finishedAt": finished }),
    )
    .await;
}

#[tokio::test]
async fn each_deployment_lists_the_commits_it_shipped_from_the_git_hosts_compare_apis() {
    let (hosts, base) = fake_hosts::serve().await;
    // The host's first two answers are 502s: the API client retries them.
    hosts.failing.store(2, std::sync::atomic::Ordering::SeqCst);
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        let parsed = shiplog::config::Settings::from_toml(
            "[systems.billing]\nrepository = \"github:acme/billing\"\n\
             [systems.search]\nrepository = \"gitlab:acme/search\"\n\
             [systems.gone]\nrepository = \"github:acme/gone\"\n\
             [systems.rewritten]\nrepository = \"github:acme/billing\"\n",
        )
        .unwrap();
        s.systems = parsed.systems;
        s.checked_catalog = parsed.checked_catalog;
        s.api.github_token = Some("github-token".into());
        s.api.github_url = Some(base.clone());
        s.api.gitlab_token = Some("gitlab-token".into());
        s.api.gitlab_url = Some(base.clone());
        s.retry.first_delay = std::time::Duration::from_millis(50);
    })
    .await;
    for system in ["billing", "search", "gone"] {
        deploy(
            &app,
            &format!("{system}-1"),
            system,
            "1111111111111111111111111111111111111111",
            "2026-11-02T10:00:00Z",
        )
        .await;
        deploy(
            &app,
            &format!("{system}-2"),
            system,
            "2222222222222222222222222222222222222222",
            "2026-11-02T11:00:00Z",
        )
        .await;
    }
    deploy(
        &app,
        "rewritten-1",
        "rewritten",
        fake_hosts::GONE_BASE,
        "2026-11-02T10:00:00Z",
    )
    .await;
    deploy(
        &app,
        "rewritten-2",
        "rewritten",
        "2222222222222222222222222222222222222222",
        "2026-11-02T11:00:00Z",
    )
    .await;

    // GitHub: both pages read, newest first.
    let billing = read_changes(&app, "billing").await;
    assert_eq!(billing["externalId"], "billing-2");
    assert_eq!(billing["changeCount"], 4, "{billing}");
    let changes = &billing["changes"];
    assert_eq!(
        (&changes["state"], &changes["totalCount"]),
        (&json!("FOUND"), &json!(4)),
        "{billing}"
    );
    let shas: Vec<&str> = changes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["sha"].as_str().unwrap()[..8])
        .collect();
    assert_eq!(
        shas,
        ["ecda065e", "0cec0d25", "cb031315", "5bb654d2"],
        "page 2's commit is the newest"
    );
    assert_eq!(
        changes["nodes"][3]["title"],
        "Implement the three authentication schemes"
    );
    assert_eq!(changes["nodes"][3]["author"], "Vincent Jacques");
    assert_eq!(changes["nodes"][3]["committedAt"], "2012-05-25T12:10:54.000Z");
    // Paged: two, then the next two.
    let first = changes_of(&app, "billing", 2, None).await;
    assert_eq!(
        first["changes"]["pageInfo"],
        json!({ "hasNextPage": true, "endCursor": "1" })
    );
    let next = changes_of(&app, "billing", 2, Some("1")).await;
    assert_eq!(next["changes"]["nodes"][0]["sha"], changes["nodes"][2]["sha"]);
    assert_eq!(next["changes"]["pageInfo"]["hasNextPage"], false);

    // GitLab's documented answer.
    let search = read_changes(&app, "search").await;
    assert_eq!(search["changeCount"], 1, "{search}");
    assert_eq!(search["changes"]["nodes"][0]["title"], "JS fix");
    // A repository the host does not have, and a base a force push removed: missing, said why.
    for system in ["gone", "rewritten"] {
        let missing = read_changes(&app, system).await;
        assert_eq!(missing["changes"]["state"], "MISSING", "{system}: {missing}");
        assert_eq!(missing["changeCount"], Value::Null);
        assert!(
            missing["changes"]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{missing}"
        );
    }
    // A first deployment has nothing to compare with.
    let data = app
        .data("{ deployments(filter: { systems: [\"billing\"] }, first: 2) { nodes { externalId changeCount changes { state } } } }", json!({}))
        .await;
    assert_eq!(
        data["deployments"]["nodes"][1],
        json!({ "externalId": "billing-1", "changeCount": null, "changes": { "state": "UNKNOWN" } })
    );

    // DORA's lead time for changes is per commit where the host was read: billing's four
    // commits (2012) to its deployment, not one sample per deployment (the generic bodies
    // carry no `committedAt`, so without the commits there would be none).
    let dora = app
        .data(
            r#"{ doraMetrics(from: "2026-11-01T00:00:00Z", to: "2026-11-08T00:00:00Z", systems: ["billing"], groupBy: []) {
                leadTimeSampleSize medianLeadTimeSeconds } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        dora["doraMetrics"][0],
        json!({ "leadTimeSampleSize": 4, "medianLeadTimeSeconds": 455651462.5 }),
        "{dora}"
    );

    // Each range is read once however often it is asked for.
    let asked = hosts.asked.load(std::sync::atomic::Ordering::SeqCst);
    changes_of(&app, "billing", 10, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        hosts.asked.load(std::sync::atomic::Ordering::SeqCst),
        asked,
        "cached"
    );

    // Staging runs a commit production does not: drift and the board's staging cell say how
    // many commits wait and since when (asking queues the read; the worker answers it).
    deploy_to(
        &app,
        "billing-s1",
        "staging",
        "3333333333333333333333333333333333333333",
    )
    .await;
    let drift = r#"{ system(name: "billing") { drift(from: "staging", to: "production") {
        inSync aheadBy behindBy oldestWaitingCommitAt changesState } }
      board(systems: ["billing"]) { rows { cells { environment { name } waiting { environment commits oldestCommitAt state compareUrl } } } } }"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let data = loop {
        let data = app.data(drift, json!({})).await;
        if data["system"]["drift"]["changesState"] == "FOUND" || std::time::Instant::now() > deadline {
            break data;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        data["system"]["drift"],
        json!({ "inSync": false, "aheadBy": 4, "behindBy": 0, "oldestWaitingCommitAt": "2012-05-25T12:10:54.000Z", "changesState": "FOUND" }),
        "{data}"
    );
    assert_eq!(
        data["board"]["rows"][0]["cells"],
        json!([
            { "environment": { "name": "staging" }, "waiting": { "environment": "production", "commits": 4,
              "oldestCommitAt": "2012-05-25T12:10:54.000Z", "state": "FOUND",
              "compareUrl": "https://github.com/acme/billing/compare/2222222222222222222222222222222222222222...3333333333333333333333333333333333333333" } },
            { "environment": { "name": "production" }, "waiting": null }
        ])
    );
    app.stop().await;
}

async fn deploy_to(app: &TestApp, id: &str, environment: &str, sha: &str) {
    app.deliver(
        json!({ "id": id, "system": "billing", "environment": environment, "status": "succeeded",
        "commitSha": sha, "finishedAt": "2026-11-02T12:00:00Z" }),
    )
    .await;
}

#[tokio::test]
async fn a_page_of_deployments_reads_its_change_counts_in_constant_statements() {
    let (_hosts, base) = fake_hosts::serve().await;
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        let parsed =
            shiplog::config::Settings::from_toml("[systems.billing]\nrepository = \"github:acme/billing\"\n")
                .unwrap();
        s.systems = parsed.systems;
        s.checked_catalog = parsed.checked_catalog;
        s.api.github_token = Some("github-token".into());
        s.api.github_url = Some(base.clone());
    })
    .await;
    for n in 0..30 {
        deploy(
            &app,
            &format!("d-{n}"),
            "billing",
            &format!("{n:040x}"),
            &format!("2026-11-02T10:{n:02}:00Z"),
        )
        .await;
    }
    // Every deployment but the first has its range read.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let data = app
            .data("{ deployments(first: 30) { nodes { changeCount } } }", json!({}))
            .await;
        let read = data["deployments"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["changeCount"] == 4)
            .count();
        if read == 29 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{read} of 29 read");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The counter is the whole process's, so a background poll (the enrichment and commits
    // workers) can land in one measurement: the fewest of three is the page's cost.
    let mut costs = Vec::new();
    for first in [2, 30] {
        let mut fewest = u64::MAX;
        for _ in 0..3 {
            app.settle().await;
            let before = app.store.statements();
            let data = app
                .data(
                    "query($first: Int) { deployments(first: $first) { nodes { changeCount changes(first: 1) { state } } } }",
                    json!({ "first": first }),
                )
                .await;
            assert_eq!(
                data["deployments"]["nodes"].as_array().unwrap().len(),
                first as usize
            );
            fewest = fewest.min(app.store.statements() - before);
        }
        costs.push(fewest);
    }
    assert_eq!(
        costs[0], costs[1],
        "statements for 2 and for 30 deployments: {costs:?}"
    );
    app.stop().await;
}

/// The query's answer once its `deployments` list something (the worker tags in the
/// background), or as it is after 20 s.
async fn once_tagged(app: &TestApp, query: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let data = app.data(query, json!({})).await;
        if !data["deployments"]["nodes"].as_array().unwrap().is_empty()
            || std::time::Instant::now() > deadline
        {
            return data;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_rollback_only_history_tells_is_tagged_so_every_tag_filter_finds_it() {
    // No Git host configured: the worker still places deployments in their history.
    let app = spawn_app_on(Arc::new(TestDb::new().await), |_| {}).await;
    ship(&app, "d-1", "1.0", "aaaa1", "2026-11-02T10:00:00Z").await;
    ship(&app, "d-2", "1.1", "bbbb2", "2026-11-02T11:00:00Z").await;
    ship(&app, "d-3", "1.0", "aaaa1", "2026-11-02T12:00:00Z").await;
    let query = r#"{ deployments(filter: { tags: ["rollback:true"] }) { nodes { externalId isRollback tags { key value } } }
      deploymentList(from: "2026-11-01T00:00:00Z", to: "2026-11-08T00:00:00Z", tags: ["rollback:true"]) { id }
      deploymentFrequency(from: "2026-11-02T00:00:00Z", to: "2026-11-02T23:59:59Z", interval: DAY, tags: ["rollback:true"]) { count } }"#;
    let data = once_tagged(&app, query).await;
    assert_eq!(
        data["deployments"]["nodes"],
        json!([{ "externalId": "d-3", "isRollback": true, "tags": [{ "key": "rollback", "value": "true" }] }]),
        "{data}"
    );
    assert_eq!(data["deploymentList"].as_array().unwrap().len(), 1, "{data}");
    assert_eq!(data["deploymentFrequency"], json!([{ "count": 1 }]), "{data}");
    app.stop().await;
}

/// Posts CircleCI's published `workflow-completed` body (a GitHub OAuth project) as another
/// workflow run of another commit, signed the way CircleCI signs.
async fn circleci_workflow(app: &TestApp, run: &str, sha: &str, stopped: &str) {
    let path = crate::fixtures::fixture_dir("circleci").join("workflow_completed.github-oauth.json");
    let mut body: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    body["id"] = json!(format!("event-{run}"));
    body["workflow"]["id"] = json!(format!("workflow-{run}"));
    body["workflow"]["stopped_at"] = json!(stopped);
    body["happened_at"] = json!(stopped);
    body["pipeline"]["vcs"]["revision"] = json!(sha);
    let auth = crate::helpers::registry().get("circleci").unwrap().auth().clone();
    let response = crate::contract::send(
        app,
        "circleci",
        &auth,
        Some(&crate::helpers::secret_of("circleci")),
        serde_json::to_vec(&body).unwrap(),
        &crate::fixtures::fixture_headers(&path),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn the_repository_a_payload_names_is_read_where_the_catalog_names_none() {
    let (_hosts, base) = fake_hosts::serve().await;
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        s.api.github_token = Some("github-token".into());
        s.api.github_url = Some(base.clone());
    })
    .await;
    circleci_workflow(
        &app,
        "1",
        "1111111111111111111111111111111111111111",
        "2026-11-02T10:00:00Z",
    )
    .await;
    circleci_workflow(
        &app,
        "2",
        "2222222222222222222222222222222222222222",
        "2026-11-02T11:00:00Z",
    )
    .await;
    let node = read_changes(&app, "webhook-service").await;
    assert_eq!(node["externalId"], "workflow-2", "{node}");
    assert_eq!(
        (&node["changes"]["state"], &node["changeCount"]),
        (&json!("FOUND"), &json!(4)),
        "the pipeline's repository (vcs.target_repository_url) was compared: {node}"
    );
    let data = app
        .data(
            "{ deployments(first: 1, filter: { tags: [\"repository:github:circleci/webhook-service\"] }) { nodes { externalId compareUrl } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["deployments"]["nodes"][0],
        json!({ "externalId": "workflow-2", "compareUrl": "https://github.com/circleci/webhook-service/compare/1111111111111111111111111111111111111111...2222222222222222222222222222222222222222" })
    );
    app.stop().await;
}

#[tokio::test]
async fn a_burst_longer_than_a_page_is_followed_at_once_not_when_it_settles() {
    // More successes than the worker reads in one page (200), all within the two minutes in
    // which ids are not settled yet: the last one, a rollback, is still tagged within seconds.
    let app = spawn_app_on(Arc::new(TestDb::new().await), |_| {}).await;
    for n in 0..230 {
        let minute = format!("2026-11-02T{:02}:{:02}:00Z", 10 + n / 60, n % 60);
        ship(
            &app,
            &format!("d-{n}"),
            &format!("1.{n}"),
            &format!("{n:040x}"),
            &minute,
        )
        .await;
    }
    ship(
        &app,
        "d-230",
        "1.5",
        &format!("{:040x}", 5),
        "2026-11-02T14:00:00Z",
    )
    .await;
    let query = r#"{ deployments(filter: { tags: ["rollback:true"] }) { nodes { externalId } } }"#;
    let data = once_tagged(&app, query).await;
    assert_eq!(
        data["deployments"]["nodes"],
        json!([{ "externalId": "d-230" }]),
        "{data}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_page_placed_at_once_agrees_with_each_deployment_placed_alone() {
    use sea_orm::EntityTrait;
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let at = |hour: u32| format!("2026-11-02T{hour:02}:00:00Z");
    // An upgrade, a rollback, a redeploy, two at the same time, one older than all (a late
    // import), a failure in between, a commit-only history, and another environment.
    ship(&app, "a-1", "1.0", "aaaa1", &at(1)).await;
    ship(&app, "a-2", "1.1", "bbbb2", &at(2)).await;
    ship(&app, "a-3", "1.0", "aaaa1", &at(3)).await;
    ship(&app, "a-4", "1.0", "aaaa1", &at(4)).await;
    ship(&app, "a-5", "1.2", "cccc3", &at(5)).await;
    ship(&app, "a-6", "1.3", "dddd4", &at(5)).await;
    ship(&app, "a-0", "0.9", "eeee5", &at(0)).await;
    app.deliver(
        json!({ "id": "a-7", "system": "billing", "environment": "production",
        "status": "failed", "version": "1.4", "finishedAt": at(6) }),
    )
    .await;
    ship(&app, "a-8", "1.1", "bbbb2", &at(7)).await;
    for (n, sha) in ["ffff1", "ffff2", "ffff1"].iter().enumerate() {
        app.deliver(
            json!({ "id": format!("c-{n}"), "system": "ledger", "environment": "production",
            "status": "succeeded", "commitSha": sha, "finishedAt": at(n as u32 + 1) }),
        )
        .await;
    }
    ship_to(&app, "s-1", "staging", ("1.0", "aaaa1"), &at(1)).await;
    ship_to(&app, "s-2", "staging", ("1.1", "bbbb2"), &at(2)).await;
    let connection = sea_orm::Database::connect(db.url()).await.unwrap();
    let all = entity::deployments::Entity::find()
        .all(&connection)
        .await
        .unwrap();
    assert_eq!(all.len(), 14);
    let ids = |h: &shiplog::store::history::InHistory| {
        (
            h.previous.as_ref().map(|p| p.external_id.clone()),
            h.rolled_back.as_ref().map(|p| p.external_id.clone()),
        )
    };
    let mut alone = Vec::new();
    for deployment in &all {
        alone.push(ids(&app.store.in_history(deployment).await.unwrap()));
    }
    // The history itself, as the single reads tell it.
    let of = |id: &str| alone[all.iter().position(|d| d.external_id == id).unwrap()].clone();
    assert_eq!(of("a-3"), (Some("a-2".into()), Some("a-2".into())), "a rollback");
    assert_eq!(of("a-4"), (Some("a-3".into()), None), "a redeploy");
    assert_eq!(of("a-1"), (Some("a-0".into()), None), "the late import is older");
    assert_eq!(of("c-2"), (Some("c-1".into()), Some("c-1".into())), "by commit");
    // Every page: all of them, and every pair (members older than their group's slice are
    // read on their own).
    let together: Vec<_> = app
        .store
        .in_histories(&all)
        .await
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    assert_eq!(together, alone);
    for (i, a) in all.iter().enumerate() {
        for (j, b) in all.iter().enumerate() {
            let pair = app.store.in_histories(&[a.clone(), b.clone()]).await.unwrap();
            assert_eq!(
                (ids(&pair[0]), ids(&pair[1])),
                (alone[i].clone(), alone[j].clone()),
                "{} with {}",
                a.external_id,
                b.external_id
            );
        }
    }
    app.stop().await;
}
