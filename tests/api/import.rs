//! History and reconciliation from the tools' APIs, faked at the HTTP level: GitLab's
//! deployments API and GitHub's deployments and statuses, answering with items made from the
//! published answers (tests/fixtures/<tool>/api), paged and rate-limited as each documents.
//! `shiplog import` runs as the real binary; reconciliation runs in real servers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::fixtures::{fixture_dir, fixture_headers};
use crate::helpers::{TestApp, TestDb, secret_of, spawn_app_on};

/// A fault the fake answers once, on a page (GitLab: the page starting at that item).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// GitLab's documented 429 (Retry-After shortened to 1 s).
    RateLimited,
    /// GitHub's recorded secondary-limit 403 (Retry-After shortened to 1 s).
    SecondaryLimit,
    Unavailable,
    /// No answer until the test ends (the importer is killed meanwhile).
    Hang,
}

/// A deployments-page request: its page, its `updated_after`, its token header.
type Asked = (u64, Option<String>, Option<String>);

#[derive(Default)]
struct Fake {
    /// GitLab: the project's deployments; GitHub: the repository's, newest first.
    deployments: Mutex<Vec<Value>>,
    /// GitHub: statuses by deployment id, newest first.
    statuses: Mutex<HashMap<u64, Value>>,
    faults: Mutex<Vec<(u64, Fault)>>,
    /// Every deployments-page request: (page, `updated_after`, token header).
    requests: Mutex<Vec<Asked>>,
    base: Mutex<String>,
    /// GitLab: before answering request number `.0` (0-based), deployment `.1` fails anew.
    change: Mutex<Option<(usize, u64)>>,
}

impl Fake {
    fn fault(&self, page: u64) -> Option<Response> {
        let mut faults = self.faults.lock().unwrap();
        let at = faults.iter().position(|(p, _)| *p == page)?;
        let (_, fault) = faults.remove(at);
        Some(match fault {
            Fault::RateLimited => {
                let mut headers =
                    fixture_headers(&fixture_dir("gitlab").join("api/rate_limited_429.docs-table.json"));
                headers.insert("retry-after", "1".parse().unwrap());
                (StatusCode::TOO_MANY_REQUESTS, headers, "Retry later").into_response()
            }
            Fault::SecondaryLimit => {
                let path =
                    fixture_dir("github").join("api/secondary_rate_limit_403.pygithub-replay-2018.json");
                let mut headers = HeaderMap::new();
                headers.insert("retry-after", "1".parse().unwrap());
                (
                    StatusCode::FORBIDDEN,
                    headers,
                    std::fs::read_to_string(path).unwrap(),
                )
                    .into_response()
            }
            Fault::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            // Taken by `hangs` before any answer.
            Fault::Hang => StatusCode::GATEWAY_TIMEOUT.into_response(),
        })
    }

    fn hangs(&self, page: u64) -> bool {
        let mut faults = self.faults.lock().unwrap();
        let hang = faults.iter().position(|f| *f == (page, Fault::Hang));
        hang.map(|at| faults.remove(at)).is_some()
    }

    /// Requests for a page (GitHub: its number; GitLab: where its answer starts).
    fn pages_asked(&self, page: u64) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| *p == page)
            .count()
    }
}

/// Serves the fake on a free port; its base URL.
async fn serve(fake: Arc<Fake>) -> String {
    let app = axum::Router::new()
        .route("/api/v4/projects/{project}/deployments", get(gitlab_deployments))
        .route("/repos/{owner}/{repo}/deployments", get(github_deployments))
        .route("/repositories/{id}/deployments", get(github_deployments_by_id))
        .route(
            "/repos/{owner}/{repo}/deployments/{id}/statuses",
            get(github_statuses),
        )
        .route("/apps/{app}/releases", get(heroku_releases))
        .route("/apps/{app}/pipeline-couplings", get(heroku_coupling))
        .route("/pipelines/{id}", get(heroku_pipeline))
        .route("/job/{a}/job/{b}/job/{c}/api/json", get(jenkins_builds))
        .route("/job/{a}/job/{b}/api/json", get(jenkins_folder))
        .route(
            "/pipelines/{id}/pipeline-couplings",
            get(heroku_pipeline_couplings),
        )
        .route("/apps/{app}", get(heroku_app))
        .route("/api/{space}/deployments", get(octopus_deployments))
        .route("/api/tasks/{id}", get(octopus_task))
        .route("/api/{space}/releases/{id}", get(octopus_release))
        .route("/api/{space}/{kind}/{id}", get(octopus_named))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *fake.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The `page` and `per_page` GitLab and GitHub read (defaults 1 and 20/30, at most 100).
fn paging(query: &HashMap<String, String>, default_size: usize) -> (u64, usize) {
    let page = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let size = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_size)
        .clamp(1, 100);
    (page, size)
}

