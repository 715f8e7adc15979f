//! Routes: webhooks in, GraphQL (HTTP, GraphiQL, WebSocket) out, health probes.

pub mod auth;
pub mod error;
pub mod graphql;
pub mod pages;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::domain::MappingRules;
use crate::graphql::ShiplogSchema;
use crate::sources::{Registry, Secret};
use crate::store::Store;
use crate::store::ingest::Writer;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub schema: ShiplogSchema,
    pub writer: Writer,
    pub sources: Registry,
    pub secrets: Arc<BTreeMap<String, Secret>>,
    pub rules: Arc<MappingRules>,
    pub max_body_bytes: usize,
    /// Sources whose deliveries are enriched through an API before they are applied.
    pub enrichers: crate::enrich::Enrichers,
    /// Wakes the enrichment worker.
    pub kick: Arc<tokio::sync::Notify>,
    /// Read access to the GraphQL API.
    pub tokens: auth::ApiTokens,
    /// Browser origins allowed to call the API.
    pub cors_origins: Vec<String>,
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
        .layer(cors);
    Router::new()
        .route("/", get(pages::board))
        .route("/assets/graphiql/{file}", get(pages::graphiql_asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/webhooks/{source}", post(webhooks::receive))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
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

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
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
