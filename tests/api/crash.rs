//! The real binary, killed. SIGKILL while webhooks are in flight: every delivery answered 2xx is
//! there after a restart and processed; the unanswered ones are re-sent and deduplicated.
//! SIGTERM: in-flight requests finish, subscribers get a close frame, the process exits 0.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{SECRET, Subscriber, TestDb, generic};

/// The real binary, serving on a free port (also used by `sockets`).
pub(crate) struct Server {
    pub(crate) child: Child,
    port: u16,
}

impl Server {
    pub(crate) async fn start(db: &TestDb) -> Server {
        Self::start_with(db, |_| {}).await
    }

    /// Starts the binary with its command adjusted by `tweak` (a file limit, say).
    pub(crate) async fn start_with(db: &TestDb, tweak: impl FnOnce(&mut Command)) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_shiplog"));
        command
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                db.url(),
                "--webhook-rate-limit",
                "0",
            ])
            .env("SHIPLOG_GENERIC_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .env_remove("SHIPLOG_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        tweak(&mut command);
        let child = command.spawn().unwrap();
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                break;
            }
            assert!(Instant::now() < deadline, "shiplog did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child, port }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// One GraphQL request (`{"query": ..., "variables": ...}`) over HTTP; its JSON answer.
    pub(crate) async fn graphql(&self, request: serde_json::Value) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(self.url("/graphql"))
            .json(&request)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends deliveries `p-<worker>-<n>` from `workers` concurrent senders until stopped, counting
/// acknowledgements in `progress`; returns (sent, acknowledged) ids.
async fn flood(
    url: String,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    progress: Arc<std::sync::atomic::AtomicUsize>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let (url, stop, sent, acknowledged, progress) = (
                url.clone(),
                stop.clone(),
                sent.clone(),
                acknowledged.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                for n in 0..10_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("p-{worker}-{n}");
                    sent.lock().unwrap().insert(id.clone());
                    let answer = client
                        .post(&url)
                        .bearer_auth(SECRET)
                        .json(&generic(&id, "succeeded"))
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status().is_success() => {
                            acknowledged.lock().unwrap().insert(id);
                            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let sent = sent.lock().unwrap().clone();
    let acknowledged = acknowledged.lock().unwrap().clone();
    (sent, acknowledged)
}

/// Waits until `count` deliveries were acknowledged (at most 30 s).
async fn wait_for(progress: &std::sync::atomic::AtomicUsize, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(std::sync::atomic::Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stored_ids(server: &Server) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut after = serde_json::Value::Null;
    loop {
        let page = server
            .graphql(json!({ "query": "query($after: String) { deployments(first: 500, after: $after) {
                edges { node { externalId status } } pageInfo { hasNextPage endCursor } } }", "variables": { "after": after } }))
            .await;
        let connection = &page["data"]["deployments"];
        for edge in connection["edges"].as_array().unwrap() {
            assert_eq!(edge["node"]["status"], "SUCCEEDED");
            ids.insert(edge["node"]["externalId"].as_str().unwrap().to_string());
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            return ids;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
}

#[tokio::test]
async fn a_sigkill_during_a_flood_loses_no_acknowledged_delivery() {
    let db = TestDb::new().await;
    let mut server = Server::start(&db).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = tokio::spawn(flood(
        server.url("/webhooks/generic"),
        16,
        stop.clone(),
        progress.clone(),
    ));
    // Kill in the middle of the flood: once it is well under way (a loaded CI machine can take
    // a while to get there), while 16 senders still have requests in flight.
    wait_for(&progress, 100).await;
    server.child.kill().unwrap(); // SIGKILL: no graceful anything
    server.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, acknowledged) = flood.await.unwrap();
    assert!(
        acknowledged.len() >= 20,
        "the flood got going before the kill: {}",
        acknowledged.len()
    );

    let server = Server::start(&db).await;
    let found = stored_ids(&server).await;
    let lost: Vec<_> = acknowledged.difference(&found).collect();
    eprintln!(
        "SIGKILL: sent {}, acknowledged {}, found after restart {} (unanswered but stored: {}), lost {}",
        sent.len(),
        acknowledged.len(),
        found.len(),
        found.len() - acknowledged.intersection(&found).count(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let pending: serde_json::Value = reqwest::Client::new()
        .post(server.url("/graphql"))
        .json(&json!({ "query": "{ deliveries(state: PENDING) { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        pending["data"]["deliveries"],
        json!([]),
        "everything stored was processed"
    );

    // Senders retry what got no answer; duplicates of stored ones change nothing.
    let client = reqwest::Client::new();
    for id in &sent {
        let response = client
            .post(server.url("/webhooks/generic"))
            .bearer_auth(SECRET)
            .json(&generic(id, "succeeded"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(stored_ids(&server).await, sent);
}

#[tokio::test]
async fn a_sigterm_finishes_in_flight_requests_and_closes_subscribers() {
    let db = TestDb::new().await;
    let mut server = Server::start(&db).await;
    let address = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let mut subscriber = Subscriber::connect(
        address,
        "graphql-transport-ws",
        "subscription { deploymentEvents { status } }",
        json!({}),
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = tokio::spawn(flood(
        server.url("/webhooks/generic"),
        8,
        stop.clone(),
        progress.clone(),
    ));
    wait_for(&progress, 50).await;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "shiplog did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a clean exit: {status:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, acknowledged) = flood.await.unwrap();
    assert_eq!(
        subscriber.closed(Duration::from_secs(5)).await,
        Some(1001),
        "subscribers get `going away`"
    );

    let server = Server::start(&db).await;
    let found = stored_ids(&server).await;
    eprintln!(
        "SIGTERM: sent {}, acknowledged {}, found {}",
        sent.len(),
        acknowledged.len(),
        found.len()
    );
    assert!(acknowledged.is_subset(&found));
}