async fn gitlab_deployments(
    State(fake): State<Arc<Fake>>,
    Path(project): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(
        project, "root/test-deployment-webhooks",
        "the project path, percent-decoded"
    );
    let (page, size) = paging(&query, 20);
    let after = query.get("updated_after").cloned();
    let token = headers
        .get("private-token")
        .map(|v| v.to_str().unwrap().to_string());
    // `updated_after` needs `order_by=updated_at` (GitLab's finder); oldest change first.
    if after.is_some() {
        assert_eq!(query.get("order_by").map(String::as_str), Some("updated_at"));
    }
    let after_ms = after
        .as_ref()
        .map(|a| shiplog::domain::parse_instant_str(a).unwrap());
    let asked = fake.requests.lock().unwrap().len();
    if let Some((_, id)) = fake.change.lock().unwrap().take_if(|(n, _)| *n == asked) {
        let mut all = fake.deployments.lock().unwrap();
        let changed = all.iter_mut().find(|d| d["id"] == id).unwrap();
        let job = changed["deployable"]["id"].as_u64().unwrap();
        *changed = gitlab_deployment(id, job, "failed", AT + 10_000_000);
    }
    let mut all: Vec<Value> = fake.deployments.lock().unwrap().clone();
    all.sort_by_key(|d| (updated(d), d["id"].as_u64()));
    let listing: Vec<Value> = all
        .iter()
        .filter(|d| after_ms.is_none_or(|a| updated(d) > a))
        .cloned()
        .collect();
    let total = listing.len() as u64;
    let pages = total.div_ceil(size as u64).max(1);
    let items: Vec<Value> = listing
        .into_iter()
        .skip((page - 1) as usize * size)
        .take(size)
        .collect();
    // A request is known by where its answer starts in the whole listing (keyset pages all
    // ask for `page=1`).
    let from = items
        .first()
        .and_then(|f| all.iter().position(|d| d["id"] == f["id"]))
        .unwrap_or(all.len()) as u64;
    fake.requests.lock().unwrap().push((from, after.clone(), token));
    if fake.hangs(from) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if let Some(failed) = fake.fault(from) {
        return failed;
    }
    let base = fake.base.lock().unwrap().clone();
    let link = |p: u64| {
        let mut kept: Vec<(String, String)> =
            query.clone().into_iter().filter(|(k, _)| k != "page").collect();
        kept.sort();
        let rest: Vec<String> = kept
            .iter()
            .map(|(k, v)| format!("{k}={}", shiplog::import::api::encode(v)))
            .collect();
        format!(
            "<{base}/api/v4/projects/root%2Ftest-deployment-webhooks/deployments?page={p}&{}>",
            rest.join("&")
        )
    };
    let mut links = vec![
        format!("{}; rel=\"first\"", link(1)),
        format!("{}; rel=\"last\"", link(pages)),
    ];
    let mut headers = HeaderMap::new();
    if page < pages {
        links.insert(0, format!("{}; rel=\"next\"", link(page + 1)));
        headers.insert("x-next-page", (page + 1).to_string().parse().unwrap());
    } else {
        headers.insert("x-next-page", "".parse().unwrap());
    }
    headers.insert("link", links.join(", ").parse().unwrap());
    for (name, value) in [
        ("x-page", page),
        ("x-per-page", size as u64),
        ("x-total", total),
        ("x-total-pages", pages),
    ] {
        headers.insert(name, value.to_string().parse().unwrap());
    }
    (headers, axum::Json(items)).into_response()
}

fn updated(deployment: &Value) -> i64 {
    shiplog::domain::parse_instant(&deployment["updated_at"]).unwrap()
}

/// A GitLab deployment made from the documented list item: job `job`, `status`, changed at `at`.
fn gitlab_deployment(id: u64, job: u64, status: &str, at: i64) -> Value {
    let list: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("gitlab").join("api/deployments_list.response.docs.json"))
            .unwrap(),
    )
    .unwrap();
    let mut deployment = list[1].clone();
    let time = |ms: i64| Value::String(shiplog::domain::format_millis(ms));
    deployment["id"] = json!(id);
    deployment["iid"] = json!(id);
    deployment["status"] = json!(status);
    deployment["created_at"] = time(at - 60_000);
    deployment["updated_at"] = time(at);
    deployment["environment"]["name"] = json!("staging");
    deployment["deployable"]["id"] = json!(job);
    deployment["deployable"]["status"] = json!(status);
    deployment["deployable"]["started_at"] = time(at - 30_000);
    deployment["deployable"]["finished_at"] = if status == "running" {
        Value::Null
    } else {
        time(at)
    };
    deployment
}

async fn github_deployments(
    State(fake): State<Arc<Fake>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(format!("{owner}/{repo}"), "Codertocat/Hello-World");
    github_page(fake, query, headers).await
}

/// GitHub's own page links name the repository by id (recorded in api/github).
async fn github_deployments_by_id(
    State(fake): State<Arc<Fake>>,
    Path(id): Path<u64>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(id, 186853002);
    github_page(fake, query, headers).await
}

async fn github_page(fake: Arc<Fake>, query: HashMap<String, String>, headers: HeaderMap) -> Response {
    let (page, size) = paging(&query, 30);
    let token = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    fake.requests.lock().unwrap().push((page, None, token));
    if let Some(failed) = fake.fault(page) {
        return failed;
    }
    let listing = fake.deployments.lock().unwrap().clone();
    let pages = (listing.len() as u64).div_ceil(size as u64).max(1);
    let items: Vec<Value> = listing
        .into_iter()
        .skip((page - 1) as usize * size)
        .take(size)
        .collect();
    let base = fake.base.lock().unwrap().clone();
    let link = |p: u64, rel: &str| {
        format!("<{base}/repositories/186853002/deployments?per_page={size}&page={p}>; rel=\"{rel}\"")
    };
    let mut links = Vec::new();
    if page < pages {
        links.push(link(page + 1, "next"));
        links.push(link(pages, "last"));
    }
    let mut headers = HeaderMap::new();
    if !links.is_empty() {
        headers.insert("link", links.join(", ").parse().unwrap());
    }
    headers.insert("x-ratelimit-remaining", "4997".parse().unwrap());
    (headers, axum::Json(items)).into_response()
}

async fn github_statuses(
    State(fake): State<Arc<Fake>>,
    Path((_, _, id)): Path<(String, String, u64)>,
) -> Response {
    let statuses = fake
        .statuses
        .lock()
        .unwrap()
        .get(&id)
        .cloned()
        .unwrap_or(json!([]));
    axum::Json(statuses).into_response()
}

fn api_fixture(tool: &str, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir(tool).join("api").join(name)).unwrap()).unwrap()
}

