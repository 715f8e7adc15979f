//! `POST /webhooks/{source}`: verify -> parse -> map -> journal + apply (one commit) -> answer.
//! The answer is a 2xx only once the delivery is durably stored.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use crate::domain::now_millis;
use crate::sources::{Delivery, Parsed, secret_setting};
use crate::store::ingest::{NewDelivery, Outcome, Work};

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

/// Receives one webhook delivery, counting outcomes and latency for `/metrics`.
pub async fn receive(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    state: State<AppState>,
    source: Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let name = if state.sources.get(&source.0).is_some() {
        source.0.clone()
    } else {
        "unknown".to_string()
    };
    let result = if state.limiter.allow(peer.ip()) {
        handle(state, source, query, headers, body).await
    } else {
        Err(ApiError::TooManyRequests(format!(
            "more than {} deliveries per second from {}: retry after a second (SHIPLOG_WEBHOOK_RATE_LIMIT)",
            state.limiter.rate(),
            peer.ip()
        )))
    };
    let outcome = match &result {
        Ok(Json(answer)) => match (
            answer.get("status").and_then(Value::as_str),
            answer.get("pending"),
        ) {
            (Some("accepted"), Some(_)) => "pending",
            (Some(status), _) => status,
            (None, _) => "accepted",
        }
        .to_string(),
        Err(error) => error.code().to_string(),
    };
    metrics::counter!("shiplog_deliveries_total", "source" => name.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("shiplog_delivery_seconds", "source" => name).record(started.elapsed().as_secs_f64());
    result
}

#[tracing::instrument(skip_all, fields(source = %source_name))]
async fn handle(
    State(state): State<AppState>,
    Path(source_name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let source = state.sources.get(&source_name).ok_or_else(|| {
        let known: Vec<&str> = state.sources.names().collect();
        ApiError::NotFound(format!(
            "there is no source `{}`; shiplog receives /webhooks/{{{}}}",
            source_name.chars().take(64).collect::<String>(),
            known.join(",")
        ))
    })?;
    let body = read_body(body, state.max_body_bytes).await?;
    let secret = state.secrets.get(source.name()).ok_or_else(|| {
        ApiError::Unauthorized(format!(
            "{} is not set on this shiplog, so it accepts no {} deliveries",
            secret_setting(source.name()),
            source.name()
        ))
    })?;
    let delivery = Delivery {
        headers: &headers,
        query: query.as_deref(),
        body: &body,
        received_at: now_millis(),
    };
    source.verify(&delivery, secret)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest {
        code: "invalid_encoding",
        message: "the body is not UTF-8 text".into(),
    })?;
    let work = match source.parse(&delivery)? {
        // Journal first, answer, then ask the tool's API: an outage never loses a delivery.
        Parsed::Deployments(_) if state.enrichers.get(source.name()).is_some() => Work::Pending,
        Parsed::Deployments(observations) => {
            Work::Apply(observations.into_iter().map(|o| state.rules.map(o)).collect())
        }
        Parsed::Ignored(reason) => Work::Ignore(reason),
    };
    let journaled: Map<String, Value> = source
        .journaled_headers()
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some((name.to_string(), Value::String(value.to_string())))
        })
        .collect();
    let new = NewDelivery {
        source: source.name().to_string(),
        delivery_key: source.delivery_key(&delivery),
        received_at: delivery.received_at,
        // Tools that echo our secret back in the body get it removed before it is stored.
        body: match source.redact(&body) {
            Some(redacted) => String::from_utf8_lossy(&redacted).into_owned(),
            None => text.to_string(),
        },
        headers: Value::Object(journaled).to_string(),
    };
    let stored = state.writer.submit_by(new, work, started + STORE_DEADLINE);
    let outcome = match tokio::time::timeout(COMMIT_BOUND, stored).await {
        Ok(outcome) => outcome?,
        Err(_) => {
            return Err(ApiError::Unknown(format!(
                "the database did not finish storing this within {} s; it may or may not be stored: re-send it (a re-sent delivery is recognised and not stored twice)",
                COMMIT_BOUND.as_secs()
            )));
        }
    };
    if matches!(outcome, Outcome::Pending { .. }) {
        state.kick.notify_one();
    }
    // The journal is the audit trail; a line per delivery only when asked for (RUST_LOG=debug).
    tracing::debug!(?outcome, "delivery stored");
    Ok(Json(match outcome {
        Outcome::Duplicate { delivery_id } => {
            json!({ "status": "duplicate", "deliveryId": delivery_id, "message": "this delivery was received before; nothing changed" })
        }
        Outcome::Ignored { delivery_id } => json!({ "status": "ignored", "deliveryId": delivery_id }),
        Outcome::Pending { delivery_id } => {
            json!({ "status": "accepted", "deliveryId": delivery_id, "pending": true })
        }
        Outcome::Applied {
            delivery_id,
            deployment_ids,
        } => {
            json!({ "status": "accepted", "deliveryId": delivery_id, "deploymentIds": deployment_ids })
        }
    }))
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
