//! `POST /webhooks/{source}`: read the request, hand it to the ingest pipeline, answer. The
//! answer is a 2xx only once the delivery is durably stored.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::domain::now_millis;
use crate::ingest::{IngestError, Received};
use crate::store::Outcome;

/// How long a sender may take to send its body; a delivery whose body is not complete by
/// then is answered 408 and not stored.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a received delivery may wait for the database before it is answered 503 and not
/// stored. Once the ingest writer has taken it, the answer waits for the commit: a sender is
/// never told "not stored" about a delivery that is (or the other way round).
pub const STORE_DEADLINE: Duration = Duration::from_secs(30);
/// The answer's last bound, for a database that stops answering mid-commit: then the outcome
/// is unknown and the answer says so (a re-sent delivery is deduplicated).
pub const COMMIT_BOUND: Duration = Duration::from_secs(120);

/// The routes besides `/webhooks/{source}` that sources name (DevLake's API path), each
/// bound to its source.
pub fn other_routes(state: &AppState) -> axum::Router<AppState> {
    let mut router = axum::Router::new();
    for source in state.ingest.sources().iter() {
        for path in source.routes() {
            let name = source.name().to_string();
            router = router.route(
                path,
                axum::routing::post(
                    move |peer: axum::extract::ConnectInfo<std::net::SocketAddr>,
                          state: State<AppState>,
                          query: RawQuery,
                          headers: HeaderMap,
                          body: Body| async move {
                        receive(peer, state, Path(name), query, headers, body).await
                    },
                ),
            );
        }
    }
    router
}

/// Receives one webhook delivery, counting outcomes and latency for `/metrics`.
#[tracing::instrument(skip_all, fields(source = %source))]
pub async fn receive(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    State(state): State<AppState>,
    Path(source): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let started = Instant::now();
    let result = if state.limiter.allow(peer.ip()) {
        handle(&state, &source, query.as_deref(), &headers, body, started).await
    } else {
        Err(ApiError::TooManyRequests(format!(
            "more than {} deliveries per second from {}: retry after a second (SHIPLOG_WEBHOOK_RATE_LIMIT)",
            state.limiter.rate(),
            peer.ip()
        )))
    };
    let label = match state.ingest.sources().get(&source) {
        Some(_) => source,
        None => "unknown".to_string(),
    };
    let outcome = match &result {
        Ok((outcome, _)) => outcome.label(),
        Err(error) => error.code(),
    };
    metrics::counter!("shiplog_deliveries_total", "source" => label.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("shiplog_delivery_seconds", "source" => label)
        .record(started.elapsed().as_secs_f64());
    // 202 for a dead letter: stored, not understood (yet).
    result.map(|(outcome, answer)| match outcome {
        Outcome::Failed { .. } => (StatusCode::ACCEPTED, Json(answer)),
        _ => (StatusCode::OK, Json(answer)),
    })
}

async fn handle(
    state: &AppState,
    source: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<(Outcome, Value), ApiError> {
    let body = read_body(body, state.max_body_bytes).await?;
    let received = Received {
        source,
        headers,
        query,
        body: &body,
        received_at: now_millis(),
        deadline: started + STORE_DEADLINE,
    };
    let outcome = match tokio::time::timeout(COMMIT_BOUND, state.ingest.receive(received)).await {
        Ok(outcome) => outcome?,
        Err(_) => {
            return Err(ApiError::Unknown(format!(
                "the database did not finish storing this within {} s; it may or may not be stored: re-send it (a re-sent delivery is recognised and not stored twice)",
                COMMIT_BOUND.as_secs()
            )));
        }
    };
    // The journal is the audit trail; a line per delivery only when asked for (RUST_LOG=debug).
    tracing::debug!(?outcome, "delivery stored");
    let answer = answer(&outcome);
    Ok((outcome, answer))
}

/// The JSON a sender gets for an outcome.
fn answer(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Duplicate { delivery_id } => {
            json!({ "status": "duplicate", "deliveryId": delivery_id, "message": "this delivery was received before; nothing changed" })
        }
        Outcome::Ignored { delivery_id } => json!({ "status": "ignored", "deliveryId": delivery_id }),
        Outcome::Pending { delivery_id } => {
            json!({ "status": "accepted", "deliveryId": delivery_id, "pending": true })
        }
        Outcome::Failed { delivery_id, error } => json!({
            "status": "stored_as_failed",
            "deliveryId": delivery_id,
            "message": format!("stored, but not understood: {error}. It is kept as a failed delivery; `shiplog reprocess --id {delivery_id}` reads it again after an upgrade or a rule change"),
        }),
        Outcome::Applied {
            delivery_id,
            deployment_ids,
        } => {
            json!({ "status": "accepted", "deliveryId": delivery_id, "deploymentIds": deployment_ids })
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::UnknownSource(message) => Self::NotFound(message),
            IngestError::Unauthorized(message) => Self::Unauthorized(message),
            IngestError::Invalid { code, message } => Self::BadRequest { code, message },
            IngestError::Store(error) => Self::Store(error),
            // Only imports ask an API before answering.
            IngestError::Api(message) => Self::Unknown(message),
        }
    }
}

/// Reads the whole body within `BODY_TIMEOUT` and `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the body did not arrive within {} s; nothing was stored",
            BODY_TIMEOUT.as_secs()
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge(
            format!("the body is larger than {limit} bytes (SHIPLOG_MAX_BODY_BYTES)"),
        )),
        Ok(Err(error)) => Err(ApiError::BadRequest {
            code: "unreadable_body",
            message: format!("the body could not be read: {error}"),
        }),
    }
}