/// A GitHub deployment made from the recorded list item, in Codertocat/Hello-World, with
/// statuses made from the recorded ones (newest first): `states` oldest first.
fn github_deployment(fake: &Fake, base: &str, id: u64, environment: &str, states: &[&str]) -> Value {
    let mut deployment = api_fixture("github", "deployments_list.pygithub-replay-2020.json")[0].clone();
    let repo = format!("{base}/repos/Codertocat/Hello-World");
    deployment["id"] = json!(id);
    deployment["environment"] = json!(environment);
    deployment["original_environment"] = json!(environment);
    deployment["url"] = json!(format!("{repo}/deployments/{id}"));
    deployment["statuses_url"] = json!(format!("{repo}/deployments/{id}/statuses"));
    deployment["repository_url"] = json!(repo);
    let template = api_fixture("github", "deployment_statuses_list.pygithub-replay-2020.json")[0].clone();
    let statuses: Vec<Value> = states
        .iter()
        .enumerate()
        .rev()
        .map(|(n, state)| {
            let mut status = template.clone();
            status["id"] = json!(id * 10 + n as u64);
            status["state"] = json!(state);
            status["environment"] = json!(environment);
            status["created_at"] = json!(format!("2020-08-26T11:4{n}:00Z"));
            status["log_url"] = json!(format!(
                "https://github.com/Codertocat/Hello-World/actions/runs/{id}"
            ));
            status
        })
        .collect();
    fake.statuses.lock().unwrap().insert(id, Value::Array(statuses));
    deployment
}

/// `shiplog import ...` against the test database: (succeeded, stdout, stderr).
async fn import(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let output = import_command(db, args).output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn import_command(db: &TestDb, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shiplog"));
    command
        .args(["--database-url", db.url(), "import"])
        .args(args)
        .env_remove("SHIPLOG_CONFIG")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

const DEPLOYMENTS: &str =
    "{ deployments(first: 500) { totalCount nodes { source externalId status discoveredBy
    commitSha startedAt finishedAt actor url system { name } environment { name } } } }";

async fn deployments(app: &TestApp) -> Vec<Value> {
    let data = app.data(DEPLOYMENTS, json!({})).await;
    data["deployments"]["nodes"].as_array().unwrap().clone()
}

fn find<'a>(found: &'a [Value], id: &str) -> &'a Value {
    found
        .iter()
        .find(|d| d["externalId"] == id)
        .unwrap_or_else(|| panic!("no deployment {id}: {found:?}"))
}

/// GitLab's webhook for job 796 (tests/fixtures/gitlab), as the instance at `base` sends it.
async fn gitlab_webhook(app: &TestApp, base: &str) {
    let path = fixture_dir("gitlab").join("deployment_success.json");
    let mut headers = fixture_headers(&path);
    headers.insert("x-gitlab-instance", base.parse().unwrap());
    headers.insert("x-gitlab-token", secret_of("gitlab").parse().unwrap());
    let response = app
        .client
        .post(app.url("/webhooks/gitlab"))
        .headers(headers)
        .body(std::fs::read(path).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

const AT: i64 = 1_764_000_000_000;

/// `shiplog import gitlab` of the fake's project.
fn gitlab_args<'a>(base: &'a str, token: &'a str) -> [&'a str; 7] {
    [
        "gitlab",
        "--api-url",
        base,
        "--token",
        token,
        "--project",
        "root/test-deployment-webhooks",
    ]
}

#[tokio::test]
async fn gitlab_history_is_read_page_by_page_through_limits_and_errors_and_a_second_run_changes_nothing() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    *fake.deployments.lock().unwrap() = (1..=250)
        .map(|n| gitlab_deployment(n, 10_000 + n, "success", AT + n as i64 * 1000))
        .collect();
    fake.faults
        .lock()
        .unwrap()
        .extend([(0, Fault::RateLimited), (99, Fault::Unavailable)]);
    let db = Arc::new(TestDb::new().await);
    let args = gitlab_args(&base, "glpat-test");
    let (ok, out, err) = import(&db, &args).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("252 records in 3 pages: 250 new, 0 updated, 2 unchanged"),
        "{out}"
    );
    assert!(
        err.contains("rate limiting (429); waiting 1 s") && err.contains("answered 503"),
        "{err}"
    );
    let asked = fake.requests.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .all(|(_, _, token)| token.as_deref() == Some("glpat-test")),
        "{asked:?}"
    );
    assert_eq!(
        (fake.pages_asked(0), fake.pages_asked(99), fake.pages_asked(198)),
        (2, 2, 1),
        "each page starts at the last change read (a duplicate), asked again after its fault"
    );

    let app = spawn_app_on(db.clone(), |_| {}).await;
    let found = deployments(&app).await;
    assert_eq!(found.len(), 250);
    let one = find(&found, "10007");
    assert_eq!(
        (one["status"].as_str(), one["discoveredBy"].as_str()),
        (Some("SUCCEEDED"), Some("IMPORT"))
    );
    assert_eq!(one["system"]["name"], "root/test-deployment-webhooks");
    assert_eq!(one["environment"]["name"], "staging");
    assert_eq!(one["commitSha"], "a91957a858320c0e17f3a0eca7cfacbff50ea29a");
    assert_eq!(one["actor"], "root");
    assert_eq!(one["finishedAt"], shiplog::domain::format_millis(AT + 7_000));

    let journal = app
        .data(
            "{ deliveries(state: PROCESSED, first: 1) { kind source } }",
            json!({}),
        )
        .await;
    assert_eq!(
        journal["deliveries"][0],
        json!({ "kind": "IMPORT", "source": "gitlab" })
    );

    // Again: every record is one stored before.
    let (ok, out, err) = import(&db, &args).await;
    assert!(
        ok && out.contains("0 new, 0 updated, 252 unchanged"),
        "{out}{err}"
    );
    assert_eq!(deployments(&app).await.len(), 250);
    app.stop().await;
}

