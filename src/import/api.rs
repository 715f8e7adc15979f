//! Reading a tool's REST API page by page: one GET with the tool's auth, transient errors
//! retried with backoff, rate limits waited out as each API signals them, and the next page
//! found where the API says (`Link: <...>; rel="next"`, GitLab's `X-Next-Page`).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// Why reading an API stopped. The message says what to fix (a token, a name) or what the
/// API kept answering.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API refused the request: credentials, permissions, a name that does not exist.
    #[error("{0}")]
    Refused(String),
    /// The API kept failing (network, 5xx) after every retry.
    #[error("{0}")]
    Unavailable(String),
    /// 404: the thing asked for does not exist (or the token cannot see it).
    #[error("{0}")]
    Missing(String),
}

/// A sub-resource that may be gone (a deleted tenant, a task cleaned up): `None` for 404, so
/// one missing piece costs its record the detail, not the whole import.
pub fn optional(result: Result<Answer, ApiError>) -> Result<Option<Answer>, ApiError> {
    match result {
        Ok(answer) => Ok(Some(answer)),
        Err(ApiError::Missing(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// How long to wait before retries and at most for one rate-limit wait.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// Attempts at one request that fails with a network error or a 5xx.
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub first_backoff: Duration,
    /// The longest single rate-limit wait taken (longer answers are cut to this).
    pub max_wait: Duration,
    /// Rate-limit answers taken for one request before giving up.
    pub max_limited: u32,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(3600),
            max_limited: 20,
        }
    }
}

/// One page of an answer: its JSON body and its headers.
pub struct Answer {
    pub body: Value,
    pub headers: HeaderMap,
}

/// A client of one tool's API with its credentials.
#[derive(Clone)]
pub struct Api {
    /// The tool's name, for messages (`GitLab`).
    pub tool: &'static str,
    /// The setting or flag that holds the credentials, for messages.
    pub credential: &'static str,
    client: reqwest::Client,
    auth: HeaderMap,
    patience: Patience,
}

impl Api {
    /// A client sending `auth` headers (a token) with every request.
    pub fn new(
        tool: &'static str,
        credential: &'static str,
        auth: Vec<(&'static str, String)>,
    ) -> Result<Self, ApiError> {
        let mut headers = HeaderMap::new();
        for (name, value) in auth {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ApiError::Refused(format!("{credential} holds characters a header cannot carry"))
            })?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("shiplog/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(Self {
            tool,
            credential,
            client,
            auth: headers,
            patience: Patience::default(),
        })
    }

    /// The same client with other retry timings.
    pub fn with_patience(mut self, patience: Patience) -> Self {
        self.patience = patience;
        self
    }

    /// GETs `url` (JSON), retrying transient failures and waiting out rate limits; `waiting`
    /// is told of each wait. `what` names the request in messages.
    pub async fn get(
        &self,
        url: &str,
        what: &str,
        waiting: &(dyn Fn(&str) + Sync),
    ) -> Result<Answer, ApiError> {
        self.get_with(url, HeaderMap::new(), what, waiting).await
    }

    /// `get` with more request headers (Heroku's `Range`).
    pub async fn get_with(
        &self,
        url: &str,
        extra: HeaderMap,
        what: &str,
        waiting: &(dyn Fn(&str) + Sync),
    ) -> Result<Answer, ApiError> {
        let (mut failures, mut limited) = (0u32, 0u32);
        loop {
            let request = self
                .client
                .get(url)
                .headers(self.auth.clone())
                .headers(extra.clone());
            let failure = match request.send().await {
                Err(error) => describe(&error),
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    if status.is_success() {
                        let bytes = response.bytes().await.map_err(|e| {
                            ApiError::Unavailable(format!("{}'s API {} ({what})", self.tool, describe(&e)))
                        })?;
                        // Octopus (.NET) may start its JSON with a byte order mark.
                        let json = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
                        let body = serde_json::from_slice::<Value>(json).map_err(|e| {
                            ApiError::Unavailable(format!(
                                "{}'s API answered unreadable JSON ({what}): {e}",
                                self.tool
                            ))
                        })?;
                        return Ok(Answer { body, headers });
                    }
                    let text = response.text().await.unwrap_or_default();
                    if let Some(wait) = rate_limited(status, &headers, &text) {
                        limited += 1;
                        if limited > self.patience.max_limited {
                            return Err(ApiError::Unavailable(format!(
                                "{}'s API kept answering {} (rate limited) for {what}",
                                self.tool,
                                status.as_u16()
                            )));
                        }
                        let wait = wait.min(self.patience.max_wait);
                        waiting(&format!(
                            "{}'s API is rate limiting ({}); waiting {} s as it asked",
                            self.tool,
                            status.as_u16(),
                            wait.as_secs_f64().ceil()
                        ));
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if !status.is_server_error() && status != StatusCode::REQUEST_TIMEOUT {
                        return Err(self.refused(status, what, &text));
                    }
                    format!("answered {}", status.as_u16())
                }
            };
            failures += 1;
            if failures >= self.patience.attempts {
                return Err(ApiError::Unavailable(format!(
                    "{}'s API {failure} ({what}), {failures} times; run it again to resume",
                    self.tool
                )));
            }
            let backoff = self
                .patience
                .first_backoff
                .saturating_mul(2u32.saturating_pow(failures - 1));
            waiting(&format!(
                "{}'s API {failure} ({what}); retrying in {:.1} s",
                self.tool,
                backoff.as_secs_f64()
            ));
            tokio::time::sleep(backoff).await;
        }
    }

    /// A 4xx that is not a rate limit: what to fix.
    fn refused(&self, status: StatusCode, what: &str, text: &str) -> ApiError {
        let said: String = text.chars().take(200).collect();
        let hint = match status {
            StatusCode::UNAUTHORIZED => format!("check {}", self.credential),
            StatusCode::FORBIDDEN => format!("the token in {} may not read it", self.credential),
            StatusCode::NOT_FOUND => "check the name (or the token cannot see it)".into(),
            _ => "the API refused the request".into(),
        };
        let message = format!(
            "{}'s API answered {} for {what}: {hint}{}",
            self.tool,
            status.as_u16(),
            if said.trim().is_empty() {
                String::new()
            } else {
                format!(" ({})", said.trim())
            }
        );
        match status {
            StatusCode::NOT_FOUND => ApiError::Missing(message),
            _ => ApiError::Refused(message),
        }
    }
}

