//! `POST /webhooks/{source}`: verify -> parse -> map -> journal + apply (one commit) -> answer.
//! The answer is a 2xx only once the delivery is durably stored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use crate::domain::now_millis;
use crate::sources::{Delivery, Parsed, secret_setting};
use crate::store::ingest::{NewDelivery, Outcome, Work};

/// Receives one webhook delivery, counting outcomes and latency for `/metrics`.
pub async fn receive(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    state: State<AppState>,
    source: Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let source = state.sources.get(&source_name).ok_or_else(|| {
        let known: Vec<&str> = state.sources.names().collect();
        ApiError::NotFound(format!(
            "there is no source `{}`; shiplog receives /webhooks/{{{}}}",
            source_name.chars().take(64).collect::<String>(),
            known.join(",")
        ))
    })?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "the body is larger than {} bytes (SHIPLOG_MAX_BODY_BYTES)",
                state.max_body_bytes
            ))
        } else {
            ApiError::BadRequest {
                code: "unreadable_body",
                message: rejection.body_text(),
            }
        }
    })?;
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
    let outcome = state.writer.submit(new, work).await?;
    if matches!(outcome, Outcome::Pending { .. }) {
        state.kick.notify_one();
    }
    tracing::info!(?outcome, "delivery stored");
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