#[tokio::test]
async fn an_import_killed_halfway_resumes_at_the_page_it_stopped_on() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    *fake.deployments.lock().unwrap() = (1..=250)
        .map(|n| gitlab_deployment(n, 20_000 + n, "failed", AT + n as i64 * 1000))
        .collect();
    fake.faults.lock().unwrap().push((99, Fault::Hang));
    let db = Arc::new(TestDb::new().await);
    let args = gitlab_args(&base, "t");
    let mut child = import_command(&db, &args).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.pages_asked(99) == 0 {
        assert!(std::time::Instant::now() < deadline, "page 2 was never asked for");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();

    let (ok, out, err) = import(&db, &args).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("152 records in 2 pages (resumed): 150 new"), "{out}");
    assert_eq!(
        fake.pages_asked(0),
        1,
        "page 1 was committed before page 2 was asked for"
    );
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let found = deployments(&app).await;
    assert_eq!(found.len(), 250);
    assert!(found.iter().all(|d| d["status"] == "FAILED"));
    app.stop().await;
}

#[tokio::test]
async fn a_deployment_seen_by_webhook_and_by_import_is_one_in_either_order() {
    for webhook_first in [true, false] {
        let fake = Arc::new(Fake::default());
        let base = serve(fake.clone()).await;
        // The webhook's job 796 (deployment 15), as the API lists it: the same commit, its
        // status changed at the webhook's `status_changed_at`.
        let changed = shiplog::domain::parse_instant_str("2021-04-28 21:50:00 +0200").unwrap();
        let mut deployment = gitlab_deployment(15, 796, "success", changed);
        deployment["sha"] = json!("279484c09fbe69ededfced8c1bb6e6d24616b468");
        *fake.deployments.lock().unwrap() = vec![deployment];
        let db = Arc::new(TestDb::new().await);
        let app = spawn_app_on(db.clone(), |_| {}).await;
        let args = gitlab_args(&base, "t");
        if webhook_first {
            gitlab_webhook(&app, &base).await;
        }
        let (ok, out, err) = import(&db, &args).await;
        assert!(ok, "{out}{err}");
        if !webhook_first {
            gitlab_webhook(&app, &base).await;
        }
        let found = deployments(&app).await;
        assert_eq!(found.len(), 1, "webhook first: {webhook_first}: {found:?}");
        let one = &found[0];
        assert_eq!(one["externalId"], "796");
        let by = if webhook_first { "WEBHOOK" } else { "IMPORT" };
        assert_eq!(one["discoveredBy"], by);
        // The union: the webhook's job URL and commit, the API's start.
        assert_eq!(
            one["url"],
            "http://10.126.0.2:3000/root/test-deployment-webhooks/-/jobs/796"
        );
        assert_eq!(one["commitSha"], "279484c09fbe69ededfced8c1bb6e6d24616b468");
        assert_eq!(one["startedAt"], shiplog::domain::format_millis(changed - 30_000));
        assert_eq!(one["finishedAt"], shiplog::domain::format_millis(changed));
        assert_eq!(one["status"], "SUCCEEDED");
        app.stop().await;
    }
}

#[tokio::test]
async fn github_deployments_are_read_with_their_newest_status_through_the_secondary_limit() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    let mut listing: Vec<Value> = (0..130)
        .map(|n| {
            github_deployment(
                &fake,
                &base,
                500_000_000 - n,
                "production",
                &["queued", "in_progress", "success"],
            )
        })
        .collect();
    // The webhook fixture's deployment, and one a newer deployment made inactive.
    listing.insert(
        3,
        github_deployment(&fake, &base, 145988746, "production", &["in_progress"]),
    );
    listing.insert(
        4,
        github_deployment(&fake, &base, 145988700, "staging", &["failure", "inactive"]),
    );
    *fake.deployments.lock().unwrap() = listing;
    fake.faults.lock().unwrap().push((1, Fault::SecondaryLimit));
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let webhook =
        crate::contract::send_fixture(&app, "github", "deployment_status_created_success.json").await;
    assert_eq!(webhook["status"], "accepted", "{webhook}");

    let args = [
        "github",
        "--api-url",
        &base,
        "--token",
        "ghp_test",
        "--repo",
        "Codertocat/Hello-World",
    ];
    let (ok, out, err) = import(&db, &args).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("132 records in 2 pages: 131 new, 1 updated"),
        "{out}"
    );
    assert!(err.contains("GitHub's API is rate limiting (403)"), "{err}");
    assert!(
        fake.requests
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, t)| t.as_deref() == Some("Bearer ghp_test"))
    );
    let found = deployments(&app).await;
    assert_eq!(found.len(), 132);
    let newest = find(&found, "500000000");
    assert_eq!(
        (newest["status"].as_str(), newest["discoveredBy"].as_str()),
        (Some("SUCCEEDED"), Some("IMPORT"))
    );
    assert_eq!(newest["system"]["name"], "Codertocat/Hello-World");
    assert_eq!(newest["actor"], "jacquev6");
    assert_eq!(
        find(&found, "145988700")["status"],
        "FAILED",
        "inactive is no outcome"
    );
    // The webhook said success; the API's older in_progress does not move it back.
    let merged = find(&found, "145988746");
    assert_eq!(
        (merged["status"].as_str(), merged["discoveredBy"].as_str()),
        (Some("SUCCEEDED"), Some("WEBHOOK"))
    );
    app.stop().await;
}

fn reconcile(base: &str, interval_seconds: u64) -> shiplog::import::reconcile::ReconcileConfig {
    shiplog::import::reconcile::ReconcileConfig {
        projects: vec!["root/test-deployment-webhooks".into()],
        interval_seconds,
        ..shiplog::import::reconcile::ReconcileConfig::of("gitlab", base.into(), "glpat-reconcile".into())
    }
}

