//! shiplog's load tool: drives a running shiplog over real HTTP and WebSocket and prints a
//! table (throughput, p50, p99, errors, server RSS).
//!
//! ```sh
//! cargo run --release --example load -- ingest  --url http://127.0.0.1:8080 --secrets-from-env --concurrency 1,8,32 --seconds 10 --pid $(pgrep -n shiplog)
//! cargo run --release --example load -- queries --url http://127.0.0.1:8080 --concurrency 16 --seconds 15 --pid ...
//! cargo run --release --example load -- live    --url http://127.0.0.1:8080 --subscribers 1000 --rate 50 --seconds 10
//! ```
//! Ingest sends a mix of every source's fixture payloads (tests/fixtures) with unique ids, each
//! deployment seen 2-3 times (queued/running/finished), then checks every deployment is there.
//! Secrets: SHIPLOG_{GENERIC,GITLAB,JENKINS,HEROKU,OCTOPUS}_SECRET in the environment.
//! `--only gitlab` sends GitLab deployment events alone; `--only buildkite` Buildkite's webhook to
//! a server declaring `[sources.buildkite] recipe = "buildkite"` (SHIPLOG_BUILDKITE_SECRET): a
//! declared source against a built-in one of similar size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hmac::Mac;
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Args {
    mode: String,
    url: String,
    concurrency: Vec<usize>,
    seconds: u64,
    pid: Option<u32>,
    subscribers: usize,
    rate: u64,
    only: Option<String>,
    deployments: u64,
}

fn args() -> Args {
    let mut args = Args {
        mode: String::new(),
        url: "http://127.0.0.1:8080".into(),
        concurrency: vec![1, 8, 32],
        seconds: 10,
        pid: None,
        subscribers: 1000,
        rate: 50,
        only: None,
        deployments: 50_000,
    };
    let mut it = std::env::args().skip(1);
    args.mode = it.next().unwrap_or_default();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => args.url = value,
            "--concurrency" => args.concurrency = value.split(',').map(|c| c.parse().unwrap()).collect(),
            "--seconds" => args.seconds = value.parse().unwrap(),
            "--pid" => args.pid = value.parse().ok(),
            "--subscribers" => args.subscribers = value.parse().unwrap(),
            "--rate" => args.rate = value.parse().unwrap(),
            "--only" => args.only = Some(value),
            "--deployments" => args.deployments = value.parse().unwrap(),
            _ => panic!("unknown flag {flag}"),
        }
    }
    args
}

