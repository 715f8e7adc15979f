//! One contract, every source: secrets, garbage, acceptance, redelivery.

use std::time::Duration;

use serde_json::{Value, json};
use shiplog::sources::{Accepted, Auth, Delivery, Parsed, Registry};

use crate::fixtures::{fixture_dir, fixture_headers, fixtures};
use crate::helpers::{TestApp, secret_of, spawn_app};

/// Every way a source takes its secret, one by one.
fn ways(auth: &Auth) -> Vec<Auth> {
    match auth {
        Auth::AnyOf(alternatives) => alternatives.iter().flat_map(ways).collect(),
        one => vec![one.clone()],
    }
}

/// Posts `body` to a source, with `secret` sent the way `auth` says (none at all with None),
/// and the fixture's own headers.
pub async fn send(
    app: &TestApp,
    source: &str,
    auth: &Auth,
    secret: Option<&str>,
    body: Vec<u8>,
    headers: &axum::http::HeaderMap,
) -> reqwest::Response {
    let mut url = app.url(&format!("/webhooks/{source}"));
    if let (Some(secret), Auth::Query(name)) = (secret, auth) {
        url = format!("{url}?{name}={secret}");
    }
    let mut request = app.client.post(&url).header("content-type", "application/json");
    for (name, value) in headers {
        // The fixtures' own secret and signature headers are placeholders; the test sends its own.
        // The length is the body's own, not the composed example's.
        if !carries_secret(auth, name.as_str()) && name != "content-length" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    if let Some(secret) = secret {
        request = match auth {
            Auth::Bearer => request.bearer_auth(secret),
            Auth::Header(name) => request.header(name.as_str(), secret),
            Auth::Basic => request.basic_auth("shiplog", Some(secret)),
            Auth::Query(_) => request,
            Auth::Hmac(signature) => request.header(
                signature.header.as_str(),
                signature.sign(secret.as_bytes(), &body),
            ),
            Auth::AnyOf(ways) => {
                return Box::pin(send(app, source, &ways[0], Some(secret), body, headers)).await;
            }
        };
    }
    request.body(body).send().await.unwrap()
}

/// Whether a header is where `auth` puts the secret (or a signature made with it).
fn carries_secret(auth: &Auth, header: &str) -> bool {
    match auth {
        Auth::Bearer | Auth::Basic => header.eq_ignore_ascii_case("authorization"),
        Auth::Header(name) => header.eq_ignore_ascii_case(name),
        Auth::Hmac(signature) => header.eq_ignore_ascii_case(&signature.header),
        Auth::Query(_) => false,
        Auth::AnyOf(ways) => ways.iter().any(|way| carries_secret(way, header)),
    }
}

/// What a fixture is, read by its source the way the server reads it.
fn accepted(
    registry: &Registry,
    source: &str,
    body: &[u8],
    headers: &axum::http::HeaderMap,
) -> Option<Accepted> {
    registry
        .get(source)?
        .accept(&Delivery {
            headers,
            query: None,
            body,
            received_at: 0,
        })
        .ok()
}

async fn deployment_count(app: &TestApp) -> u64 {
    app.data("{ deployments { totalCount } }", json!({})).await["deployments"]["totalCount"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn every_source_keeps_the_contract() {
    let app = spawn_app().await;
    let registry = crate::helpers::registry();
    let mut subscriber = app
        .subscribe(
            "subscription { deploymentEvents { deployment { source externalId } } }",
            json!({}),
        )
        .await;
    let mut cases = 0;
    for source in registry.names() {
        // Each way of sending the secret with its own fixture that describes one deployment
        // (a new source without such a fixture fails here: it cannot skip the contract).
        let mut deploying = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for path in fixtures(source) {
            let body = std::fs::read(&path).unwrap();
            let headers = fixture_headers(&path);
            if let Some(Accepted {
                parsed: Parsed::Deployments(observations),
                ..
            }) = accepted(&registry, source, &body, &headers)
                && observations.len() == 1
                && seen.insert(observations[0].external_id.clone())
            {
                deploying.push(path);
            }
        }
        let auth = registry.get(source).unwrap().auth().clone();
        let ways = ways(&auth);
        assert!(
            deploying.len() >= ways.len(),
            "{source}: tests/fixtures/{source}/ needs a fixture describing one deployment for each way its secret travels ({} found)",
            deploying.len()
        );
        for (way, path) in ways.iter().zip(&deploying) {
            let case = Case {
                source,
                fixture: path.file_name().unwrap().to_str().unwrap(),
                auth: way,
                secret: &secret_of(source),
            };
            check(&app, &mut subscriber, &case).await;
            cases += 1;
        }
    }
    assert!(cases >= 6, "contract cases run: {cases}");
}

struct Case<'a> {
    source: &'a str,
    fixture: &'a str,
    auth: &'a Auth,
    secret: &'a str,
}

async fn check(app: &TestApp, subscriber: &mut crate::helpers::Subscriber, case: &Case<'_>) {
    let what = format!("{} with {}", case.source, case.fixture);
    let path = fixture_dir(case.source).join(case.fixture);
    let body = std::fs::read(&path).unwrap();
    let headers = fixture_headers(&path);

    let missing = send(app, case.source, case.auth, None, body.clone(), &headers).await;
    assert_eq!(missing.status(), 401, "{what}: no secret");
    let answer: Value = missing.json().await.unwrap();
    assert_eq!(answer["error"], "unauthorized");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains(&shiplog::sources::secret_setting(case.source)),
        "{what}: {answer}"
    );

    let wrong = send(
        app,
        case.source,
        case.auth,
        Some("not-the-secret"),
        body.clone(),
        &headers,
    )
    .await;
    assert_eq!(wrong.status(), 401, "{what}: wrong secret");
    assert!(!wrong.text().await.unwrap().contains(case.secret));

    let garbage = send(
        app,
        case.source,
        case.auth,
        Some(case.secret),
        b"{ this is not json".to_vec(),
        &headers,
    )
    .await;
    assert_eq!(garbage.status(), 400, "{what}: garbage");
    let answer: Value = garbage.json().await.unwrap();
    assert!(
        answer["message"].as_str().unwrap().contains("not JSON"),
        "{what}: {answer}"
    );

    let before = deployment_count(app).await;
    let accepted = send(
        app,
        case.source,
        case.auth,
        Some(case.secret),
        body.clone(),
        &headers,
    )
    .await;
    assert_eq!(accepted.status(), 200, "{what}: valid delivery");
    let answer: Value = accepted.json().await.unwrap();
    assert_eq!(answer["status"], "accepted", "{what}: {answer}");
    let event = subscriber
        .next_event(Duration::from_secs(5))
        .await
        .expect("a live event");
    assert_eq!(event["deploymentEvents"]["deployment"]["source"], case.source);
    assert_eq!(deployment_count(app).await, before + 1, "{what}: stored");

    let again = send(
        app,
        case.source,
        case.auth,
        Some(case.secret),
        body.clone(),
        &headers,
    )
    .await;
    assert_eq!(again.status(), 200, "{what}: redelivery");
    let answer: Value = again.json().await.unwrap();
    assert_eq!(answer["status"], "duplicate", "{what}: {answer}");
    assert_eq!(deployment_count(app).await, before + 1, "{what}: nothing changed");
    assert!(
        subscriber.next_event(Duration::from_millis(300)).await.is_none(),
        "{what}: no second live event"
    );

    well_formed_but_unexpected(app, case, &body, &headers).await;
    // What the retyped fixture may have become is not the next case's event.
    while subscriber.next_event(Duration::from_millis(300)).await.is_some() {}
}

/// Authenticated JSON a tool's route does not understand (a shape it has never seen, a field of
/// another type) is never refused: GitLab disables a hook after refusals, and a newer version
/// of a tool may send it legitimately. It is stored as a failed delivery (202, a dead letter)
/// or ignored (200); only the generic and DevLake routes, which a person's curl step calls,
/// answer 400 with the message.
async fn well_formed_but_unexpected(
    app: &TestApp,
    case: &Case<'_>,
    body: &[u8],
    headers: &axum::http::HeaderMap,
) {
    let registry = crate::helpers::registry();
    let dead_letters = registry.get(case.source).unwrap().dead_letters();
    let fixture: Value = serde_json::from_slice(body).unwrap();
    let unexpected = [
        json!({}),
        json!([]),
        json!({ "unexpected": true }),
        json!(42),
        json!("text"),
        json!(null),
        retyped(&fixture),
    ];
    for (n, shape) in unexpected.iter().enumerate() {
        let what = format!("{} with {} (unexpected shape {n})", case.source, case.fixture);
        let response = send(
            app,
            case.source,
            case.auth,
            Some(case.secret),
            serde_json::to_vec(shape).unwrap(),
            headers,
        )
        .await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        if !dead_letters {
            assert!(matches!(status, 200 | 400), "{what}: {status} {answer}");
            continue;
        }
        assert!(
            matches!(status, 200 | 202),
            "{what}: a tool's route answered {status}: {answer}"
        );
        if status == 202 {
            assert_eq!(answer["status"], "stored_as_failed", "{what}: {answer}");
            let id = answer["deliveryId"].as_i64().expect("the dead letter's id");
            let failed = app
                .data(
                    "{ deliveries(state: FAILED, first: 500) { id source error } }",
                    json!({}),
                )
                .await;
            let stored = failed["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["id"] == json!(id.to_string()))
                .unwrap_or_else(|| {
                    panic!("{what}: dead letter {id} is in deliveries(state: FAILED): {failed}")
                });
            assert_eq!(stored["source"], case.source);
            assert!(
                !stored["error"].as_str().unwrap_or_default().is_empty(),
                "{what}: {stored}"
            );
        }
    }
}

/// The same JSON with every leaf of another type: strings become numbers, numbers and booleans
/// strings (what a tool's next version might do to a field).
fn retyped(value: &Value) -> Value {
    match value {
        Value::String(_) => json!(12345),
        Value::Number(n) => json!(n.to_string()),
        Value::Bool(b) => json!(b.to_string()),
        Value::Array(items) => Value::Array(items.iter().map(retyped).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), retyped(v))).collect()),
        Value::Null => json!(0),
    }
}

