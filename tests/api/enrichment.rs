//! Heroku and Octopus enrichment through their APIs, faked at the HTTP level: the real
//! reqwest clients talk to axum apps on real ports. Deliveries are journaled before any
//! API call, answered 2xx, and finished by the worker, whatever the API does meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::contract::send_fixture;
use crate::helpers::{TestApp, TestDb, spawn_app_on};

/// How the fake API behaves right now.
#[derive(Clone, Debug)]
enum Mode {
    Up,
    /// Answer 500 to the next n requests.
    Failing(u32),
    /// Answer 429 with this Retry-After to the next request.
    RateLimited(u32),
    /// Answer 503 until switched.
    Down,
    /// Refuse the key.
    BadKey,
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(String, HeaderMap)>>,
    mode: Mutex<Option<Mode>>,
}

impl Fake {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = Some(mode);
    }

    fn calls_to(&self, path: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }

    /// Records the call; Some(response) when the mode says to fail it.
    fn gate(&self, path: String, headers: HeaderMap) -> Option<Response> {
        self.calls.lock().unwrap().push((path, headers));
        let mut mode = self.mode.lock().unwrap();
        match mode.clone().unwrap_or(Mode::Up) {
            Mode::Up => None,
            Mode::Failing(0) => {
                *mode = Some(Mode::Up);
                None
            }
            Mode::Failing(n) => {
                *mode = Some(Mode::Failing(n - 1));
                Some(StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
            Mode::RateLimited(seconds) => {
                *mode = Some(Mode::Up);
                Some(
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("Retry-After", seconds.to_string())],
                        "slow down",
                    )
                        .into_response(),
                )
            }
            Mode::Down => Some(StatusCode::SERVICE_UNAVAILABLE.into_response()),
            Mode::BadKey => Some(
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"id": "unauthorized", "message": "Invalid credentials provided."})),
                )
                    .into_response(),
            ),
        }
    }
}

/// A fake Platform API: apps named `myapp-*` are coupled to the pipeline `my-pipeline` (stage
/// from the name); others are in no pipeline (404). The coupling carries only the pipeline id,
/// as the current schema does, so the pipeline's name takes a second call.
async fn fake_heroku(fake: Arc<Fake>) -> String {
    async fn coupling(
        State(fake): State<Arc<Fake>>,
        Path(app): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        if let Some(failed) = fake.gate(format!("/apps/{app}/pipeline-couplings"), headers) {
            return failed;
        }
        let stage = if app.ends_with("-prod") {
            "production"
        } else {
            "staging"
        };
        if !app.starts_with("myapp-") {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"id": "not_found", "message": "Couldn't find that app."})),
            )
                .into_response();
        }
        Json(json!({
            "created_at": "2016-02-11T08:40:42+00:00",
            "app": { "id": "dde884b0-7610-428f-bc36-9393b1c7efb7" },
            "id": "ead76531-1669-4967-9953-e7182605f772",
            "pipeline": { "id": "3be4b9ee-5734-4033-a4c0-28c3d5de99fe" },
            "stage": stage,
            "updated_at": "2016-02-11T08:40:42+00:00"
        }))
        .into_response()
    }
    async fn pipeline(State(fake): State<Arc<Fake>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
        if let Some(failed) = fake.gate(format!("/pipelines/{id}"), headers) {
            return failed;
        }
        Json(json!({
            "created_at": "2016-02-11T08:32:08+00:00",
            "id": id,
            "name": "my-pipeline",
            "updated_at": "2016-02-11T08:32:08+00:00"
        }))
        .into_response()
    }
    let router = axum::Router::new()
        .route("/apps/{app}/pipeline-couplings", get(coupling))
        .route("/pipelines/{id}", get(pipeline))
        .with_state(fake);
    serve(router).await
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

async fn heroku_app(fake: Arc<Fake>, tweak: impl FnOnce(&mut shiplog::config::Settings)) -> TestApp {
    let url = fake_heroku(fake).await;
    let db = Arc::new(TestDb::new().await);
    spawn_app_on(db, move |settings| {
        settings.api.heroku_key = Some("test-heroku-api-key".into());
        settings.api.heroku_url = Some(url);
        tweak(settings);
    })
    .await
}