fn rss_mib(pid: Option<u32>) -> String {
    let Some(pid) = pid else { return "-".into() };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1}", kb / 1024.0))
        .unwrap_or_else(|| "-".into())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn fixture(path: &str) -> Value {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

fn set(value: &mut Value, pointer: &str, new: Value) {
    if let Some(slot) = value.pointer_mut(pointer) {
        *slot = new;
    }
}

fn secret(source: &str) -> String {
    std::env::var(format!("SHIPLOG_{}_SECRET", source.to_uppercase()))
        .unwrap_or_else(|_| format!("load-{source}"))
}

/// The 2-3 deliveries of deployment `n`, through the source `n` picks.
fn deliveries(n: u64, run: &str) -> Vec<(String, Value)> {
    match n % 5 {
        0 => ["queued", "running", "succeeded"]
            .iter()
            .map(|status| {
                let mut body = fixture("generic/succeeded.json");
                set(&mut body, "/id", json!(format!("{run}-{n}")));
                set(&mut body, "/status", json!(status));
                ("generic".to_string(), body)
            })
            .collect(),
        1 => ["running", "success"]
            .iter()
            .map(|status| {
                let mut body = fixture("gitlab/deployment_success.json");
                // Job ids are global in GitLab: keep each run's apart.
                let job = run_number(run) * 100_000_000 + n;
                set(&mut body, "/deployable_id", json!(job));
                set(&mut body, "/deployment_id", json!(job));
                set(&mut body, "/status", json!(status));
                ("gitlab".to_string(), body)
            })
            .collect(),
        2 => [
            "deploy_started.json",
            "deploy_completed_success.json",
            "deploy_finalized_success.json",
        ]
        .iter()
        .map(|file| {
            let mut body = fixture(&format!("jenkins/{file}"));
            set(&mut body, "/name", json!(format!("load/{run}/deploy")));
            set(&mut body, "/build/number", json!(n));
            ("jenkins".to_string(), body)
        })
        .collect(),
        3 => ["pending", "succeeded"]
            .iter()
            .enumerate()
            .map(|(i, status)| {
                let mut body = fixture("heroku/release_update_succeeded.real-redacted.json");
                set(&mut body, "/data/id", json!(format!("{run}-release-{n}")));
                set(&mut body, "/data/status", json!(status));
                set(
                    &mut body,
                    "/webhook_metadata/delivery/id",
                    json!(format!("{run}-delivery-{n}-{i}")),
                );
                ("heroku".to_string(), body)
            })
            .collect(),
        _ => ["deployment_started.json", "deployment_succeeded.derived.json"]
            .iter()
            .enumerate()
            .map(|(i, file)| {
                let mut body = fixture(&format!("octopus/{file}"));
                let deployment = format!("Deployments-{}{n}", run.len());
                set(
                    &mut body,
                    "/Payload/Event/Id",
                    json!(format!("Events-{run}-{n}-{i}")),
                );
                set(
                    &mut body,
                    "/Payload/Event/RelatedDocumentIds/0",
                    json!(deployment),
                );
                set(
                    &mut body,
                    "/Payload/Event/SpaceId",
                    json!(format!("Spaces-{run}")),
                );
                ("octopus".to_string(), body)
            })
            .collect(),
    }
}

/// The deliveries of deployment `n` when one source is measured alone.
fn deliveries_of(only: Option<&str>, n: u64, run: &str) -> Vec<(String, Value)> {
    match only {
        None => deliveries(n, run),
        Some("gitlab") => deliveries(n * 5 + 1, run),
        Some("buildkite") => [("build.running", "running"), ("build.finished", "passed")]
            .iter()
            .map(|(event, state)| {
                let mut body = fixture("buildkite/webhook_build_finished.from-rest.derived.json");
                set(&mut body, "/event", json!(event));
                set(&mut body, "/build/id", json!(format!("{run}-{n}")));
                set(&mut body, "/build/state", json!(state));
                ("buildkite".to_string(), body)
            })
            .collect(),
        Some(other) => panic!("--only gitlab or buildkite, not {other}"),
    }
}

/// A number unique to a run name.
fn run_number(run: &str) -> u64 {
    run.bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 10_000_000
}

async fn send(client: &reqwest::Client, url: &str, source: &str, body: &Value) -> bool {
    let bytes = serde_json::to_vec(body).unwrap();
    let secret = secret(source);
    let mut request = client
        .post(format!("{url}/webhooks/{source}"))
        .header("content-type", "application/json");
    request = match source {
        "generic" => request.bearer_auth(&secret),
        "gitlab" => request.header("X-Gitlab-Token", &secret),
        "jenkins" => request.basic_auth("jenkins", Some(&secret)),
        "buildkite" => request.header("X-Buildkite-Token", &secret),
        "heroku" => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(&bytes);
            request.header(
                "Heroku-Webhook-Hmac-SHA256",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
            )
        }
        _ => request.header("X-Shiplog-Secret", &secret),
    };
    matches!(request.body(bytes).send().await, Ok(r) if r.status().is_success())
}

