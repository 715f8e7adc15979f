//! Read access. With `SHIPLOG_API_TOKENS` set, nothing in the GraphQL API (HTTP or WebSocket)
//! is readable without one of the tokens: `Authorization: Bearer <token>`, or Basic with the
//! token as password (older Grafana plugins), or, for WebSocket clients, the connection-init
//! payload (`{"Authorization": "Bearer <token>"}` or `{"token": "<token>"}`). Webhooks have
//! their own per-source secrets; the probes and the static pages stay open (they hold no data).

use axum::http::HeaderMap;

use crate::sources::Secret;
use crate::sources::auth::{basic_password, bearer_token};

/// The configured API tokens; empty means the API is open.
#[derive(Clone, Debug, Default)]
pub struct ApiTokens(Vec<Secret>);

impl ApiTokens {
    /// Tokens from configuration (blank ones ignored).
    pub fn new(tokens: &[String]) -> Self {
        Self(
            tokens
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(Secret::new)
                .collect(),
        )
    }

    /// Whether any token is required.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether a presented token is one of ours (constant time per token).
    pub fn accepts(&self, presented: &[u8]) -> bool {
        !self.required()
            || self
                .0
                .iter()
                .fold(false, |ok, token| token.matches(presented) | ok)
    }

    /// Checks a request's Authorization header.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if !self.required() {
            return true;
        }
        match presented(headers) {
            Some(token) => self.accepts(&token),
            None => false,
        }
    }

    /// Which of these tokens the request presents, as a fingerprint (the first 12 hex digits
    /// of its SHA-256: enough to tell tokens apart in the journal, useless to an attacker);
    /// none when no token is configured or none matches. What the write API checks.
    pub fn holder(&self, headers: &HeaderMap) -> Option<String> {
        use sha2::{Digest, Sha256};
        if !self.required() {
            return None;
        }
        let token = presented(headers)?;
        self.accepts(&token)
            .then(|| format!("token:{}", &hex::encode(Sha256::digest(&token))[..12]))
    }

    /// Checks a WebSocket connection-init payload.
    pub fn allows_init(&self, payload: &serde_json::Value) -> bool {
        if !self.required() {
            return true;
        }
        let field = |name: &str| {
            payload
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.as_str())
        };
        if let Some(token) = field("token") {
            return self.accepts(token.as_bytes());
        }
        match field("authorization") {
            Some(value) => {
                let mut headers = HeaderMap::new();
                match value.parse() {
                    Ok(value) => {
                        headers.insert(axum::http::header::AUTHORIZATION, value);
                        self.allows(&headers)
                    }
                    Err(_) => false,
                }
            }
            None => false,
        }
    }
}

/// The token in `Authorization: Bearer` or as the password of `Authorization: Basic`.
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    bearer_token(headers)
        .map(<[u8]>::to_vec)
        .or_else(|| basic_password(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_accepted_as_bearer_basic_or_init_payload() {
        let tokens = ApiTokens::new(&["t1".into(), "t2".into()]);
        let mut headers = HeaderMap::new();
        assert!(!tokens.allows(&headers));
        headers.insert("authorization", "Bearer t2".parse().unwrap());
        assert!(tokens.allows(&headers));
        headers.insert("authorization", "Basic Z3JhZmFuYTp0MQ==".parse().unwrap()); // grafana:t1
        assert!(tokens.allows(&headers));
        headers.insert("authorization", "Bearer nope".parse().unwrap());
        assert!(!tokens.allows(&headers));
        assert!(tokens.allows_init(&serde_json::json!({ "Authorization": "Bearer t1" })));
        assert!(tokens.allows_init(&serde_json::json!({ "token": "t2" })));
        assert!(!tokens.allows_init(&serde_json::json!({})));
        assert!(ApiTokens::new(&[]).allows(&HeaderMap::new()));
    }

    #[test]
    fn a_write_token_is_known_by_its_fingerprint_and_no_token_configured_grants_nothing() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer w1".parse().unwrap());
        let writers = ApiTokens::new(&["w1".into()]);
        let holder = writers.holder(&headers).unwrap();
        assert!(holder.starts_with("token:") && !holder.contains("w1"), "{holder}");
        assert_eq!(ApiTokens::new(&[]).holder(&headers), None);
        headers.insert("authorization", "Bearer w2".parse().unwrap());
        assert_eq!(writers.holder(&headers), None);
    }
}
