//! Routes: webhooks in, GraphQL (HTTP, GraphiQL, WebSocket) out, health probes.

pub mod auth;
pub mod error;
pub mod graphql;
pub mod limits;
pub mod over_http;
pub mod pages;
pub mod serve;
pub mod socket;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::graphql::ShiplogSchema;
use crate::ingest::Ingest;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub schema: ShiplogSchema,
    /// The pipeline webhooks go through.
    pub ingest: Ingest,
    pub max_body_bytes: usize,
    /// Read access to the GraphQL API.
    pub tokens: auth::ApiTokens,
    /// `SHIPLOG_WRITE_TOKENS`: what a mutation needs (none configured: no mutation runs).
    pub write_tokens: auth::ApiTokens,
    /// Browser origins allowed to call the API.
    pub cors_origins: Vec<String>,
    /// Per-client rate limit on webhooks.
    pub limiter: Arc<limits::RateLimiter>,
    /// Live events, for the subscriber gauge.
    pub hub: crate::events::Hub,
    /// Turns true when the server starts shutting down; WebSocket connections close on it.
    pub shutdown: watch::Receiver<bool>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let cors = cors(&state.cors_origins);
    let api = Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphql/ws", get(graphql::websocket))
        // The GraphQL extractor ignores axum's DefaultBodyLimit: limit the body here.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(cors);
    Router::new()
        .route("/", get(pages::board))
        .route("/assets/graphiql/{file}", get(pages::graphiql_asset))
        .route("/favicon.svg", get(pages::favicon))
        .route("/favicon.ico", get(pages::favicon))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // The handler bounds its own body read and its wait for the database, so that a
        // timeout answer and the journal always agree (see `webhooks::STORE_DEADLINE`).
        .route("/webhooks/{source}", post(webhooks::receive))
        .merge(webhooks::other_routes(&state))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(
            tower::ServiceBuilder::new()
                .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(RequestIds::default()))
                .layer(
                    tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                        let id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                    }),
                )
                .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// CORS for the API: none by default (same origin only), the listed origins, or any with `*`.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<axum::http::HeaderValue> =
            origins.iter().filter_map(|o| o.trim().parse().ok()).collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

/// Request ids: a random per-process prefix and a counter (kept when the client sends one).
#[derive(Clone, Default)]
struct RequestIds(Arc<std::sync::atomic::AtomicU64>);

impl tower_http::request_id::MakeRequestId for RequestIds {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let prefix = PREFIX.get_or_init(|| random_token(4));
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        axum::http::HeaderValue::from_str(&format!("{prefix}-{n}"))
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// A random hex token of `bytes` bytes (request ids, replica names, generated secrets).
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

impl AppState {
    /// Whether a request may read: a read token (or none configured), or a write token.
    pub fn reads(&self, headers: &axum::http::HeaderMap) -> bool {
        self.tokens.allows(headers) || self.write_tokens.holder(headers).is_some()
    }
}

/// `GET /metrics`: Prometheus text format. Needs an API token when tokens are configured.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    if !state.reads(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            "send one of SHIPLOG_API_TOKENS as `Authorization: Bearer <token>`\n",
        )
            .into_response();
    }
    if let Ok((pending, failed)) = state.store.backlog().await {
        metrics::gauge!("shiplog_deliveries_pending").set(pending as f64);
        metrics::gauge!("shiplog_deliveries_failed").set(failed as f64);
    }
    metrics::gauge!("shiplog_live_subscribers").set(state.hub.subscribers() as f64);
    metrics::gauge!("shiplog_sql_statements").set(state.store.statements() as f64);
    match crate::telemetry::metrics() {
        Some(handle) => (
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics are not available\n").into_response(),
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(reason) = state.ingest.writer().failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "unavailable",
                "message": format!("the database cannot store deliveries ({reason}); webhooks are answered 503 until it can, and shiplog retries by itself"),
            })),
        );
    }
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ready" })),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(
                    serde_json::json!({ "status": "unavailable", "message": "the database does not answer" }),
                ),
            )
        }
    }
}

async fn not_found(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::NotFound(format!(
        "nothing at {}; webhooks go to POST /webhooks/{{source}}, queries to /graphql",
        uri.path().chars().take(128).collect::<String>()
    ))
}