#[tokio::test]
async fn reconciliation_finds_what_no_webhook_announced_and_follows_its_changes() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |s| s.reconcile = vec![reconcile(&base, 1)]).await;
    gitlab_webhook(&app, &base).await;
    let now = shiplog::domain::now_millis();
    // Job 796 came by webhook; job 797 did not.
    *fake.deployments.lock().unwrap() = vec![
        gitlab_deployment(15, 796, "success", now - 5_000),
        gitlab_deployment(16, 797, "running", now - 4_000),
    ];
    let query = "{ deployments { nodes { externalId status discoveredBy } }
        reconciliation { source scope instance lastReconciledAt lastError missedByWebhooks lastFound } }";
    let data = app
        .eventually(query, |d| {
            d["deployments"]["nodes"].as_array().unwrap().len() == 2
        })
        .await;
    let found = data["deployments"]["nodes"].as_array().unwrap().clone();
    assert_eq!(find(&found, "796")["discoveredBy"], "WEBHOOK");
    let missed = find(&found, "797");
    assert_eq!(
        (missed["discoveredBy"].as_str(), missed["status"].as_str()),
        (Some("RECONCILE"), Some("RUNNING"))
    );
    let data = app
        .eventually(query, |d| d["reconciliation"][0]["missedByWebhooks"] == 1)
        .await;
    let scope = &data["reconciliation"][0];
    assert_eq!(
        (scope["source"].as_str(), scope["scope"].as_str()),
        (Some("gitlab"), Some("root/test-deployment-webhooks"))
    );
    assert_eq!(scope["instance"], base.as_str());
    assert!(
        scope["lastReconciledAt"].is_string() && scope["lastError"].is_null(),
        "{scope}"
    );

    // Job 797 finishes between two polls: the next poll reads it from where the last stopped.
    fake.deployments.lock().unwrap()[1] = gitlab_deployment(16, 797, "failed", shiplog::domain::now_millis());
    let data = app
        .eventually(query, |d| {
            d["deployments"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["externalId"] == "797" && n["status"] == "FAILED")
        })
        .await;
    assert_eq!(
        find(data["deployments"]["nodes"].as_array().unwrap(), "797")["status"],
        "FAILED"
    );
    // Later polls ask only for what changed since the newest change read (not the first week).
    let last = fake.requests.lock().unwrap().last().cloned().unwrap();
    let after = shiplog::domain::parse_instant_str(last.1.as_deref().unwrap()).unwrap();
    assert!(
        after >= now - 6_000,
        "polled from {after}, the newest change read was at {}",
        now - 4_000
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shiplog_reconcile_missed_deployments{")
                && l.contains("scope=\"root/test-deployment-webhooks\"")
                // The recorder is the test process's: other tests poll the same scope on their fakes.
                && l.contains(&format!("instance=\"{base}\""))
                && l.ends_with(" 1")),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn replicas_share_a_scope_and_poll_it_once_per_interval() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    let db = Arc::new(TestDb::new().await);
    let replicas = [
        spawn_app_on(db.clone(), |s| s.reconcile = vec![reconcile(&base, 2)]).await,
        spawn_app_on(db.clone(), |s| s.reconcile = vec![reconcile(&base, 2)]).await,
    ];
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let polls = fake.requests.lock().unwrap().len();
    // One replica holds the lease: a poll at 0, 2, 4 and 6 s; without it, twice as many.
    assert!(
        (3..=5).contains(&polls),
        "{polls} polls in 6.5 s at a 2 s interval"
    );
    for replica in replicas {
        replica.stop().await;
    }
}

/// Heroku's ranged list: `Range: version [start]..; max=N[, order=desc]`; `]` excludes the
/// start; 206 with `Next-Range` while more remain.
async fn heroku_releases(
    State(fake): State<Arc<Fake>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(app, "myapp-staging");
    assert_eq!(headers["accept"], "application/vnd.heroku+json; version=3");
    let range = headers
        .get("range")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let token = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    fake.requests
        .lock()
        .unwrap()
        .push((0, Some(range.clone()), token));
    let (bounds, options) = range.split_once(';').unwrap_or((&range, ""));
    let start = bounds
        .trim()
        .trim_start_matches("version")
        .trim()
        .trim_end_matches("..");
    let (exclusive, start) = (
        start.starts_with(']'),
        start.trim_start_matches(']').parse::<u64>().ok(),
    );
    let max: usize = options
        .split([';', ','])
        .find_map(|o| o.trim().strip_prefix("max=").and_then(|m| m.parse().ok()))
        .unwrap_or(200);
    let desc = options.contains("order=desc");
    let mut listing: Vec<Value> = fake.deployments.lock().unwrap().clone();
    if desc {
        listing.reverse();
    }
    let version = |r: &Value| r["version"].as_u64().unwrap();
    let after = |r: &Value| match (start, desc) {
        (None, _) => true,
        (Some(s), false) => version(r) > s || (!exclusive && version(r) == s),
        (Some(s), true) => version(r) < s || (!exclusive && version(r) == s),
    };
    let rest: Vec<Value> = listing.into_iter().filter(after).collect();
    let page: Vec<Value> = rest.iter().take(max).cloned().collect();
    let mut headers = HeaderMap::new();
    if rest.len() > max {
        let last = version(page.last().unwrap());
        let order = if desc { ", order=desc" } else { "" };
        headers.insert(
            "next-range",
            format!("version ]{last}..; max={max}{order}").parse().unwrap(),
        );
        return (StatusCode::PARTIAL_CONTENT, headers, axum::Json(page)).into_response();
    }
    (headers, axum::Json(page)).into_response()
}