const ROWS: &str = "{ deployments { totalCount edges { node { externalId system { name } environment { name }
    environmentTier status version commitSha actor } } } }";

/// How many deployments the answer shows. The page and `totalCount` are read one after the
/// other, so while the worker is still applying they can disagree: take the smaller.
fn count(data: &Value) -> u64 {
    let total = data["deployments"]["totalCount"].as_u64().unwrap();
    let listed = data["deployments"]["edges"]
        .as_array()
        .map_or(total, |e| e.len() as u64);
    total.min(listed)
}

#[tokio::test]
async fn heroku_releases_take_their_system_and_environment_from_the_pipeline() {
    let fake = Arc::new(Fake::default());
    let app = heroku_app(fake.clone(), |_| {}).await;
    for fixture in [
        "release_myapp-staging_v101.derived.json",
        "release_myapp-prod_v55.derived.json",
    ] {
        let answer = send_fixture(&app, "heroku", fixture).await;
        assert_eq!(answer["status"], "accepted");
        assert_eq!(answer["pending"], true, "journaled before any API call");
    }
    let data = app.eventually(ROWS, |d| count(d) == 2).await;
    let mut rows: Vec<String> = data["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = &e["node"];
            format!(
                "{} {} {} {}",
                n["system"]["name"], n["environment"]["name"], n["environmentTier"], n["version"]
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            "\"my-pipeline\" \"production\" \"production\" \"v55\"",
            "\"my-pipeline\" \"staging\" \"staging\" \"v101\""
        ]
    );
    let node = &data["deployments"]["edges"][0]["node"];
    assert_eq!(node["commitSha"], "69eec518969cc409e116940aa5304ab6ab237a4d");
    assert_eq!(node["actor"], "hodor@unsplash.com");
    let calls = fake.calls.lock().unwrap().clone();
    let (path, headers) = &calls[0];
    assert!(path.ends_with("/pipeline-couplings"), "{path}");
    assert_eq!(headers["accept"], "application/vnd.heroku+json; version=3");
    assert_eq!(headers["authorization"], "Bearer test-heroku-api-key");
}

#[tokio::test]
async fn many_releases_of_one_app_make_one_coupling_lookup() {
    let fake = Arc::new(Fake::default());
    let app = heroku_app(fake.clone(), |_| {}).await;
    let sends = [
        "release_myapp-staging_v101.derived.json",
        "release_myapp-staging_v102.derived.json",
    ]
    .map(|fixture| send_fixture(&app, "heroku", fixture));
    futures_util::future::join_all(sends).await;
    app.eventually(ROWS, |d| count(d) == 2).await;
    send_fixture(&app, "heroku", "release_create_pending.derived.json").await; // my-app: no pipeline
    app.eventually(ROWS, |d| count(d) == 3).await;
    assert_eq!(fake.calls_to("/apps/myapp-staging/pipeline-couplings"), 1);
    assert_eq!(
        fake.calls_to("/pipelines/3be4b9ee-5734-4033-a4c0-28c3d5de99fe"),
        1
    );
    // The app in no pipeline falls back to its own name and the environment rule.
    let data = app.data("{ deployments(filter: { systems: [\"my-app\"] }) { edges { node { environment { name } status } } } }", json!({})).await;
    assert_eq!(
        data["deployments"]["edges"][0]["node"],
        json!({ "environment": { "name": "production" }, "status": "RUNNING" })
    );
}

#[tokio::test]
async fn a_429_is_waited_out_and_a_500_is_retried() {
    let fake = Arc::new(Fake::default());
    fake.set(Mode::RateLimited(1));
    let app = heroku_app(fake.clone(), |_| {}).await;
    send_fixture(&app, "heroku", "release_myapp-staging_v101.derived.json").await;
    let data = app.eventually(ROWS, |d| count(d) == 1).await;
    assert_eq!(
        data["deployments"]["edges"][0]["node"]["system"]["name"],
        "my-pipeline"
    );
    let pending = app
        .data("{ deliveries(state: PROCESSED) { attempts error } }", json!({}))
        .await;
    assert_eq!(
        pending["deliveries"][0]["attempts"], 2,
        "one rate-limited attempt, one that worked"
    );

    fake.set(Mode::Failing(4)); // more than one attempt's three quick tries
    send_fixture(&app, "heroku", "release_myapp-prod_v55.derived.json").await;
    let data = app.eventually(ROWS, |d| count(d) == 2).await;
    assert_eq!(count(&data), 2);
}

