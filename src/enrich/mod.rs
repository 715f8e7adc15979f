//! Enrich: what a webhook does not carry, asked of the tool's API (Heroku pipelines, Octopus
//! deployments). Deliveries that need it are journaled as pending first and answered 2xx;
//! the worker (`worker.rs`) enriches, maps and applies them, retrying with backoff while an
//! API is slow, down or rate-limiting, so no delivery is ever lost to an outage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::domain::Observation;

pub mod heroku;
pub mod octopus;
pub mod worker;

/// Why an enrichment attempt failed. Every kind is retried; the message is kept on the
/// delivery so operators see why it is pending or failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EnrichError {
    /// The API is down, slow or answered 5xx.
    #[error("{0}")]
    Unavailable(String),
    /// The API asked us to slow down.
    #[error("{message}")]
    RateLimited { message: String, retry_after: Duration },
    /// The API refused our credentials or request (a configuration problem).
    #[error("{0}")]
    Rejected(String),
}

impl EnrichError {
    /// How long the API asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Completes observations of one source through its API.
pub trait Enricher: Send + Sync + 'static {
    /// The source whose deliveries this enriches.
    fn source(&self) -> &'static str;
    /// Fills in what the API knows about the observations the source read.
    fn enrich(&self, observations: Vec<Observation>) -> BoxFuture<'_, Result<Vec<Observation>, EnrichError>>;
    /// Whether records read from the API by an import still need it (Heroku's releases do
    /// not name their pipeline; Octopus's import already read what this would ask).
    fn enriches_api_records(&self) -> bool {
        false
    }
}

/// The configured enrichers, by source.
#[derive(Clone, Default)]
pub struct Enrichers(BTreeMap<&'static str, Arc<dyn Enricher>>);

impl Enrichers {
    /// The API clients `api` configures (Heroku's couplings cached for `heroku_cache`).
    /// Without a key, a source's deliveries are applied straight from the webhook.
    pub fn configured(api: &ApiSettings, heroku_cache: Duration) -> Self {
        let mut enrichers = Self::default();
        if let Some(key) = &api.heroku_key {
            let base = api.heroku_url.as_deref().unwrap_or(heroku::DEFAULT_API_URL);
            enrichers = enrichers.with(Arc::new(heroku::HerokuApi::new(base, key, heroku_cache)));
        }
        if let Some(key) = &api.octopus_key {
            enrichers = enrichers.with(Arc::new(octopus::OctopusApi::new(
                api.octopus_url.as_deref(),
                key,
            )));
        }
        enrichers
    }

    /// Adds one.
    pub fn with(mut self, enricher: Arc<dyn Enricher>) -> Self {
        self.0.insert(enricher.source(), enricher);
        self
    }

    /// The enricher of a source, if one is configured.
    pub fn get(&self, source: &str) -> Option<&Arc<dyn Enricher>> {
        self.0.get(source)
    }
}

/// API keys and URLs of the tools shiplog asks for what webhooks do not carry.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    #[serde(deserialize_with = "crate::config::lenient::optional")]
    pub heroku_key: Option<String>,
    pub heroku_url: Option<String>,
    #[serde(deserialize_with = "crate::config::lenient::optional")]
    pub octopus_key: Option<String>,
    pub octopus_url: Option<String>,
    pub retry_max_attempts: Option<i32>,
    /// A GitHub token for the compare API (what each deployment changed); env
    /// SHIPLOG_GITHUB_TOKEN.
    #[serde(deserialize_with = "crate::config::lenient::optional")]
    pub github_token: Option<String>,
    /// GitHub's API [default: https://api.github.com]; env SHIPLOG_GITHUB_API_URL.
    pub github_url: Option<String>,
    /// A GitLab token (`read_api`) for the compare API; env SHIPLOG_GITLAB_TOKEN.
    #[serde(deserialize_with = "crate::config::lenient::optional")]
    pub gitlab_token: Option<String>,
    /// GitLab's URL [default: https://gitlab.com]; env SHIPLOG_GITLAB_API_URL.
    pub gitlab_url: Option<String>,
}

