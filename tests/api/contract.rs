//! One contract, every source: secrets, garbage, acceptance, redelivery.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::{fixture_dir, fixture_headers};
use crate::helpers::{
    GITLAB_SECRET, HEROKU_SECRET, JENKINS_SECRET, OCTOPUS_SECRET, SECRET, TestApp, spawn_app,
};

/// How each source is told its secret.
#[derive(Clone, Copy)]
pub enum Auth {
    Bearer,
    GitlabToken,
    Basic,
    QueryToken,
    HerokuHmac,
    OctopusHeader,
}

struct Case {
    source: &'static str,
    fixture: &'static str,
    auth: Auth,
    secret: &'static str,
}

const CASES: &[Case] = &[
    Case {
        source: "generic",
        fixture: "succeeded.json",
        auth: Auth::Bearer,
        secret: SECRET,
    },
    Case {
        source: "gitlab",
        fixture: "deployment_success.json",
        auth: Auth::GitlabToken,
        secret: GITLAB_SECRET,
    },
    Case {
        source: "jenkins",
        fixture: "deploy_completed_success.json",
        auth: Auth::Basic,
        secret: JENKINS_SECRET,
    },
    Case {
        source: "jenkins",
        fixture: "deploy_completed_failure.json",
        auth: Auth::QueryToken,
        secret: JENKINS_SECRET,
    },
    Case {
        source: "heroku",
        fixture: "release_update_succeeded.real-redacted.json",
        auth: Auth::HerokuHmac,
        secret: HEROKU_SECRET,
    },
    Case {
        source: "octopus",
        fixture: "deployment_started.json",
        auth: Auth::OctopusHeader,
        secret: OCTOPUS_SECRET,
    },
];

/// Heroku's signature: base64 of HMAC-SHA256 of the raw body.
pub fn heroku_signature(secret: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub async fn send(
    app: &TestApp,
    source: &str,
    auth: Auth,
    secret: Option<&str>,
    body: Vec<u8>,
    headers: &axum::http::HeaderMap,
) -> reqwest::Response {
    let mut url = app.url(&format!("/webhooks/{source}"));
    let mut request = app.client.post(&url).header("content-type", "application/json");
    for (name, value) in headers {
        if name.as_str() != "x-gitlab-token" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    if let Some(secret) = secret {
        request = match auth {
            Auth::Bearer => request.bearer_auth(secret),
            Auth::GitlabToken => request.header("X-Gitlab-Token", secret),
            Auth::Basic => request.basic_auth("jenkins", Some(secret)),
            Auth::QueryToken => {
                url = format!("{url}?token={secret}");
                app.client.post(&url).header("content-type", "application/json")
            }
            Auth::HerokuHmac => request.header("Heroku-Webhook-Hmac-SHA256", heroku_signature(secret, &body)),
            Auth::OctopusHeader => request.header("X-Shiplog-Secret", secret),
        };
    }
    request.body(body).send().await.unwrap()
}

async fn deployment_count(app: &TestApp) -> u64 {
    app.data("{ deployments { totalCount } }", json!({})).await["deployments"]["totalCount"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn every_source_keeps_the_contract() {
    let app = spawn_app().await;
    let mut subscriber = app
        .subscribe(
            "subscription { deploymentEvents { deployment { source externalId } } }",
            json!({}),
        )
        .await;
    for case in CASES {
        let what = format!("{} with {}", case.source, case.fixture);
        let path = fixture_dir(case.source).join(case.fixture);
        let body = std::fs::read(&path).unwrap();
        let headers = fixture_headers(&path);

        let missing = send(&app, case.source, case.auth, None, body.clone(), &headers).await;
        assert_eq!(missing.status(), 401, "{what}: no secret");
        let answer: Value = missing.json().await.unwrap();
        assert_eq!(answer["error"], "unauthorized");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains(&format!("SHIPLOG_{}_SECRET", case.source.to_uppercase())),
            "{what}: {answer}"
        );

        let wrong = send(
            &app,
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
            &app,
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

        let before = deployment_count(&app).await;
        let accepted = send(
            &app,
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
        assert_eq!(deployment_count(&app).await, before + 1, "{what}: stored");

        let again = send(&app, case.source, case.auth, Some(case.secret), body, &headers).await;
        assert_eq!(again.status(), 200, "{what}: redelivery");
        let answer: Value = again.json().await.unwrap();
        assert_eq!(answer["status"], "duplicate", "{what}: {answer}");
        assert_eq!(
            deployment_count(&app).await,
            before + 1,
            "{what}: nothing changed"
        );
        assert!(
            subscriber.next_event(Duration::from_millis(300)).await.is_none(),
            "{what}: no second live event"
        );
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
        Auth::GitlabToken,
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
    let case = CASES.iter().find(|c| c.source == source).unwrap();
    let path = fixture_dir(source).join(fixture);
    let response = send(
        app,
        source,
        case.auth,
        Some(case.secret),
        std::fs::read(&path).unwrap(),
        &fixture_headers(&path),
    )
    .await;
    assert_eq!(response.status(), 200, "{fixture}");
    response.json().await.unwrap()
}