#[tokio::test]
async fn an_api_outage_loses_nothing_and_makes_no_duplicates() {
    let fake = Arc::new(Fake::default());
    fake.set(Mode::Down);
    let app = heroku_app(fake.clone(), |_| {}).await;
    for fixture in [
        "release_myapp-staging_v101.derived.json",
        "release_myapp-staging_v102.derived.json",
        "release_myapp-prod_v55.derived.json",
    ] {
        assert_eq!(send_fixture(&app, "heroku", fixture).await["pending"], true);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = app
        .data("{ deliveries(state: PENDING) { attempts error } }", json!({}))
        .await;
    let waiting = waiting["deliveries"].as_array().unwrap();
    assert_eq!(waiting.len(), 3);
    assert!(
        waiting
            .iter()
            .any(|d| d["error"].as_str().is_some_and(|e| e.contains("503"))),
        "the reason is kept on the delivery: {waiting:?}"
    );
    assert_eq!(count(&app.data(ROWS, json!({})).await), 0);

    fake.set(Mode::Up);
    let data = app.eventually(ROWS, |d| count(d) == 3).await;
    assert_eq!(count(&data), 3);
    assert!(
        data["deployments"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["node"]["system"]["name"] == "my-pipeline")
    );
    // Redelivered by Heroku after the outage: still three.
    send_fixture(&app, "heroku", "release_myapp-prod_v55.derived.json").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = app
        .data(
            "{ deployments { edges { node { events { status } } } } }",
            json!({}),
        )
        .await;
    assert!(
        events["deployments"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["node"]["events"].as_array().unwrap().len() == 1)
    );
}

#[tokio::test]
async fn a_bad_api_key_is_reported_and_failed_deliveries_can_be_reprocessed() {
    let fake = Arc::new(Fake::default());
    fake.set(Mode::BadKey);
    let app = heroku_app(fake.clone(), |settings| settings.retry.max_attempts = 2).await;
    send_fixture(&app, "heroku", "release_myapp-staging_v101.derived.json").await;
    let failed = app
        .eventually(
            "{ deliveries(state: FAILED) { id source error attempts body } }",
            |d| !d["deliveries"].as_array().unwrap().is_empty(),
        )
        .await;
    let failed = &failed["deliveries"][0];
    assert_eq!(failed["source"], "heroku");
    assert_eq!(failed["attempts"], 2);
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("SHIPLOG_HEROKU_API_KEY"),
        "{error}"
    );

    // The key is fixed; an operator re-queues the failed deliveries from the command line.
    fake.set(Mode::Up);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["--database-url", app.db.url(), "reprocess"])
        .env_remove("SHIPLOG_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("1 failed deliveries are pending again"));
    let data = app.eventually(ROWS, |d| count(d) == 1).await;
    assert_eq!(
        data["deployments"]["edges"][0]["node"]["system"]["name"],
        "my-pipeline"
    );
}

#[tokio::test]
async fn heroku_without_an_api_key_uses_the_app_name() {
    let app = crate::helpers::spawn_app().await;
    let answer = send_fixture(&app, "heroku", "release_myapp-staging_v101.derived.json").await;
    assert_eq!(answer["status"], "accepted");
    assert!(answer.get("pending").is_none());
    let data = app.data(ROWS, json!({})).await;
    let node = &data["deployments"]["edges"][0]["node"];
    assert_eq!(node["system"]["name"], "myapp-staging");
    assert_eq!(node["environment"]["name"], "staging");
}

