//! The generic webhook: storing, redelivery, ordering, concurrency and bad input.

use serde_json::{Value, json};

use crate::helpers::{SECRET, generic, spawn_app};

const FULL: &str = "{ deployments { edges { node { id source externalId system { name } environment { name }
    status rawStatus rawSystem rawEnvironment startedAt finishedAt durationSeconds deployedAt commitSha ref
    version url actor firstSeenAt updatedAt events { status rawStatus previousStatus occurredAt } } } } }";

async fn nodes(app: &crate::helpers::TestApp) -> Vec<Value> {
    let data = app.data(FULL, json!({})).await;
    data["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

/// The journal's size, read through a connection of its own: what is durably there.
pub async fn delivery_count(app: &crate::helpers::TestApp) -> u64 {
    use sea_orm::{EntityTrait, PaginatorTrait};
    let db = sea_orm::Database::connect(app.db.url()).await.unwrap();
    let count = entity::deliveries::Entity::find().count(&db).await.unwrap();
    let _ = db.close().await;
    count
}

#[tokio::test]
async fn a_generic_delivery_is_stored_with_every_field() {
    let app = spawn_app().await;
    let answer = app
        .deliver(json!({
            "id": "build-1234", "system": "billing", "environment": "prod", "status": "succeeded",
            "startedAt": "2026-11-26T14:00:00Z", "finishedAt": "2026-11-26T15:03:00.250+01:00",
            "commitSha": "9F2C1A0B", "ref": "main", "version": "1.4.2",
            "url": "https://ci.example.com/build/1234", "actor": "ada"
        }))
        .await;
    assert_eq!(answer["status"], "accepted");
    let nodes = nodes(&app).await;
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!(node["source"], "generic");
    assert_eq!(node["externalId"], "build-1234");
    assert_eq!(node["system"]["name"], "billing");
    assert_eq!(
        node["environment"]["name"], "production",
        "prod is an alias of production"
    );
    assert_eq!(node["rawEnvironment"], "prod");
    assert_eq!(node["rawSystem"], "billing");
    assert_eq!(node["status"], "SUCCEEDED");
    assert_eq!(node["rawStatus"], "succeeded");
    assert_eq!(node["startedAt"], "2026-11-26T14:00:00.000Z");
    assert_eq!(node["finishedAt"], "2026-11-26T14:03:00.250Z");
    assert_eq!(node["durationSeconds"], 180.25);
    assert_eq!(node["deployedAt"], "2026-11-26T14:03:00.250Z");
    assert_eq!(node["commitSha"], "9f2c1a0b");
    assert_eq!(node["ref"], "main");
    assert_eq!(node["version"], "1.4.2");
    assert_eq!(node["url"], "https://ci.example.com/build/1234");
    assert_eq!(node["actor"], "ada");
    assert!(node["firstSeenAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(node["events"].as_array().unwrap().len(), 1);
    assert_eq!(node["events"][0]["previousStatus"], Value::Null);
}

#[tokio::test]
async fn a_redelivery_is_answered_200_and_changes_nothing() {
    let app = spawn_app().await;
    let body = generic("d-1", "running");
    let first = app.deliver(body.clone()).await;
    assert_eq!(first["status"], "accepted");
    let again = app.deliver(body.clone()).await;
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["deliveryId"], first["deliveryId"]);
    // With an Idempotency-Key the key decides, whatever the body.
    for status in ["succeeded", "failed"] {
        let response = app
            .client
            .post(app.url("/webhooks/generic"))
            .bearer_auth(SECRET)
            .header("Idempotency-Key", "key-1")
            .json(&generic("d-1", status))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let nodes = nodes(&app).await;
    assert_eq!(
        nodes[0]["status"], "SUCCEEDED",
        "the second delivery with key-1 was a duplicate"
    );
    assert_eq!(nodes[0]["events"].as_array().unwrap().len(), 2);
    assert_eq!(delivery_count(&app).await, 2);
}

#[tokio::test]
async fn a_late_running_never_overwrites_succeeded() {
    let app = spawn_app().await;
    let mut done = generic("d-2", "succeeded");
    done["finishedAt"] = json!("2026-11-26T10:05:00Z");
    app.deliver(done).await;
    let mut running = generic("d-2", "running");
    running["startedAt"] = json!("2026-11-26T10:00:00Z");
    app.deliver(running).await;
    let mut queued = generic("d-2", "queued");
    queued["version"] = json!("7");
    app.deliver(queued).await;
    let nodes = nodes(&app).await;
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!(node["status"], "SUCCEEDED");
    assert_eq!(node["startedAt"], "2026-11-26T10:00:00.000Z");
    assert_eq!(node["finishedAt"], "2026-11-26T10:05:00.000Z");
    assert_eq!(node["durationSeconds"], 300.0);
    assert_eq!(node["version"], "7", "an older event still fills a gap");
    let statuses: Vec<&str> = node["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 3);
}

#[tokio::test]
async fn concurrent_deliveries_about_one_deployment_make_one_row() {
    let app = spawn_app().await;
    let statuses = ["queued", "running", "succeeded", "running", "queued"];
    let posts = (0..40).map(|i| {
        let mut body = generic("d-3", statuses[i % statuses.len()]);
        body["version"] = json!(format!("v{i}"));
        let client = app.client.clone();
        let url = app.url("/webhooks/generic");
        async move {
            client
                .post(url)
                .bearer_auth(SECRET)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let answers = futures_util::future::join_all(posts).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let nodes = nodes(&app).await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["status"], "SUCCEEDED");
    assert_eq!(nodes[0]["events"].as_array().unwrap().len(), 40);
    assert_eq!(delivery_count(&app).await, 40);
}

#[tokio::test]
async fn bad_input_gets_a_400_that_says_what_to_fix_and_writes_nothing() {
    let app = spawn_app().await;
    let cases: Vec<(&str, &str, &str)> = vec![
        ("not json at all", "invalid_payload", "not JSON"),
        ("[1,2]", "invalid_payload", "JSON object"),
        (
            r#"{"id":"x","environment":"prod","status":"running"}"#,
            "invalid_payload",
            "`system` is required",
        ),
        (
            r#"{"id":"x","system":"s","environment":"prod","status":"deployed"}"#,
            "invalid_payload",
            "`status` is `deployed`",
        ),
        (
            r#"{"id":"x","system":"s","environment":"prod","status":"running","startedAt":"last tuesday"}"#,
            "invalid_payload",
            "`startedAt`",
        ),
        (
            r#"{"id":"x","system":"s","environment":"prod","status":"running","startedAt":true}"#,
            "invalid_payload",
            "`startedAt`",
        ),
        (
            r#"{"id":"x","system":17,"environment":"prod","status":"running"}"#,
            "invalid_payload",
            "`system` must be a string",
        ),
        (
            r#"{"id":"x","system":"s","environment":"","status":"running"}"#,
            "invalid_payload",
            "`environment` must not be empty",
        ),
        (
            r#"{"id":"x","system":"s","environment":"e","status":"running","commitSha":"not-a-sha"}"#,
            "invalid_payload",
            "`commitSha`",
        ),
    ];
    for (body, code, needle) in cases {
        let response = app
            .client
            .post(app.url("/webhooks/generic"))
            .bearer_auth(SECRET)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], code, "{body}");
        assert!(
            answer["message"].as_str().unwrap().contains(needle),
            "{body} -> {answer}"
        );
    }
    let non_utf8 = app
        .client
        .post(app.url("/webhooks/generic"))
        .bearer_auth(SECRET)
        .body(vec![0xff, 0xfe, b'{'])
        .send()
        .await
        .unwrap();
    assert_eq!(non_utf8.status(), 400);
    let long_name = generic(&"x".repeat(300), "running");
    assert_eq!(app.post_generic(&long_name).await.status(), 400);
    assert_eq!(delivery_count(&app).await, 0, "nothing refused is journaled");
    assert!(nodes(&app).await.is_empty());
}

#[tokio::test]
async fn a_delivery_without_the_right_secret_gets_401_naming_the_setting() {
    let app = spawn_app().await;
    let body = generic("d-4", "running");
    let missing = app
        .client
        .post(app.url("/webhooks/generic"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let answer: Value = missing.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("SHIPLOG_GENERIC_SECRET"),
        "{answer}"
    );
    let wrong = app
        .client
        .post(app.url("/webhooks/generic"))
        .bearer_auth("guess")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let answer: Value = wrong.json().await.unwrap();
    assert!(
        !answer.to_string().contains(SECRET),
        "the secret never appears in an answer"
    );
    assert_eq!(delivery_count(&app).await, 0);
}

#[tokio::test]
async fn an_unknown_source_gets_404_listing_the_sources() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/webhooks/teamcity"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "not_found");
    assert!(answer["message"].as_str().unwrap().contains("generic"));
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let app = spawn_app().await;
    let mut body = generic("d-5", "running");
    body["padding"] = json!("x".repeat(2 * 1024 * 1024));
    let response = app.post_generic(&body).await;
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("SHIPLOG_MAX_BODY_BYTES")
    );
}

/// A burst of deliveries (written in batches, several observations of one deployment in one
/// transaction) ends in the same deployments, board and per-day counts as the same deliveries
/// sent one at a time.
#[tokio::test]
async fn a_burst_ends_like_one_delivery_at_a_time() {
    const T: i64 = 1_767_571_200_000;
    let mut bodies = Vec::new();
    for id in 0..40i64 {
        let system = ["billing", "search", "checkout"][(id % 3) as usize];
        let environment = ["production", "staging"][(id % 2) as usize];
        let started = T + id * 3_600_000;
        let last = if id % 5 == 0 { "failed" } else { "succeeded" };
        for status in ["queued", "running", last] {
            let mut body = json!({
                "id": format!("burst-{id}"), "system": system, "environment": environment,
                "status": status, "version": format!("1.{id}.0"), "startedAt": started,
            });
            if status == last {
                // Finishing the next day moves the deployment's day in the rollup.
                body["finishedAt"] = json!(started + 20 * 3_600_000);
            }
            bodies.push(body);
        }
    }
    let burst = spawn_app().await;
    let serial = spawn_app().await;
    futures_util::future::join_all(bodies.iter().map(|body| burst.deliver(body.clone()))).await;
    for body in &bodies {
        serial.deliver(body.clone()).await;
    }
    let shape = |mut nodes: Vec<Value>| {
        for node in &mut nodes {
            // Ids, arrival times and the order events arrived in differ between the two runs.
            let object = node.as_object_mut().unwrap();
            for key in ["id", "firstSeenAt", "updatedAt"] {
                object.remove(key);
            }
            let mut statuses: Vec<String> = object["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["status"].as_str().unwrap().to_string())
                .collect();
            statuses.sort();
            object.insert("events".into(), json!(statuses));
        }
        nodes.sort_by_key(|n| n["externalId"].as_str().unwrap().to_string());
        nodes
    };
    let (a, b) = (shape(nodes(&burst).await), shape(nodes(&serial).await));
    assert_eq!(a.len(), 20, "the default page");
    assert_eq!(a, b);
    let everything = "{ deployments(first: 100) { totalCount edges { node { externalId status } } } }";
    let (a, b) = (
        burst.data(everything, json!({})).await,
        serial.data(everything, json!({})).await,
    );
    assert_eq!(a["deployments"]["totalCount"], 40);
    let sorted = |v: &Value| {
        let mut pairs: Vec<String> = v["deployments"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].to_string())
            .collect();
        pairs.sort();
        pairs
    };
    assert_eq!(sorted(&a), sorted(&b));
    let board = "{ board { environments { name } rows { system { name } cells { environment { name }
        current { externalId } inProgress { externalId } lastFailure { externalId } } } } }";
    let cells = burst.data(board, json!({})).await;
    assert_eq!(cells["board"]["rows"].as_array().unwrap().len(), 3, "{cells}");
    assert_eq!(cells, serial.data(board, json!({})).await);
    // The two databases may number systems differently (the burst creates them in any order),
    // so each rollup kept at ingest is compared with a rebuild from its own deployments.
    let (a, b) = (
        burst.store.count_rollup().await.unwrap(),
        serial.store.count_rollup().await.unwrap(),
    );
    burst.store.rebuild_counts().await.unwrap();
    assert_eq!(
        a,
        burst.store.count_rollup().await.unwrap(),
        "burst rollup kept == rebuilt"
    );
    serial.store.rebuild_counts().await.unwrap();
    assert_eq!(
        b,
        serial.store.count_rollup().await.unwrap(),
        "serial rollup kept == rebuilt"
    );
    burst.stop().await;
    serial.stop().await;
}
