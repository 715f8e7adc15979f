//! How a source's secret travels, as data: every source declares its [`Auth`], and one
//! implementation here verifies it in constant time and words the 401 (naming the setting that
//! holds the secret). The contract tests sign deliveries from the same declaration, so a new
//! source's auth is tested without new test code.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Delivery, SourceError};

/// Where the secret is in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// A header that holds the secret itself (`X-Gitlab-Token`).
    Header(String),
    /// The password of `Authorization: Basic` (any user name).
    Basic,
    /// A query-string parameter (`?token=<secret>`), percent-decoded.
    Query(String),
    /// An HMAC-SHA256 of the raw body, keyed with the secret, in a header.
    Hmac(Signature),
    /// Any one of these (the first the request carries is checked).
    AnyOf(Vec<Auth>),
}

/// An HMAC-SHA256 signature header: `<prefix><digest>`, the digest hex or base64. A header may
/// list several comma-separated signatures (CircleCI's `v1=...,v2=...`); one must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub header: String,
    pub encoding: Encoding,
    /// What precedes the digest (`sha256=`, `v1=`), or nothing.
    pub prefix: String,
}

/// How a digest is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

/// A configured shared secret. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the rare places that must send or sign with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares a presented value with the secret in constant time. Both sides are hashed
    /// first, so not even the secret's length leaks through timing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Compares two byte strings in constant time; both are hashed first so their lengths do not
/// leak through timing either.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// What one way of carrying the secret found in a request.
enum Found {
    /// The request does not carry it this way.
    Absent,
    Matches,
    Differs,
}

impl Auth {
    /// Checks the delivery carries `secret`; the error tells the sender what to send, naming
    /// `setting` (the variable that holds the secret), never the secret.
    pub fn verify(&self, delivery: &Delivery<'_>, secret: &Secret, setting: &str) -> Result<(), SourceError> {
        let ways: Vec<&Auth> = match self {
            Auth::AnyOf(ways) => ways.iter().collect(),
            one => vec![one],
        };
        for way in &ways {
            match way.find(delivery, secret) {
                Found::Absent => continue,
                Found::Matches => return Ok(()),
                Found::Differs => {
                    return Err(SourceError::Unauthorized(format!(
                        "{} does not match {setting}",
                        way.what()
                    )));
                }
            }
        }
        let how: Vec<String> = ways.iter().map(|way| way.how(setting)).collect();
        Err(SourceError::Unauthorized(format!("send {}", how.join(", or "))))
    }

    fn find(&self, delivery: &Delivery<'_>, secret: &Secret) -> Found {
        let presented = |value: Option<Vec<u8>>| match value {
            None => Found::Absent,
            Some(value) if secret.matches(&value) => Found::Matches,
            Some(_) => Found::Differs,
        };
        match self {
            Auth::Bearer => presented(bearer_token(delivery.headers).map(<[u8]>::to_vec)),
            Auth::Header(name) => presented(
                delivery
                    .headers
                    .get(name.as_str())
                    .map(|v| v.as_bytes().trim_ascii().to_vec()),
            ),
            Auth::Basic => presented(basic_password(delivery.headers)),
            Auth::Query(name) => presented(query_parameter(delivery.query, name).map(String::into_bytes)),
            Auth::Hmac(signature) => signature.check(delivery, secret),
            Auth::AnyOf(ways) => {
                let mut found = Found::Absent;
                for way in ways {
                    match way.find(delivery, secret) {
                        Found::Matches => return Found::Matches,
                        Found::Differs => found = Found::Differs,
                        Found::Absent => {}
                    }
                }
                found
            }
        }
    }

    /// What was presented, for "... does not match".
    fn what(&self) -> String {
        match self {
            Auth::Bearer => "the bearer token".into(),
            Auth::Header(name) => format!("the {name} header"),
            Auth::Basic => "the Basic-auth password".into(),
            Auth::Query(name) => format!("the `{name}` query parameter"),
            Auth::Hmac(signature) => format!("the {} signature (HMAC-SHA256 of the body)", signature.header),
            Auth::AnyOf(_) => "the secret".into(),
        }
    }