/// How long a refusal asks us to wait when it is a rate limit: 429 always; GitHub's 403 when
/// its primary limit is spent (`X-RateLimit-Remaining: 0`) or its message names the secondary
/// limit. The wait is `Retry-After`, else until the reset time (`X-RateLimit-Reset`,
/// `RateLimit-Reset`: epoch seconds), else a minute, as GitHub and GitLab document.
fn rate_limited(status: StatusCode, headers: &HeaderMap, text: &str) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    let spent = number("x-ratelimit-remaining") == Some(0.0);
    let secondary = text.contains("secondary rate limit")
        || text.contains("abuse detection")
        || text.contains("Please retry your request again later")
        || text.contains("Please wait a few minutes");
    let limited =
        status == StatusCode::TOO_MANY_REQUESTS || (status == StatusCode::FORBIDDEN && (spent || secondary));
    if !limited {
        return None;
    }
    let now = crate::domain::now_millis() as f64 / 1000.0;
    let wait = number("retry-after")
        .or_else(|| number("x-ratelimit-reset").map(|reset| reset - now))
        .or_else(|| number("ratelimit-reset").map(|reset| reset - now))
        .filter(|s| s.is_finite())
        .unwrap_or(60.0);
    Some(Duration::from_secs_f64(wait.clamp(1.0, 86_400.0)))
}

/// The next page's URL: `Link: <url>; rel="next"` (GitHub, GitLab, Heroku-style APIs).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|value| {
            value.split(',').find_map(|part| {
                let (url, params) = part.split_once(';')?;
                params
                    .split(';')
                    .any(|p| matches!(p.trim().replace(' ', "").as_str(), "rel=\"next\"" | "rel=next"))
                    .then(|| {
                        url.trim()
                            .trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_string()
                    })
            })
        })
}

/// A whole-number header (`X-Total`), when present.
pub fn count(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A path segment or query value, percent-encoded (`group/app` -> `group%2Fapp`).
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// What went wrong, without the URL (it may carry credentials).
fn describe(error: &reqwest::Error) -> String {
    format!("failed: {}", crate::enrich::describe(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn the_next_page_is_where_the_link_header_says() {
        // GitHub's recorded page 1 of a compare (api/github), and GitLab's documented example.
        let github = headers(&[(
            "link",
            "<https://api.github.com/repositories/3544490/compare/v0.6...v0.7?per_page=3&page=2>; rel=\"next\", <https://api.github.com/repositories/3544490/compare/v0.6...v0.7?per_page=3&page=2>; rel=\"last\"",
        )]);
        assert_eq!(
            next_link(&github).as_deref(),
            Some("https://api.github.com/repositories/3544490/compare/v0.6...v0.7?per_page=3&page=2")
        );
        let last = headers(&[(
            "link",
            "<https://gitlab.example.com/api/v4/x?page=1>; rel=\"first\", <https://gitlab.example.com/api/v4/x?page=1>; rel=\"prev\"",
        )]);
        assert_eq!(next_link(&last), None);
    }

    #[test]
    fn rate_limits_are_waited_out_as_each_api_signals_them() {
        let at = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(
            rate_limited(
                StatusCode::TOO_MANY_REQUESTS,
                &headers(&[("retry-after", "7")]),
                ""
            ),
            at(7)
        );
        assert_eq!(
            rate_limited(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), "Retry later"),
            at(60)
        );
        // GitHub's recorded secondary limit: 403, Retry-After 60, no X-RateLimit headers.
        let secondary = "You have triggered an abuse detection mechanism and have been temporarily blocked from content creation. Please retry your request again later.";
        assert_eq!(
            rate_limited(
                StatusCode::FORBIDDEN,
                &headers(&[("retry-after", "60")]),
                secondary
            ),
            at(60)
        );
        let reset = (crate::domain::now_millis() / 1000 + 30).to_string();
        let spent = rate_limited(
            StatusCode::FORBIDDEN,
            &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)]),
            "",
        );
        assert!(
            spent.is_some_and(|w| w > Duration::from_secs(25) && w <= Duration::from_secs(31)),
            "{spent:?}"
        );
        assert_eq!(
            rate_limited(
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                "Resource not accessible"
            ),
            None
        );
    }
}