/// A fake Octopus server for the deployment of the blog's capture. The deployment and release
/// bodies follow the Octopus API responses in shared/payloads (ids adjusted to the event).
async fn fake_octopus(fake: Arc<Fake>) -> String {
    async fn deployment(
        State(fake): State<Arc<Fake>>,
        Path((space, id)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> Response {
        if let Some(failed) = fake.gate(format!("/api/{space}/deployments/{id}"), headers) {
            return failed;
        }
        Json(json!({
            "Id": id, "SpaceId": space, "ReleaseId": "Releases-6856", "ChannelId": "Channels-690",
            "EnvironmentId": "Environments-246", "TenantId": null, "TaskId": "ServerTasks-318123",
            "ProjectId": "Projects-670", "Name": "Deploy to Prod", "Created": "2019-04-26T18:37:30.103+00:00",
            "DeployedBy": "ada.lovelace", "DeployedById": "Users-42", "FailureEncountered": false,
            "Links": { "Web": format!("/app#/{space}/deployments/{id}") }
        }))
        .into_response()
    }
    async fn task(State(fake): State<Arc<Fake>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
        if let Some(failed) = fake.gate(format!("/api/tasks/{id}"), headers) {
            return failed;
        }
        Json(json!({
            "Id": id, "Name": "Deploy", "State": "Success",
            "QueueTime": "2019-04-26T18:37:30.2000000+00:00",
            "StartTime": "2019-04-26T18:37:33.9871234+00:00",
            "CompletedTime": "2019-04-26T18:39:01.5000000+00:00"
        }))
        .into_response()
    }
    async fn release(
        State(fake): State<Arc<Fake>>,
        Path((space, id)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> Response {
        if let Some(failed) = fake.gate(format!("/api/{space}/releases/{id}"), headers) {
            return failed;
        }
        Json(json!({
            "Id": id, "SpaceId": space, "ProjectId": "Projects-670", "Version": "10.33.210",
            "ReleaseNotes": null, "BuildInformation": [],
            "VersionControlReference": { "GitRef": "refs/heads/main", "GitCommit": "1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5" }
        }))
        .into_response()
    }
    let router = axum::Router::new()
        .route("/api/{space}/deployments/{id}", get(deployment))
        .route("/api/tasks/{id}", get(task))
        .route("/api/{space}/releases/{id}", get(release))
        .with_state(fake);
    serve(router).await
}

const OCTOPUS: &str =
    "{ deployments { totalCount edges { node { externalId system { name } environment { name }
    tenant status version actor url startedAt finishedAt commitSha ref events { status } } } } }";

#[tokio::test]
async fn octopus_works_without_an_api_key_from_the_event_message() {
    let app = crate::helpers::spawn_app().await;
    for fixture in [
        "deployment_started.json",
        "deployment_succeeded.derived.json",
        "document_user_created.json",
    ] {
        send_fixture(&app, "octopus", fixture).await;
    }
    let data = app.data(OCTOPUS, json!({})).await;
    assert_eq!(count(&data), 1);
    let node = &data["deployments"]["edges"][0]["node"];
    assert_eq!(node["externalId"], "Spaces-83/Deployments-15970");
    assert_eq!(node["system"]["name"], "Accounting Database");
    assert_eq!(
        node["environment"]["name"], "production",
        "Prod, folded by the default alias"
    );
    assert_eq!(node["version"], "10.33.210");
    assert_eq!(node["status"], "SUCCEEDED");
    assert_eq!(
        node["startedAt"], "2019-04-26T18:37:34.361Z",
        "seven fractional digits parse"
    );
    assert_eq!(node["finishedAt"], "2019-04-26T18:39:02.664Z");
    assert_eq!(
        node["url"],
        "https://myoctopusurl/app#/Spaces-83/deployments/Deployments-15970"
    );

    send_fixture(&app, "octopus", "deployment_started_tenant.derived.json").await;
    let tenant = app
        .data(
            "{ deployments(filter: { statuses: [RUNNING] }) { edges { node { tenant externalId } } } }",
            json!({}),
        )
        .await;
    assert_eq!(tenant["deployments"]["edges"][0]["node"]["tenant"], "Acme Corp");
}

