//! Connections that send nothing, or their request head a byte at a time, cannot take the
//! server's file descriptors: the real binary under a 256-file limit keeps answering health
//! checks, webhooks and queries while 400 such connections are held, and closes them.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::crash::Server;
use crate::helpers::{SECRET, TestDb, generic};

/// Reads until the server closes the connection; true when it did within `wait`.
async fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_and_never_starve_the_server() {
    let db = TestDb::new().await;
    let server = Server::start_with(&db, |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only an async-signal-safe system call between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = rustix::process::Rlimit {
                    current: Some(256),
                    maximum: Some(256),
                };
                rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                    .map_err(std::io::Error::from)
            });
        }
    })
    .await;
    let address = server.url("").trim_start_matches("http://").to_string();

    // Slowloris: a request head that never ends, a header line every second.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: shiplog\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let dripping = tokio::spawn(async move {
        for n in 0..15 {
            for stream in &mut slow {
                let _ = stream.write_all(format!("X-Drip-{n}: 1\r\n").as_bytes()).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        slow
    });
    // More connections that send nothing than the process has files.
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }

    // Meanwhile every kind of client is served, promptly.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("a health check is answered");
    assert_eq!(health.status(), 200);
    let webhook = client
        .post(server.url("/webhooks/generic"))
        .bearer_auth(SECRET)
        .json(&generic("during-the-flood", "succeeded"))
        .send()
        .await
        .expect("a webhook is answered");
    assert_eq!(webhook.status(), 200, "{}", webhook.text().await.unwrap());
    let query = client
        .post(server.url("/graphql"))
        .json(&json!({ "query": "{ deployments(first: 1) { edges { node { externalId } } } }" }))
        .send()
        .await
        .expect("a query is answered");
    assert_eq!(query.status(), 200);
    let answer: serde_json::Value = query.json().await.unwrap();
    assert_eq!(
        answer["data"]["deployments"]["edges"][0]["node"]["externalId"],
        "during-the-flood"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        started.elapsed()
    );

    // The silent connections and the dripping ones are closed by the server.
    let mut still_open = 0;
    for stream in &mut idle {
        if !closed_by_server(stream, Duration::from_secs(15)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "connections that sent nothing are closed");
    let mut slow = dripping.await.unwrap();
    for stream in &mut slow {
        assert!(
            closed_by_server(stream, Duration::from_secs(1)).await,
            "a request head that takes 15 s is cut off"
        );
    }
}
