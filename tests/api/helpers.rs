//! Spawns the real server on port 0 with a fresh database: a SQLite file in a temporary
//! folder by default, or a new uniquely named PostgreSQL database on the server named by
//! `SHIPLOG_TEST_DATABASE_URL` (dropped again when the test ends).

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shiplog::config::Settings;
use shiplog::startup::Application;
use shiplog::store::Store;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const SECRET: &str = "test-generic-secret";
pub const GITLAB_SECRET: &str = "test-gitlab-token";
pub const JENKINS_SECRET: &str = "test-jenkins-secret";
pub const HEROKU_SECRET: &str = "test-heroku-secret";
pub const OCTOPUS_SECRET: &str = "test-octopus-secret";

static TRACING: Once = Once::new();

/// A fresh database for one test.
pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub async fn new() -> TestDb {
        match std::env::var("SHIPLOG_TEST_DATABASE_URL") {
            Ok(admin_url) if admin_url.starts_with("postgres") => {
                let name = format!("shiplog_test_{}", uuid::Uuid::new_v4().simple());
                let admin = sea_orm::Database::connect(&admin_url)
                    .await
                    .expect("connect to the test PostgreSQL");
                sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create a test database");
                let _ = admin.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .unwrap_or(&admin_url);
                TestDb::Postgres {
                    url: format!("{base}/{name}"),
                    admin_url,
                    name,
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("shiplog.db").display());
                TestDb::Sqlite { _dir: dir, url }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    #[allow(dead_code)]
    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name, .. } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime: drop the database from a thread of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    if let Ok(admin) = sea_orm::Database::connect(&admin_url).await {
                        let _ = sea_orm::ConnectionTrait::execute_unprepared(
                            &admin,
                            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        )
                        .await;
                        let _ = admin.close().await;
                    }
                });
                Ok::<_, std::io::Error>(())
            })
            .join();
        }
    }
}

/// The secret every test server has for a source (generic's is `SECRET`).
pub fn secret_of(source: &str) -> String {
    match source {
        "generic" => SECRET.into(),
        "gitlab" => GITLAB_SECRET.into(),
        "jenkins" => JENKINS_SECRET.into(),
        "heroku" => HEROKU_SECRET.into(),
        "octopus" => OCTOPUS_SECRET.into(),
        other => format!("test-{other}-secret"),
    }
}

/// Every shipped recipe declared under its own name (`[sources.buildkite] recipe = "buildkite"`),
/// as every test server serves them: the contract, fixture and fuzz suites cover them too.
pub fn recipes_declared() -> std::collections::BTreeMap<String, toml::Value> {
    shiplog::sources::declared::recipes::RECIPES
        .iter()
        .map(|(name, _, _)| {
            let table: toml::Value = toml::from_str(&format!("recipe = \"{name}\"")).unwrap();
            (name.to_string(), table)
        })
        .collect()
}

/// The sources every test server has: the built-in ones and the recipes.
pub fn registry() -> shiplog::sources::Registry {
    shiplog::sources::Registry::with_declared(&Default::default(), &recipes_declared())
        .expect("the recipes compile")
}

/// Settings for a test server on a free port. Nothing comes from the developer's environment
/// or a settings file: every source of the registry gets its test secret.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::from_toml("").expect("the defaults are valid settings");
    settings.listen = "127.0.0.1:0".into();
    settings.database_url = database_url.into();
    settings.database_max_connections = Some(4);
    settings.sources = recipes_declared();
    settings.secrets = registry()
        .names()
        .map(|name| (name.to_string(), secret_of(name)))
        .collect();
    // Tests flood from one address; the rate-limit test turns the limit on.
    settings.webhook_rate_limit = 0.0;
    // No API enrichment unless a test asks for it, whatever the environment says.
    settings.api = shiplog::config::ApiSettings::default();
    // Retries fast enough for tests.
    settings.retry = shiplog::enrich::RetryPolicy {
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(1),
        max_attempts: 10,
        lease: Duration::from_secs(30),
    };
    settings
}

/// A running server.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub store: Store,
    pub hub: shiplog::events::Hub,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    pub db: std::sync::Arc<TestDb>,
}

pub async fn spawn_app() -> TestApp {
    let db = std::sync::Arc::new(TestDb::new().await);
    spawn_app_on(db, |_| {}).await
}