/// The current schema's coupling names only the pipeline's id (the name takes a second call).
async fn heroku_coupling(Path(app): Path<String>) -> Response {
    assert_eq!(app, "myapp-staging");
    axum::Json(json!({
        "created_at": "2016-02-11T08:40:42+00:00",
        "app": { "id": "59d151db-c38e-4e9c-a854-faead7e8d6cc" },
        "id": "ead76531-1669-4967-9953-e7182605f772",
        "pipeline": { "id": "3be4b9ee-5734-4033-a4c0-28c3d5de99fe" },
        "stage": "staging",
        "updated_at": "2016-02-11T08:40:42+00:00"
    }))
    .into_response()
}

/// The pipeline's couplings: one app, by id (the current schema's shape).
async fn heroku_pipeline_couplings(Path(id): Path<String>) -> Response {
    assert_eq!(id, "my-pipeline");
    let coupling = heroku_coupling(Path("myapp-staging".into())).await;
    let body = axum::body::to_bytes(coupling.into_body(), 1 << 16).await.unwrap();
    let coupling: Value = serde_json::from_slice(&body).unwrap();
    axum::Json(json!([coupling])).into_response()
}

async fn heroku_app(Path(id): Path<String>) -> Response {
    assert_eq!(id, "59d151db-c38e-4e9c-a854-faead7e8d6cc");
    axum::Json(json!({ "id": id, "name": "myapp-staging" })).into_response()
}

async fn heroku_pipeline(Path(id): Path<String>) -> Response {
    axum::Json(
        json!({ "created_at": "2016-02-11T08:32:08+00:00", "id": id, "name": "my-pipeline",
        "updated_at": "2016-02-11T08:32:08+00:00" }),
    )
    .into_response()
}

/// A Heroku release made from the webhook fixture's `data` (the same representation).
fn heroku_release(version: u64, status: &str) -> Value {
    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("heroku").join("release_myapp-staging_v101.derived.json"))
            .unwrap(),
    )
    .unwrap();
    let mut release = event["data"].clone();
    release["id"] = json!(format!("38821f7c-e1a1-41d9-a34b-{version:012}"));
    release["version"] = json!(version);
    release["status"] = json!(status);
    release["created_at"] = json!(shiplog::domain::format_millis(AT + version as i64 * 60_000));
    release["updated_at"] = json!(shiplog::domain::format_millis(
        AT + version as i64 * 60_000 + 30_000
    ));
    release
}

#[tokio::test]
async fn heroku_releases_are_read_range_by_range_into_their_pipelines() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    *fake.deployments.lock().unwrap() = (1..=1200)
        .map(|v| heroku_release(v, if v == 1200 { "pending" } else { "succeeded" }))
        .collect();
    let db = Arc::new(TestDb::new().await);
    let args = [
        "heroku",
        "--api-url",
        &base,
        "--api-key",
        "hrku-test",
        "--pipeline",
        "my-pipeline",
    ];
    let (ok, out, err) = import(&db, &args).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("1200 records in 2 pages: 1200 new"), "{out}");
    let ranges: Vec<Asked> = fake.requests.lock().unwrap().clone();
    assert_eq!(ranges[0].1.as_deref(), Some("version ..; max=1000"));
    assert_eq!(
        ranges[1].1.as_deref(),
        Some("version ]1000..; max=1000"),
        "Next-Range sent back as it came"
    );
    assert!(ranges.iter().all(|r| r.2.as_deref() == Some("Bearer hrku-test")));
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let query = "{ deployments(first: 2) { totalCount nodes { externalId status version discoveredBy
        system { name } environment { name } commitSha actor } } }";
    let data = app.data(query, json!({})).await;
    assert_eq!(data["deployments"]["totalCount"], 1200);
    let newest = &data["deployments"]["nodes"][0];
    assert_eq!(
        (newest["version"].as_str(), newest["status"].as_str()),
        (Some("v1200"), Some("RUNNING"))
    );
    assert_eq!(newest["system"]["name"], "my-pipeline", "the app's pipeline");
    assert_eq!(newest["environment"]["name"], "staging", "the app's stage");
    assert_eq!(newest["discoveredBy"], "IMPORT");
    assert_eq!(newest["commitSha"], "69eec518969cc409e116940aa5304ab6ab237a4d");
    app.stop().await;
}