    /// How to send it, for the 401 of a request that carries none.
    fn how(&self, setting: &str) -> String {
        match self {
            Auth::Bearer => format!("the secret as `Authorization: Bearer <{setting}>`"),
            Auth::Header(name) => format!("the secret as `{name}: <{setting}>`"),
            Auth::Basic => format!("{setting} as the Basic-auth password (https://user:SECRET@host/...)"),
            Auth::Query(name) => format!("{setting} as `?{name}=SECRET` in the URL"),
            Auth::Hmac(signature) => format!(
                "a {} header: the HMAC-SHA256 of the body keyed with {setting}",
                signature.header
            ),
            Auth::AnyOf(ways) => ways
                .iter()
                .map(|way| way.how(setting))
                .collect::<Vec<_>>()
                .join(", or "),
        }
    }
}

impl Signature {
    fn check(&self, delivery: &Delivery<'_>, secret: &Secret) -> Found {
        let Some(header) = delivery.headers.get(self.header.as_str()) else {
            return Found::Absent;
        };
        let expected = self.sign(secret.expose().as_bytes(), delivery.body);
        let listed = header.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii);
        let mut matched = false;
        for presented in listed {
            // Every listed signature is compared, so the time taken does not say which matched.
            matched |= constant_time_eq(expected.as_bytes(), presented);
        }
        if matched { Found::Matches } else { Found::Differs }
    }

    /// The header value a sender with `key` would send for `body`.
    pub fn sign(&self, key: &[u8], body: &[u8]) -> String {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let digest = match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(body);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        };
        let encoded = match self.encoding {
            Encoding::Hex => hex::encode(digest),
            Encoding::Base64 => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(digest)
            }
        };
        format!("{}{encoded}", self.prefix)
    }
}

/// Reads `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if scheme.eq_ignore_ascii_case(b"bearer ") {
        Some(value[7..].trim_ascii())
    } else {
        None
    }
}

/// Reads the password of `Authorization: Basic base64(user:password)` (any user name).
pub fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine;
    let value = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
    value.get(..6).filter(|s| s.eq_ignore_ascii_case(b"basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value[6..].trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// A query-string parameter, percent-decoded (`+` is a space, as in forms).
pub fn query_parameter(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| {
            let spaced = value.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery<'a>(headers: &'a HeaderMap, query: Option<&'a str>, body: &'a [u8]) -> Delivery<'a> {
        Delivery {
            headers,
            query,
            body,
            received_at: 0,
        }
    }

    #[test]
    fn secrets_match_only_the_exact_value_and_never_print() {
        let secret = Secret::new("s3cret");
        assert!(secret.matches(b"s3cret"));
        assert!(!secret.matches(b"s3cre"));
        assert!(!secret.matches(b"s3cret "));
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "bearer abc ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some(&b"abc"[..]));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(
            query_parameter(Some("a=1&token=s%2Fx+y"), "token").as_deref(),
            Some("s/x y")
        );
        assert_eq!(
            query_parameter(Some("token=%zz"), "token").as_deref(),
            Some("%zz")
        );
        assert_eq!(query_parameter(None, "token"), None);
    }

    #[test]
    fn one_of_several_listed_signatures_must_match() {
        let signature = Signature {
            header: "circleci-signature".into(),
            encoding: Encoding::Hex,
            prefix: "v1=".into(),
        };
        let secret = Secret::new("k");
        let body = br#"{"id":1}"#;
        let good = signature.sign(b"k", body);
        let auth = Auth::Hmac(signature);
        let mut headers = HeaderMap::new();
        headers.insert("circleci-signature", format!("v0=abc,{good}").parse().unwrap());
        assert!(auth.verify(&delivery(&headers, None, body), &secret, "S").is_ok());
        headers.insert("circleci-signature", "v1=00".parse().unwrap());
        let refused = auth
            .verify(&delivery(&headers, None, body), &secret, "S")
            .unwrap_err();
        assert!(refused.to_string().contains("does not match S"), "{refused}");
    }

    #[test]
    fn a_request_without_the_secret_is_told_every_way_to_send_it() {
        let auth = Auth::AnyOf(vec![Auth::Basic, Auth::Query("token".into())]);
        let headers = HeaderMap::new();
        let refused = auth
            .verify(
                &delivery(&headers, None, b""),
                &Secret::new("x"),
                "SHIPLOG_JENKINS_SECRET",
            )
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("Basic-auth password") && refused.contains("?token="),
            "{refused}"
        );
        assert!(
            auth.verify(&delivery(&headers, Some("token=x"), b""), &Secret::new("x"), "S")
                .is_ok()
        );
    }
}