/// Spawns a server on an existing test database, with settings adjusted by `tweak`.
pub async fn spawn_app_on(db: std::sync::Arc<TestDb>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            shiplog::telemetry::init(shiplog::config::LogFormat::Text);
        }
    });
    let mut settings = test_settings(db.url());
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("build the app");
    let address = app.address();
    let store = app.store().clone();
    let hub = app.hub().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        store,
        hub,
        stop: Some(stop),
        task: Some(task),
        db,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Posts a generic delivery with the right secret.
    pub async fn post_generic(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/webhooks/generic"))
            .bearer_auth(SECRET)
            .json(body)
            .send()
            .await
            .expect("post")
    }

    /// Posts a generic delivery and insists it was accepted.
    pub async fn deliver(&self, body: Value) -> Value {
        let response = self.post_generic(&body).await;
        let status = response.status();
        let answer: Value = response.json().await.expect("json answer");
        assert_eq!(status, 200, "delivery refused: {answer}");
        answer
    }

    /// Runs a query and returns the whole response.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("graphql post")
            .json()
            .await
            .expect("graphql json")
    }

    /// Runs a query and returns the response body as text (key order is part of the answer).
    pub async fn body(&self, query: &str) -> String {
        self.client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("graphql post")
            .text()
            .await
            .expect("graphql body")
    }

    /// Runs a query and returns `data`, failing on any error.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let response = self.graphql(query, variables).await;
        assert!(response.get("errors").is_none(), "GraphQL errors: {response}");
        response["data"].clone()
    }

    /// Waits until no background task (the PostgreSQL fan-out listener's catch-up) is running
    /// statements, so a statement count measures one request alone.
    pub async fn settle(&self) {
        let mut last = self.store.statements();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.store.statements();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// Polls a query until `done` holds for its data (at most 10 s); returns the last data.
    pub async fn eventually(&self, query: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.eventually_within(query, done, Duration::from_secs(10)).await
    }

    /// `eventually` with another deadline (work another process hands the server, which its
    /// worker picks up on its next poll, on a loaded machine).
    pub async fn eventually_within(
        &self,
        query: &str,
        done: impl Fn(&Value) -> bool,
        wait: Duration,
    ) -> Value {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let data = self.data(query, json!({})).await;
            if done(&data) || std::time::Instant::now() > deadline {
                return data;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Opens a subscription over `graphql-transport-ws`, returning once the server has
    /// registered it (so an event posted next cannot be missed).
    pub async fn subscribe(&self, query: &str, variables: Value) -> Subscriber {
        let before = self.hub.subscribers();
        let subscriber = Subscriber::connect(self.address, "graphql-transport-ws", query, variables).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.hub.subscribers() <= before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        subscriber
    }
}

/// A WebSocket GraphQL client.
pub struct Subscriber {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    protocol: &'static str,
}

impl Subscriber {
    pub async fn connect(
        address: SocketAddr,
        protocol: &'static str,
        query: &str,
        variables: Value,
    ) -> Subscriber {
        Self::connect_with(address, protocol, query, variables, json!({})).await
    }

    /// Connects with a connection-init payload (where API tokens travel).
    pub async fn connect_with(
        address: SocketAddr,
        protocol: &'static str,
        query: &str,
        variables: Value,
        init: Value,
    ) -> Subscriber {
        let mut request = format!("ws://{address}/graphql/ws")
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().expect("header"));
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("ws connect");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
        let mut subscriber = Subscriber { socket, protocol };
        subscriber
            .send(json!({ "type": "connection_init", "payload": init }))
            .await;
        let ack = subscriber.next_message().await.expect("ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        let start = if protocol == "graphql-transport-ws" {
            "subscribe"
        } else {
            "start"
        };
        subscriber
            .send(json!({ "type": start, "id": "1", "payload": { "query": query, "variables": variables } }))
            .await;
        // Give the server a moment to register the subscription before the test posts.
        tokio::time::sleep(Duration::from_millis(100)).await;
        subscriber
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("ws send");
    }

    /// The next protocol message (None when the socket closed).
    pub async fn next_message(&mut self) -> Option<Value> {
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next event's payload data, waiting at most `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Value> {
        let data_type = if self.protocol == "graphql-transport-ws" {
            "next"
        } else {
            "data"
        };
        tokio::time::timeout(wait, async {
            loop {
                let message = self.next_message().await?;
                if message["type"] == data_type {
                    return Some(message["payload"]["data"].clone());
                }
                if message["type"] == "error" {
                    panic!("subscription error: {message}");
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed(&mut self, wait: Duration) -> Option<u16> {
        tokio::time::timeout(wait, async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

/// A generic delivery for deployment `id`.
pub fn generic(id: &str, status: &str) -> Value {
    json!({ "id": id, "system": "billing", "environment": "production", "status": status })
}
