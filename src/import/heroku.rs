//! Heroku's Platform API: `GET /apps/{app}/releases`, ranged by `version` (oldest first). A
//! list longer than the range answers 206 with `Next-Range`, sent back as the next request's
//! `Range` (the cursor stored between pages). Systems and environments come from the app's
//! pipeline coupling, as for the webhooks (`enrich/heroku.rs`, asked at import time).

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::api::{Api, ApiError, encode};
use super::{Page, Waiting};
use crate::ingest::Record;

/// The public Platform API.
pub const DEFAULT_API_URL: &str = "https://api.heroku.com";

/// The first range: every release, oldest first, 1,000 (the most Heroku gives) at a time.
pub const FIRST_RANGE: &str = "version ..; max=1000";

/// Reconciliation's first range: the newest releases (a release's status changes after it
/// is created, so reconciling reads from the newest until a range holds nothing new).
pub const NEWEST_RANGE: &str = "version ..; max=100, order=desc";

/// A client sending the key and the API version as Heroku documents.
pub fn api(key: &str) -> Result<Api, ApiError> {
    Api::new(
        "Heroku",
        "--api-key (or SHIPLOG_HEROKU_API_KEY)",
        vec![
            ("authorization", format!("Bearer {key}")),
            ("accept", "application/vnd.heroku+json; version=3".into()),
        ],
    )
}

/// The apps coupled to a pipeline (by name or id), by name.
pub async fn apps_of(
    api: &Api,
    api_url: &str,
    pipeline: &str,
    waiting: Waiting<'_>,
) -> Result<Vec<String>, ApiError> {
    let api_url = api_url.trim_end_matches('/');
    let found = api
        .get(
            &format!("{api_url}/pipelines/{}", encode(pipeline)),
            &format!("the pipeline {pipeline}"),
            waiting,
        )
        .await?;
    let id = found
        .body
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or(pipeline)
        .to_string();
    let couplings = api
        .get(
            &format!("{api_url}/pipelines/{}/pipeline-couplings", encode(&id)),
            &format!("the apps of pipeline {pipeline}"),
            waiting,
        )
        .await?;
    let mut apps = Vec::new();
    for coupling in couplings.body.as_array().into_iter().flatten() {
        let Some(app) = coupling.pointer("/app/id").and_then(Value::as_str) else {
            continue;
        };
        let answer = api
            .get(
                &format!("{api_url}/apps/{}", encode(app)),
                &format!("the app {app}"),
                waiting,
            )
            .await?;
        apps.extend(
            answer
                .body
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string),
        );
    }
    Ok(apps)
}

/// One range of an app's releases as records for the Heroku source; releases created before
/// `since` (epoch ms) are left out.
pub async fn page(
    api: &Api,
    api_url: &str,
    app: &str,
    range: &str,
    since: Option<i64>,
    waiting: Waiting<'_>,
) -> Result<Page, ApiError> {
    let url = format!("{}/apps/{}/releases", api_url.trim_end_matches('/'), encode(app));
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(range)
        .map_err(|_| ApiError::Refused(format!("a range Heroku cannot take: {range}")))?;
    headers.insert("range", value);
    let answer = api
        .get_with(&url, headers, &format!("the releases of {app}"), waiting)
        .await?;
    let items = answer.body.as_array().cloned().ok_or_else(|| {
        ApiError::Refused(format!(
            "Heroku's API answered something else than a list of releases for {app}"
        ))
    })?;
    let received_at = crate::domain::now_millis();
    let before_since = |release: &Value| {
        let created = release
            .get("created_at")
            .and_then(|c| crate::domain::parse_instant(c).ok());
        matches!((since, created), (Some(since), Some(created)) if created < since)
    };
    // Newest first (reconciling), the first release older than `since` ends the listing.
    let stop = range.contains("order=desc") && items.iter().any(before_since);
    let records = items
        .into_iter()
        .filter(|release| !before_since(release))
        .map(|release| Record {
            source: "heroku",
            key: format!(
                "api:{}:{}",
                release.get("id").and_then(Value::as_str).unwrap_or_default(),
                release.get("status").and_then(Value::as_str).unwrap_or_default()
            ),
            body: json!({ "release": release }).to_string(),
            headers: HeaderMap::new(),
            received_at,
        })
        .collect();
    Ok(Page {
        records,
        next: answer
            .headers
            .get("next-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .filter(|_| !stop),
        total: None,
        high_water: None,
        stop,
    })
}