async fn graphql(client: &reqwest::Client, url: &str, query: &str) -> Value {
    client
        .post(format!("{url}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn ingest(args: &Args) {
    println!("| concurrency | webhooks/s | p50 ms | p99 ms | errors | deployments checked | RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    for &concurrency in &args.concurrency {
        let run = format!("c{concurrency}x{}", std::process::id());
        let before = graphql(&client, &args.url, "{ deployments { totalCount } }").await["data"]["deployments"]["totalCount"]
            .as_u64()
            .unwrap_or(0);
        let next = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, next, latencies, errors, run, only) = (
                    client.clone(),
                    args.url.clone(),
                    next.clone(),
                    latencies.clone(),
                    errors.clone(),
                    run.clone(),
                    args.only.clone(),
                );
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while Instant::now() < deadline {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        for (source, body) in deliveries_of(only.as_deref(), n, &run) {
                            let t = Instant::now();
                            if send(&client, &url, &source, &body).await {
                                mine.push(t.elapsed().as_secs_f64() * 1000.0);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    latencies.lock().await.extend(mine);
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let mut latencies = latencies.lock().await.clone();
        latencies.sort_by(|a, b| a.total_cmp(b));
        let deployments = next.load(Ordering::Relaxed);
        // Every deployment must be there: the total grows by exactly this run's deployments.
        let found = graphql(&client, &args.url, "{ deployments { totalCount } }").await["data"]["deployments"]
            ["totalCount"]
            .as_u64()
            .unwrap_or(0) - before;
        println!(
            "| {concurrency} | {:.0} | {:.2} | {:.2} | {} | {} sent, {} new in the database | {} |",
            latencies.len() as f64 / elapsed,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            errors.load(Ordering::Relaxed),
            deployments,
            found,
            rss_mib(args.pid)
        );
    }
}

async fn queries(args: &Args) {
    let now = chrono::Utc::now().timestamp_millis();
    let year = now - 365 * 86_400_000;
    let week = now - 200 * 86_400_000;
    let shapes = [
        ("newest 100 with names", "{ deployments(first: 100) { edges { node { id status deployedAt system { name } environment { name } } } } }".to_string()),
        (
            "one system, one environment, 7 days",
            format!("{{ deployments(first: 100, filter: {{ systems: [\"search\"], environments: [\"production\"], from: {week}, to: {} }}) {{ edges {{ node {{ id status deployedAt }} }} }} }}", week + 7 * 86_400_000),
        ),
        (
            "counts per environment, 30 days",
            format!("{{ deploymentFrequency(from: {}, to: {now}, interval: WEEK, groupBy: [ENVIRONMENT]) {{ time count environment }} }}", now - 30 * 86_400_000),
        ),
        (
            "frequency per day, all systems, a year",
            format!("{{ deploymentFrequency(from: {year}, to: {now}, interval: DAY) {{ time count }} }}"),
        ),
        (
            "frequency per day per system (50 series), a year",
            format!("{{ deploymentFrequency(from: {year}, to: {now}, interval: DAY, groupBy: [SYSTEM]) {{ time count system }} }}"),
        ),
    ];
    println!("| query | concurrency | req/s | p50 ms | p99 ms | errors | RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    for (name, query) in shapes {
        for &concurrency in &args.concurrency {
            let deadline = Instant::now() + Duration::from_secs(args.seconds);
            let started = Instant::now();
            let latencies = Arc::new(Mutex::new(Vec::new()));
            let errors = Arc::new(AtomicU64::new(0));
            let body = Arc::new(json!({ "query": query }));
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (client, url, latencies, errors, body) = (
                        client.clone(),
                        args.url.clone(),
                        latencies.clone(),
                        errors.clone(),
                        body.clone(),
                    );
                    tokio::spawn(async move {
                        let mut mine = Vec::new();
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            let ok = match client.post(format!("{url}/graphql")).json(&*body).send().await {
                                Ok(r) => r.json::<Value>().await.is_ok_and(|v| v.get("errors").is_none()),
                                Err(_) => false,
                            };
                            if ok {
                                mine.push(t.elapsed().as_secs_f64() * 1000.0);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        latencies.lock().await.extend(mine);
                    })
                })
                .collect();
            for worker in workers {
                worker.await.unwrap();
            }
            let elapsed = started.elapsed().as_secs_f64();
            let mut latencies = latencies.lock().await.clone();
            latencies.sort_by(|a, b| a.total_cmp(b));
            println!(
                "| {name} | {concurrency} | {:.0} | {:.2} | {:.2} | {} | {} |",
                latencies.len() as f64 / elapsed,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                errors.load(Ordering::Relaxed),
                rss_mib(args.pid)
            );
        }
    }
}

async fn live(args: &Args) {
    let ws_url = args.url.replacen("http", "ws", 1) + "/graphql/ws";
    let received: Arc<Mutex<Vec<(String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(AtomicU64::new(0));
    let run = format!("live{}", std::process::id());
    let mut tasks = Vec::new();
    for _ in 0..args.subscribers {
        let (ws_url, received, ready, run) = (ws_url.clone(), received.clone(), ready.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            use tokio_tungstenite::tungstenite::Message;
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = ws_url.into_client_request().unwrap();
            request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            socket.send(Message::Text(json!({"type": "connection_init", "payload": {}}).to_string().into())).await.unwrap();
            let _ack = socket.next().await;
            let query = format!("subscription {{ deploymentEvents(filter: {{ systems: [\"{run}\"] }}) {{ deployment {{ externalId }} }} }}");
            socket
                .send(Message::Text(json!({"type": "subscribe", "id": "1", "payload": {"query": query}}).to_string().into()))
                .await
                .unwrap();
            ready.fetch_add(1, Ordering::Relaxed);
            let mut mine = Vec::new();
            while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                if let Message::Text(text) = message {
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if value["type"] == "next" {
                        let id = value["payload"]["data"]["deploymentEvents"]["deployment"]["externalId"].as_str().unwrap_or_default();
                        mine.push((id.to_string(), Instant::now()));
                    }
                }
            }
            received.lock().await.extend(mine);
        }));
    }
    while ready.load(Ordering::Relaxed) < args.subscribers as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let mut acknowledged: Vec<(String, Instant)> = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let total = args.rate * args.seconds;
    for n in 0..total {
        let id = format!("{run}-{n}");
        let body = json!({ "id": id, "system": run, "environment": "production", "status": "succeeded" });
        let t = Instant::now();
        let response = client
            .post(format!("{}/webhooks/generic", args.url))
            .bearer_auth(secret("generic"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        acknowledged.push((id, Instant::now()));
        let spent = t.elapsed();
        if spent < interval {
            tokio::time::sleep(interval - spent).await;
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let acks: std::collections::HashMap<String, Instant> = acknowledged.into_iter().collect();
    let received = received.lock().await;
    let mut latencies: Vec<f64> = received
        .iter()
        .filter_map(|(id, at)| {
            acks.get(id)
                .map(|ack| at.saturating_duration_since(*ack).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let expected = total as usize * args.subscribers;
    println!(
        "| subscribers | events | deliveries expected | received | missing | p50 ms | p99 ms | max ms | RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {total} | {expected} | {} | {} | {:.2} | {:.2} | {:.2} | {} |",
        args.subscribers,
        latencies.len(),
        expected.saturating_sub(latencies.len()),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        rss_mib(args.pid)
    );
}

#[tokio::main]
async fn main() {
    let args = args();
    match args.mode.as_str() {
        "ingest" => ingest(&args).await,
        "queries" => queries(&args).await,
        "live" => live(&args).await,
        "fake-gitlab" => fake_gitlab(&args).await,
        _ => eprintln!(
            "usage: load (ingest|queries|live|fake-gitlab) [--url URL] [--concurrency 1,8,32] [--seconds N] [--pid PID] [--subscribers N] [--rate N] [--deployments N]"
        ),
    }
}

/// A GitLab deployments API that answers at once, for timing `shiplog import gitlab` against
/// shiplog alone: `--deployments N` of project `root/app`, made from the documented list item,
/// 100 per page (or `per_page`), oldest change first, with `Link: rel="next"` and `x-total`.
/// Serves on `--url`'s address until stopped.
async fn fake_gitlab(args: &Args) {
    use axum::extract::{Query, State};
    use axum::response::IntoResponse;
    let template = fixture("gitlab/api/deployments_list.response.docs.json")[1].clone();
    let deployments: Arc<Vec<Value>> = Arc::new(
        (1..=args.deployments)
            .map(|n| {
                let mut d = template.clone();
                d["id"] = json!(n);
                d["iid"] = json!(n);
                d["status"] = json!("success");
                d["updated_at"] = json!(shiplog::domain::format_millis(
                    1_767_225_600_000 + n as i64 * 1000
                ));
                d["deployable"]["id"] = json!(1_000_000 + n);
                d
            })
            .collect(),
    );
    let address = args.url.trim_start_matches("http://").to_string();
    let base = args.url.clone();
    let app = axum::Router::new()
        .route(
            "/api/v4/projects/{project}/deployments",
            axum::routing::get(
                move |State(all): State<Arc<Vec<Value>>>, Query(q): Query<std::collections::HashMap<String, String>>| {
                    let base = base.clone();
                    async move {
                        let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                        let size: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(20).min(100);
                        let items: Vec<&Value> = all.iter().skip((page - 1) * size).take(size).collect();
                        let mut headers = axum::http::HeaderMap::new();
                        headers.insert("x-total", all.len().to_string().parse().unwrap());
                        if page * size < all.len() {
                            let next = format!("<{base}/api/v4/projects/root%2Fapp/deployments?order_by=updated_at&sort=asc&per_page={size}&page={}>; rel=\"next\"", page + 1);
                            headers.insert("link", next.parse().unwrap());
                        }
                        (headers, axum::Json(items)).into_response()
                    }
                },
            ),
        )
        .with_state(deployments);
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    eprintln!(
        "a fake GitLab with {} deployments of root/app at {}",
        args.deployments, args.url
    );
    axum::serve(listener, app).await.unwrap();
}
