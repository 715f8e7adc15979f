//! The one error type at the HTTP edge. 4xx bodies are `{"error": code, "message": text}` and
//! tell the sender what to fix; 5xx bodies are opaque and the cause is logged once here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::sources::SourceError;
use crate::store::StoreError;

/// Everything a webhook or plain HTTP route can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// The request did not arrive in time (408); nothing was stored.
    #[error("{0}")]
    RequestTimeout(String),
    /// The outcome of a delivery is not known (the database stopped answering mid-commit).
    #[error("{0}")]
    Unknown(String),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}

impl From<SourceError> for ApiError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Unauthorized(message) => Self::Unauthorized(message),
            SourceError::InvalidPayload(message) => Self::BadRequest {
                code: "invalid_payload",
                message,
            },
        }
    }
}

impl ApiError {
    /// The short code of the answer (also the `outcome` label in metrics).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::BadRequest { code, .. } => code,
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::TooManyRequests(_) => "rate_limited",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Unknown(_) => "outcome_unknown",
            Self::Store(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Self::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            Self::Unauthorized(message) => (StatusCode::UNAUTHORIZED, "unauthorized", message),
            Self::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message),
            Self::PayloadTooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message),
            Self::RequestTimeout(message) => (StatusCode::REQUEST_TIMEOUT, "request_timeout", message),
            Self::Unknown(message) => {
                tracing::error!(%message, "a delivery's commit did not finish in time");
                (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown", message)
            }
            Self::TooManyRequests(message) => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(serde_json::json!({ "error": "rate_limited", "message": message })),
                )
                    .into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                return response;
            }
            Self::Store(StoreError::TimedOut) => {
                tracing::warn!("a delivery waited too long for the database and was not stored");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "shiplog could not store this in time (the database is slow or busy); nothing was accepted, retry later".to_string(),
                )
            }
            Self::Store(error) => {
                tracing::error!(%error, "request failed in the store");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "shiplog could not store this right now; nothing was accepted, retry later".to_string(),
                )
            }
        };
        (
            status,
            Json(serde_json::json!({ "error": code, "message": message })),
        )
            .into_response()
    }
}
