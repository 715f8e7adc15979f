//! Heroku Platform API: which pipeline and stage an app belongs to. A release webhook names
//! only the app; shiplog's system is the pipeline and its environment the stage.
//!
//! `GET /apps/{app}/pipeline-couplings` (one object, or 404 for an app in no pipeline), then
//! `GET /pipelines/{id}` when the coupling carries no pipeline name (the current schema has
//! only its id). Answers are cached with an expiry, and concurrent releases of one app make
//! one lookup. 429 and an exhausted `RateLimit-Remaining` pause calls for `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::{EnrichError, Enricher, get_json, http_client, retry_after};
use crate::domain::Observation;

/// The public Platform API.
pub const DEFAULT_API_URL: &str = "https://api.heroku.com";
const ACCEPT: &str = "application/vnd.heroku+json; version=3";

/// Where an app sits: its pipeline's name and its stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coupling {
    pub pipeline: String,
    pub stage: String,
}

type Cached = (Option<Coupling>, Instant);

/// A Heroku API client with a coupling cache.
pub struct HerokuApi {
    base: String,
    key: String,
    http: reqwest::Client,
    ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
    /// One lock per app, so concurrent releases of one app make one lookup.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    paused_until: Mutex<Option<Instant>>,
}

impl HerokuApi {
    /// A client for `base` (the Platform API URL) with a bearer API key.
    pub fn new(base: &str, key: &str, ttl: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            http: http_client(),
            ttl,
            cache: Mutex::default(),
            inflight: Mutex::default(),
            paused_until: Mutex::default(),
        }
    }

    /// The app's pipeline and stage (None when it is in no pipeline), cached.
    pub async fn coupling(&self, app: &str) -> Result<Option<Coupling>, EnrichError> {
        if let Some(hit) = self.cached(app) {
            return Ok(hit);
        }
        let lock = {
            let mut inflight = self.inflight.lock().map_err(|_| poisoned())?;
            inflight.entry(app.to_string()).or_default().clone()
        };
        let _turn = lock.lock().await;
        if let Some(hit) = self.cached(app) {
            return Ok(hit);
        }
        let coupling = match self
            .get(&format!("/apps/{}/pipeline-couplings", encode(app)))
            .await?
        {
            None => None,
            Some(body) => {
                let stage = body
                    .get("stage")
                    .and_then(Value::as_str)
                    .unwrap_or("production")
                    .to_string();
                let pipeline = body.get("pipeline").cloned().unwrap_or(Value::Null);
                let name = match pipeline.get("name").and_then(Value::as_str) {
                    Some(name) => name.to_string(),
                    None => {
                        let id = pipeline.get("id").and_then(Value::as_str).ok_or_else(|| {
                            EnrichError::Unavailable("Heroku's pipeline coupling names no pipeline".into())
                        })?;
                        self.get(&format!("/pipelines/{}", encode(id)))
                            .await?
                            .and_then(|p| p.get("name").and_then(Value::as_str).map(str::to_string))
                            .ok_or_else(|| {
                                EnrichError::Unavailable(format!("Heroku pipeline {id} not found"))
                            })?
                    }
                };
                Some(Coupling {
                    pipeline: name,
                    stage,
                })
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(app.to_string(), (coupling.clone(), Instant::now() + self.ttl));
        }
        Ok(coupling)
    }

    fn cached(&self, app: &str) -> Option<Option<Coupling>> {
        let cache = self.cache.lock().ok()?;
        let (coupling, expires) = cache.get(app)?;
        (Instant::now() < *expires).then(|| coupling.clone())
    }

    /// One GET; Ok(None) on 404. Pauses every call while Heroku says the rate limit is spent.
    async fn get(&self, path: &str) -> Result<Option<Value>, EnrichError> {
        if let Some(until) = self.paused_until.lock().ok().and_then(|p| *p) {
            let now = Instant::now();
            if now < until {
                return Err(EnrichError::RateLimited {
                    message: "Heroku's API rate limit is spent; waiting".into(),
                    retry_after: until - now,
                });
            }
        }
        let url = format!("{}{path}", self.base);
        let answer = get_json(
            "Heroku",
            "SHIPLOG_HEROKU_API_KEY (it needs read access to the app and its pipeline)",
            path,
            || {
                self.http
                    .get(&url)
                    .header(reqwest::header::ACCEPT, ACCEPT)
                    .bearer_auth(&self.key)
            },
        )
        .await;
        let pause = match &answer {
            Err(error) => error.retry_after(),
            Ok(answer) => answer
                .headers
                .get("ratelimit-remaining")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|left| *left <= 0)
                .map(|_| retry_after(&answer.headers).unwrap_or(Duration::from_secs(60))),
        };
        if let (Some(wait), Ok(mut paused)) = (pause, self.paused_until.lock()) {
            *paused = Some(Instant::now() + wait);
        }
        answer.map(|a| a.body)
    }
}

fn poisoned() -> EnrichError {
    EnrichError::Unavailable("internal lock poisoned".into())
}

/// Percent-encodes a path segment (app names are `[a-z0-9-]`, ids UUIDs; this is defence).
fn encode(segment: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
    utf8_percent_encode(segment, SEGMENT).to_string()
}

impl Enricher for HerokuApi {
    fn source(&self) -> &'static str {
        "heroku"
    }

    fn enriches_api_records(&self) -> bool {
        true
    }

    /// The Heroku source names a release's system after its app: the app is looked up.
    fn enrich(&self, observations: Vec<Observation>) -> BoxFuture<'_, Result<Vec<Observation>, EnrichError>> {
        Box::pin(async move {
            let mut done = Vec::with_capacity(observations.len());
            for mut observation in observations {
                if let Some(coupling) = self.coupling(&observation.system).await? {
                    observation.system = coupling.pipeline;
                    observation.environment = coupling.stage.clone();
                    observation.environment_tier = Some(coupling.stage);
                }
                done.push(observation);
            }
            Ok(done)
        })
    }
}
