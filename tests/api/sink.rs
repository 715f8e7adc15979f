//! CDEvents out: every finished deployment reaches a CDEvents sink as a valid
//! `service.deployed` / `upgraded` / `rolledback`, through a sink that fails for a while.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestDb, spawn_app_on};

/// A sink that answers 503 to its first `failing` requests, then stores what it is sent.
#[derive(Default)]
struct Receiver {
    failing: Mutex<u32>,
    received: Mutex<Vec<(Option<String>, Value)>>,
}

async fn serve(receiver: Arc<Receiver>) -> String {
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let receiver = receiver.clone();
            async move {
                let mut failing = receiver.failing.lock().unwrap();
                if *failing > 0 {
                    *failing -= 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                receiver.received.lock().unwrap().push((auth, body.0));
                StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/events")
}

/// The vendored CDEvents 0.4.1 schema of a `service.<predicate>` event.
fn validator(predicate: &str) -> jsonschema::Validator {
    let dir = crate::fixtures::fixture_dir("cdevents").join("schemas/v0.4.1");
    let read = |path: std::path::PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut registry = jsonschema::Registry::new();
    for entry in std::fs::read_dir(dir.join("links")).unwrap() {
        let schema = read(entry.unwrap().path());
        let id = schema["$id"].as_str().unwrap().to_string();
        registry = registry.add(id, schema).unwrap();
    }
    let registry = registry.prepare().unwrap();
    let schema = read(dir.join(format!("service{predicate}.json")));
    jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

#[tokio::test]
async fn every_finished_deployment_reaches_the_sink_valid_and_in_order_though_it_fails_first() {
    let receiver = Arc::new(Receiver {
        failing: Mutex::new(3),
        ..Receiver::default()
    });
    let url = serve(receiver.clone()).await;
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        s.cdevents_sink = shiplog::sink::SinkConfig {
            url: Some(url.clone()),
            token: Some("sink-token".into()),
            source: None,
        };
    })
    .await;
    let ship = |id: &str, version: &str, status: &str, at: &str| {
        json!({ "id": id, "system": "billing", "environment": "production", "status": status,
                "version": version, "finishedAt": at })
    };
    app.deliver(ship("d-1", "1.0", "succeeded", "2026-11-02T10:00:00Z"))
        .await;
    app.deliver(ship("d-2", "1.1", "succeeded", "2026-11-02T11:00:00Z"))
        .await;
    // A failure finishes nothing out there; a redelivered success is not a second event.
    app.deliver(ship("d-3", "1.2", "failed", "2026-11-02T11:10:00Z"))
        .await;
    app.deliver(ship("d-2", "1.1", "succeeded", "2026-11-02T11:00:01Z"))
        .await;
    app.deliver(ship("d-4", "1.0", "succeeded", "2026-11-02T11:30:00Z"))
        .await;
    let mut waited = Duration::ZERO;
    while receiver.received.lock().unwrap().len() < 3 && waited < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    let received = receiver.received.lock().unwrap().clone();
    let types: Vec<&str> = received
        .iter()
        .map(|(_, event)| event["context"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "dev.cdevents.service.deployed.0.2.0",
            "dev.cdevents.service.upgraded.0.2.0",
            "dev.cdevents.service.rolledback.0.2.0"
        ],
        "after three refusals, each once, in order"
    );
    for (auth, event) in &received {
        assert_eq!(auth.as_deref(), Some("Bearer sink-token"));
        let predicate = ["deployed", "upgraded", "rolledback"]
            .into_iter()
            .find(|p| event["context"]["type"].as_str().unwrap().contains(p))
            .unwrap();
        let errors: Vec<String> = validator(predicate)
            .iter_errors(event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{event}: {errors:?}");
    }
    assert_eq!(
        received[2].1["subject"],
        json!({ "id": "billing", "source": "generic", "type": "service",
                "content": { "environment": { "id": "production" }, "artifactId": "pkg:generic/billing@1.0" } })
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(receiver.received.lock().unwrap().len(), 3, "nothing sent twice");
    app.stop().await;
}

#[tokio::test]
async fn a_burst_longer_than_a_page_reaches_the_sink_at_once_not_when_it_settles() {
    // More finished deployments than the sender reads in one page (500), all within the two
    // minutes in which ids are not settled yet.
    let receiver = Arc::new(Receiver::default());
    let url = serve(receiver.clone()).await;
    let app = spawn_app_on(Arc::new(TestDb::new().await), |s| {
        s.cdevents_sink = shiplog::sink::SinkConfig {
            url: Some(url.clone()),
            token: None,
            source: None,
        };
    })
    .await;
    for n in 0..520 {
        app.deliver(json!({ "id": format!("d-{n}"), "system": format!("s-{}", n % 7),
            "environment": "production", "status": "succeeded", "version": format!("1.{n}") }))
            .await;
    }
    let mut waited = Duration::ZERO;
    while receiver.received.lock().unwrap().len() < 520 && waited < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    let received = receiver.received.lock().unwrap().clone();
    let mut ids: Vec<&str> = received
        .iter()
        .map(|(_, event)| event["context"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 520, "every one, within 30 s");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 520, "none twice");
    app.stop().await;
}

#[test]
fn a_malformed_event_fails_the_schema() {
    let mut broken = json!({ "context": { "version": "0.4.1", "id": "x", "source": "/shiplog",
        "type": "dev.cdevents.service.deployed.0.2.0", "timestamp": "2026-11-02T10:00:00Z" },
        "subject": { "id": "billing", "type": "service", "content": { "environment": { "id": "production" } } } });
    assert!(!validator("deployed").is_valid(&broken), "artifactId is required");
    broken["subject"]["content"]["artifactId"] = json!("pkg:generic/billing");
    assert!(validator("deployed").is_valid(&broken));
}