#[tokio::test]
async fn a_source_without_a_configured_secret_refuses_everything() {
    let db = std::sync::Arc::new(crate::helpers::TestDb::new().await);
    let app = crate::helpers::spawn_app_on(db, |settings| {
        settings.secrets.remove("gitlab");
    })
    .await;
    let path = fixture_dir("gitlab").join("deployment_success.json");
    let response = send(
        &app,
        "gitlab",
        &Auth::Header("X-Gitlab-Token".into()),
        Some("anything"),
        std::fs::read(&path).unwrap(),
        &Default::default(),
    )
    .await;
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("SHIPLOG_GITLAB_SECRET is not set"),
        "{answer}"
    );
}

/// Posts a fixture to its source with the right secret; returns the JSON answer (must be 200).
pub async fn send_fixture(app: &TestApp, source: &str, fixture: &str) -> Value {
    let registry = crate::helpers::registry();
    let auth = registry.get(source).unwrap().auth().clone();
    let path = fixture_dir(source).join(fixture);
    let response = send(
        app,
        source,
        &auth,
        Some(&secret_of(source)),
        std::fs::read(&path).unwrap(),
        &fixture_headers(&path),
    )
    .await;
    assert_eq!(response.status(), 200, "{fixture}");
    response.json().await.unwrap()
}