#[tokio::test]
async fn octopus_never_journals_the_secret_it_echoes_back() {
    let app = crate::helpers::spawn_app().await;
    send_fixture(&app, "octopus", "deployment_queued.echoes-secret.derived.json").await;
    let data = app
        .data("{ deliveries(state: PROCESSED) { body } }", json!({}))
        .await;
    let body = data["deliveries"][0]["body"].as_str().unwrap();
    assert!(
        !body.contains(crate::helpers::OCTOPUS_SECRET),
        "the secret reached the journal"
    );
    assert!(body.contains(shiplog::sources::octopus::REDACTED));
    assert!(
        body.contains("\"WebhookHeaderKey\": \"X-Shiplog-Secret\""),
        "the rest of the body is kept as sent"
    );
}

#[tokio::test]
async fn octopus_with_an_api_key_adds_precise_times_the_user_and_the_commit() {
    let fake = Arc::new(Fake::default());
    let url = fake_octopus(fake.clone()).await;
    let db = Arc::new(TestDb::new().await);
    let app = spawn_app_on(db, move |settings| {
        settings.api.octopus_key = Some("API-TESTKEY".into());
        settings.api.octopus_url = Some(url);
    })
    .await;
    fake.set(Mode::Failing(3)); // the first attempt fails; the worker retries
    send_fixture(&app, "octopus", "deployment_started.json").await;
    send_fixture(&app, "octopus", "deployment_succeeded.derived.json").await;
    let data = app
        .eventually(OCTOPUS, |d| {
            count(d) == 1
                && d["deployments"]["edges"][0]["node"]["events"]
                    .as_array()
                    .unwrap()
                    .len()
                    == 2
        })
        .await;
    let node = &data["deployments"]["edges"][0]["node"];
    assert_eq!(node["status"], "SUCCEEDED");
    assert_eq!(node["startedAt"], "2019-04-26T18:37:33.987Z", "the task's start");
    assert_eq!(
        node["finishedAt"], "2019-04-26T18:39:01.500Z",
        "the task's completion"
    );
    assert_eq!(node["actor"], "ada.lovelace");
    assert_eq!(node["commitSha"], "1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5");
    assert_eq!(node["ref"], "main");
    let calls = fake.calls.lock().unwrap().clone();
    assert!(
        calls
            .iter()
            .any(|(path, _)| path == "/api/Spaces-83/deployments/Deployments-15970")
    );
    assert!(
        calls
            .iter()
            .all(|(_, headers)| headers["x-octopus-apikey"] == "API-TESTKEY")
    );
}

#[tokio::test]
async fn workers_on_two_replicas_finish_each_pending_delivery_once() {
    let db = Arc::new(TestDb::new().await);
    if !db.is_postgres() {
        eprintln!("skipped: replicas share a PostgreSQL database (set SHIPLOG_TEST_DATABASE_URL)");
        return;
    }
    let fake = Arc::new(Fake::default());
    fake.set(Mode::Failing(2)); // both workers see failures and retries
    let url = fake_heroku(fake.clone()).await;
    let with_api = |url: String| {
        move |settings: &mut shiplog::config::Settings| {
            settings.api.heroku_key = Some("test-heroku-api-key".into());
            settings.api.heroku_url = Some(url);
        }
    };
    let (a, b) = tokio::join!(
        spawn_app_on(db.clone(), with_api(url.clone())),
        spawn_app_on(db.clone(), with_api(url))
    );
    for (i, fixture) in [
        "release_myapp-staging_v101.derived.json",
        "release_myapp-staging_v102.derived.json",
        "release_myapp-prod_v55.derived.json",
    ]
    .iter()
    .enumerate()
    {
        let replica = if i % 2 == 0 { &a } else { &b };
        send_fixture(replica, "heroku", fixture).await;
    }
    let data = b
        .eventually(
            "{ deployments { totalCount edges { node { events { id } } } } }",
            |d| count(d) == 3,
        )
        .await;
    assert_eq!(count(&data), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let data = a
        .data(
            "{ deployments { edges { node { events { id } } } } deliveries(state: PROCESSED) { id } }",
            json!({}),
        )
        .await;
    for edge in data["deployments"]["edges"].as_array().unwrap() {
        assert_eq!(
            edge["node"]["events"].as_array().unwrap().len(),
            1,
            "applied exactly once"
        );
    }
    assert_eq!(data["deliveries"].as_array().unwrap().len(), 3);
}