/// Jenkins' `tree=allBuilds[...]{M,N}`: builds M (inclusive) to N (exclusive), newest first.
async fn jenkins_builds(
    State(fake): State<Arc<Fake>>,
    Path((a, b, c)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(format!("{a}/{b}/{c}"), "team/app/deploy");
    let tree = &query["tree"];
    if tree == "jobs[name]" {
        // A job has no `jobs`: Jenkins answers its class alone.
        return axum::Json(json!({ "_class": "hudson.model.FreeStyleProject" })).into_response();
    }
    assert!(
        tree.starts_with("allBuilds[number,result,") && tree.contains("parameters[name,value]"),
        "{tree}"
    );
    let (from, to) = tree
        .rsplit_once('{')
        .and_then(|(_, r)| r.trim_end_matches('}').split_once(','))
        .map(|(m, n)| (m.parse::<usize>().unwrap(), n.parse::<usize>().unwrap()))
        .unwrap();
    let token = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    fake.requests.lock().unwrap().push((from as u64, None, token));
    let builds: Vec<Value> = fake
        .deployments
        .lock()
        .unwrap()
        .iter()
        .skip(from)
        .take(to - from)
        .cloned()
        .collect();
    axum::Json(json!({ "_class": "hudson.model.FreeStyleProject", "allBuilds": builds })).into_response()
}

/// The folder `team/app`, shaped as jenkins-rest's folder fixture, holding the job `deploy`.
async fn jenkins_folder(
    Path((a, b)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(
        (format!("{a}/{b}"), query["tree"].as_str()),
        ("team/app".into(), "jobs[name]")
    );
    let mut folder = api_fixture("jenkins", "jobsInJenkinsFolder.cdancy-jenkins-rest-fixture.json");
    folder["jobs"][0]["name"] = json!("deploy");
    folder["jobs"][0]["url"] = json!("http://localhost:8080/job/team/job/app/job/deploy/");
    axum::Json(folder).into_response()
}

/// A build made from DevLake's captured `allBuilds` item, with a parameters action shaped as
/// in the jenkins-client-golang capture; build 18 ends when the webhook fixture says.
fn jenkins_build(base: &str, number: u64, result: Option<&str>) -> Value {
    let mut build = api_fixture(
        "jenkins",
        "allBuilds_item.freestyle_git_builddata.devlake-e2e-2022.json",
    );
    build["number"] = json!(number);
    build["result"] = json!(result);
    build["building"] = json!(result.is_none());
    build["timestamp"] = json!(1_764_165_785_000_i64 - 180_000 - (18 - number as i64) * 3_600_000);
    build["duration"] = json!(if result.is_some() { 180_000 } else { 0 });
    build["url"] = json!(format!("{base}/job/team/job/app/job/deploy/{number}/"));
    build["actions"][1]["lastBuiltRevision"]["SHA1"] = json!("c6d86dc654b12425e706bcf951adfe5a8627a517");
    let golang = api_fixture(
        "jenkins",
        "job_freestyle_parameterized_builds.depth1.jenkins-client-golang-2016.json",
    );
    let mut parameters = golang["builds"][0]["actions"][0].clone();
    parameters["parameters"] = json!([
        { "_class": "hudson.model.StringParameterValue", "name": "ENVIRONMENT", "value": "prod" },
        { "_class": "hudson.model.StringParameterValue", "name": "VERSION", "value": "2.4.0" },
    ]);
    build["actions"][2] = parameters;
    build
}

#[tokio::test]
async fn jenkins_builds_are_read_range_by_range_by_the_same_rules_as_its_webhooks() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    // 150 builds, newest first, the newest still running; build 18 is the webhook fixture's.
    let mut builds = vec![jenkins_build(&base, 150, None)];
    builds.extend((1..150).rev().map(|n| {
        jenkins_build(
            &base,
            n,
            Some(if n.is_multiple_of(10) {
                "FAILURE"
            } else {
                "SUCCESS"
            }),
        )
    }));
    *fake.deployments.lock().unwrap() = builds;
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let fixture = "folder_team-app-deploy_completed_success.derived.json";
    let webhook = crate::contract::send_fixture(&app, "jenkins", fixture).await;
    assert_eq!(webhook["status"], "accepted", "{webhook}");
    let args = [
        "jenkins", "--url", &base, "--user", "admin", "--token", "11aa", "--job", "team/app",
    ];
    let (ok, out, err) = import(&db, &args).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("150 records in 2 pages: 149 new, 1 updated"),
        "{out}"
    );
    let asked = fake.requests.lock().unwrap().clone();
    assert_eq!(asked.iter().map(|a| a.0).collect::<Vec<_>>(), [0, 100]);
    assert!(
        asked
            .iter()
            .all(|a| a.2.as_deref() == Some("Basic YWRtaW46MTFhYQ==")),
        "{asked:?}"
    );
    let found = deployments(&app).await;
    assert_eq!(found.len(), 150);
    let running = find(&found, "team/app/deploy#150");
    assert_eq!(
        (
            running["status"].as_str(),
            running["environment"]["name"].as_str()
        ),
        (Some("RUNNING"), Some("production"))
    );
    assert_eq!(running["system"]["name"], "team/app/deploy");
    assert_eq!(running["actor"], "merico", "the UserIdCause");
    assert_eq!(find(&found, "team/app/deploy#10")["status"], "FAILED");
    let merged = find(&found, "team/app/deploy#18");
    assert_eq!(
        (merged["discoveredBy"].as_str(), merged["status"].as_str()),
        (Some("WEBHOOK"), Some("SUCCEEDED"))
    );
    assert_eq!(
        merged["startedAt"],
        shiplog::domain::format_millis(1_764_165_785_000 - 180_000)
    );
    assert_eq!(
        merged["finishedAt"],
        shiplog::domain::format_millis(1_764_165_785_000)
    );
    app.stop().await;
}

/// An Octopus fixture (the canned tasks keep their UTF-8 byte order mark).
fn octopus_fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir("octopus").join("api").join(name)).unwrap();
    serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap()
}