/// Retry timing for pending deliveries.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt; doubles after each further one.
    pub first_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
    /// After this many attempts the delivery is marked failed.
    pub max_attempts: i32,
    /// How long a claimed delivery is leased to its worker.
    pub lease: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            max_attempts: 25,
            lease: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts (at least what the API asked for).
    pub fn delay(&self, attempts: i32, asked: Option<Duration>) -> Duration {
        let exponent = attempts.saturating_sub(1).clamp(0, 20) as u32;
        let backoff = self
            .first_delay
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max_delay);
        asked.unwrap_or(backoff)
    }
}

/// Shared HTTP plumbing for API clients: a client with timeouts and quick in-call retries.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("shiplog/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// A successful (or 404) API answer.
pub(crate) struct Answer {
    /// The JSON body; None for 404.
    pub body: Option<serde_json::Value>,
    pub headers: reqwest::header::HeaderMap,
}

/// One GET of a JSON API with quick in-call retries (3 tries, 200 ms then 400 ms) on network
/// errors and 5xx. 404 is an answer (None); 429 is `RateLimited` with the API's
/// `Retry-After`; 401/403 are `Rejected`, naming the setting that holds the key.
pub(crate) async fn get_json(
    api: &str,
    key_setting: &str,
    what: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Answer, EnrichError> {
    let result = get_json_once(api, key_setting, what, request).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(EnrichError::RateLimited { .. }) => "rate_limited",
        Err(EnrichError::Rejected(_)) => "rejected",
        Err(EnrichError::Unavailable(_)) => "unavailable",
    };
    metrics::counter!("shiplog_enrichment_calls_total", "api" => api.to_lowercase(), "outcome" => outcome)
        .increment(1);
    result
}

async fn get_json_once(
    api: &str,
    key_setting: &str,
    what: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Answer, EnrichError> {
    use reqwest::StatusCode;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt - 1))).await;
        }
        let response = match request().send().await {
            Ok(response) => response,
            Err(error) => {
                last = format!("{api}'s API did not answer ({what}): {}", describe(&error));
                continue;
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        match status {
            status if status.is_success() => {
                let body = response.json::<serde_json::Value>().await.map_err(|e| {
                    EnrichError::Unavailable(format!(
                        "{api}'s API answered unreadable JSON ({what}): {}",
                        describe(&e)
                    ))
                })?;
                return Ok(Answer {
                    body: Some(body),
                    headers,
                });
            }
            StatusCode::NOT_FOUND => return Ok(Answer { body: None, headers }),
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = retry_after(&headers).unwrap_or(Duration::from_secs(60));
                return Err(EnrichError::RateLimited {
                    message: format!(
                        "{api}'s API answered 429 ({what}); retrying after {} s",
                        wait.as_secs_f64()
                    ),
                    retry_after: wait,
                });
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(EnrichError::Rejected(format!(
                    "{api}'s API answered {} ({what}): check {key_setting}",
                    status.as_u16()
                )));
            }
            status if status.is_server_error() => {
                last = format!("{api}'s API answered {} ({what})", status.as_u16());
            }
            status => {
                return Err(EnrichError::Rejected(format!(
                    "{api}'s API answered {} ({what})",
                    status.as_u16()
                )));
            }
        }
    }
    Err(EnrichError::Unavailable(last))
}

/// reqwest errors name the URL, which may carry credentials in a query: leave it out.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    if error.is_connect() {
        return "connection refused or unreachable".into();
    }
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "");
    }
    text.trim().to_string()
}

/// Parses a `Retry-After` header given in seconds.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let policy = RetryPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay(1, None), Duration::from_secs(1));
        assert_eq!(policy.delay(3, None), Duration::from_secs(4));
        assert_eq!(policy.delay(30, None), Duration::from_secs(10));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