/// Octopus's collection envelope, newest first, `skip`/`take`, `Links."Page.Next"`.
async fn octopus_deployments(
    State(fake): State<Arc<Fake>>,
    Path(space): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let skip: usize = query.get("skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let take: usize = query.get("take").and_then(|s| s.parse().ok()).unwrap_or(30);
    let key = headers
        .get("x-octopus-apikey")
        .map(|v| v.to_str().unwrap().to_string());
    fake.requests.lock().unwrap().push((skip as u64, None, key));
    let all = fake.deployments.lock().unwrap().clone();
    let items: Vec<Value> = all.iter().skip(skip).take(take).cloned().collect();
    let mut envelope = octopus_fixture("machine_tasks_page1_skip30.octopusclients-canned-2017.json");
    envelope["ItemType"] = json!("Deployment");
    envelope["TotalResults"] = json!(all.len());
    envelope["ItemsPerPage"] = json!(take);
    envelope["Items"] = json!(items);
    let page = |s: usize| format!("/api/{space}/deployments?skip={s}&take={take}");
    let mut links = json!({ "Self": format!("/api/{space}/deployments"), "Page.Current": page(skip) });
    if skip + take < all.len() {
        links["Page.Next"] = json!(page(skip + take));
    }
    envelope["Links"] = links;
    axum::Json(envelope).into_response()
}

async fn octopus_task(State(fake): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    let states = fake.statuses.lock().unwrap();
    let number: u64 = id.trim_start_matches("ServerTasks-").parse().unwrap();
    let mut task =
        octopus_fixture("machine_tasks_page1_skip30.octopusclients-canned-2017.json")["Items"][0].clone();
    let state = states.get(&number).and_then(Value::as_str).unwrap_or("Success");
    task["Id"] = json!(id);
    task["State"] = json!(state);
    task["IsCompleted"] = json!(!matches!(state, "Queued" | "Executing" | "Cancelling"));
    task["FinishedSuccessfully"] = json!(state == "Success");
    if !task["IsCompleted"].as_bool().unwrap() {
        task["CompletedTime"] = Value::Null;
    }
    axum::Json(task).into_response()
}

async fn octopus_release(Path((_, id)): Path<(String, String)>) -> Response {
    let mut release = octopus_fixture("api_release_get.response.port-docs.json");
    release["Version"] = json!(format!("0.1.{}", id.trim_start_matches("Releases-")));
    release["Id"] = json!(id);
    axum::Json(release).into_response()
}

async fn octopus_named(Path((space, kind, id)): Path<(String, String, String)>) -> Response {
    let name = match id.as_str() {
        "Projects-4522" => "Argo CD Octopub",
        "Environments-1621" => "Development",
        other => panic!("no {kind} {other}"),
    };
    axum::Json(
        json!({ "Id": id, "Name": name, "Slug": name.to_lowercase().replace(' ', "-"), "SpaceId": space }),
    )
    .into_response()
}

/// A deployment made from Port's captured one, of the webhook fixture's project and
/// environment, newest first by number.
fn octopus_deployment(fake: &Fake, number: u64, state: &str) -> Value {
    let mut deployment = octopus_fixture("api_deployment_get.response.port-docs.json");
    deployment["Id"] = json!(format!("Deployments-{number}"));
    deployment["SpaceId"] = json!("Spaces-282");
    deployment["ProjectId"] = json!("Projects-4522");
    deployment["EnvironmentId"] = json!("Environments-1621");
    deployment["TaskId"] = json!(format!("ServerTasks-{}", 557_000 + number));
    deployment["ReleaseId"] = json!(format!("Releases-{}", 11_000 + number % 200));
    deployment["DeployedBy"] = json!(if number.is_multiple_of(2) {
        "System"
    } else {
        "jdoe"
    });
    deployment["Created"] = json!(shiplog::domain::format_millis(AT + number as i64 * 60_000));
    fake.statuses
        .lock()
        .unwrap()
        .insert(557_000 + number, json!(state));
    deployment
}

#[tokio::test]
async fn octopus_deployments_are_read_with_their_tasks_releases_and_names() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    let mut listing: Vec<Value> = (12_520..12_560)
        .rev()
        .map(|n| octopus_deployment(&fake, n, "Success"))
        .collect();
    listing[0] = octopus_deployment(&fake, 12_559, "Executing");
    // The webhook fixture's deployment (its task failed).
    listing.push(octopus_deployment(&fake, 12_519, "Failed"));
    *fake.deployments.lock().unwrap() = listing;
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let fixture = "subscription_deployment_failed.octopus-subscription-listener-2023.json";
    let webhook = crate::contract::send_fixture(&app, "octopus", fixture).await;
    assert_eq!(webhook["status"], "accepted", "{webhook}");
    let args = [
        "octopus",
        "--api-url",
        &base,
        "--api-key",
        "API-TEST",
        "--space",
        "Spaces-282",
    ];
    let (ok, out, err) = import(&db, &args).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("41 records in 2 pages: 40 new, 1 updated"), "{out}");
    let asked = fake.requests.lock().unwrap().clone();
    assert_eq!(
        asked.iter().map(|a| a.0).collect::<Vec<_>>(),
        [0, 30],
        "Page.Next followed"
    );
    assert!(asked.iter().all(|a| a.2.as_deref() == Some("API-TEST")));
    let found = deployments(&app).await;
    assert_eq!(found.len(), 41);
    let running = find(&found, "Spaces-282/Deployments-12559");
    assert_eq!(
        (running["status"].as_str(), running["system"]["name"].as_str()),
        (Some("RUNNING"), Some("Argo CD Octopub"))
    );
    assert_eq!(running["environment"]["name"], "development");
    assert_eq!(running["actor"], "jdoe");
    assert!(
        find(&found, "Spaces-282/Deployments-12558")["actor"].is_null(),
        "the system account deploys no one"
    );
    let merged = find(&found, "Spaces-282/Deployments-12519");
    assert_eq!(
        (merged["discoveredBy"].as_str(), merged["status"].as_str()),
        (Some("WEBHOOK"), Some("FAILED"))
    );
    assert_eq!(
        merged["url"],
        "https://mattc.octopus.app/app#/Spaces-282/deployments/Deployments-12519"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_gitlab_deployment_changing_during_an_import_moves_no_other_out_of_reach() {
    let fake = Arc::new(Fake::default());
    let base = serve(fake.clone()).await;
    *fake.deployments.lock().unwrap() = (1..=250)
        .map(|n| gitlab_deployment(n, 30_000 + n, "success", AT + n as i64 * 1000))
        .collect();
    // After page 1 is read, deployment 5 (on it) fails: GitLab moves it to the end of the
    // listing and every later deployment one place back. Page 2 by offset would start one
    // deployment late and never read it.
    *fake.change.lock().unwrap() = Some((1, 5));
    let db = Arc::new(TestDb::new().await);
    let (ok, out, err) = import(&db, &gitlab_args(&base, "t")).await;
    assert!(ok, "{out}{err}");
    let app = spawn_app_on(db.clone(), |_| {}).await;
    let found = deployments(&app).await;
    assert_eq!(found.len(), 250, "{out}");
    assert_eq!(find(&found, "30005")["status"], "FAILED", "read again at the end");
    app.stop().await;
}
