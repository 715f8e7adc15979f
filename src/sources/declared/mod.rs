//! Sources declared in configuration (`[sources.<name>]`): a tool's own webhook, mapped by jq
//! expressions, with the same guarantees as a built-in source (verified, journaled,
//! deduplicated, normalised, replayable). A declared source is one more implementation of the
//! one-call contract ([`Source::accept`]); shipped recipes ([`recipes`]) are declarations too.

use std::collections::BTreeMap;
use std::sync::Arc;

use jaq_json::Val;
use serde_json::Value;

use super::{
    Accepted, Auth, Delivery, Encoding, Parsed, Signature, Source, SourceError, body_key, idempotency_key,
};
use crate::domain::{DeploymentStatus, MAX_NAME_LEN, MAX_TEXT_LEN, Observation, parse_instant};

pub mod jq;
pub mod recipes;
pub mod tools;

/// The `[sources.<name>]` table, as written (a recipe's keys under the user's).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredConfig {
    /// A shipped recipe to start from (`shiplog recipes` lists them); keys here override it.
    pub recipe: Option<String>,
    pub delivery_key: Option<String>,
    pub when: Option<String>,
    pub id: Option<String>,
    pub system: Option<String>,
    pub environment: Option<String>,
    pub status: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub commit_sha: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub version: Option<String>,
    pub url: Option<String>,
    pub actor: Option<String>,
    pub committed_at: Option<String>,
    /// An object of key: value tags (`{pipeline: .pipeline.slug}`).
    pub tags: Option<String>,
    /// A note (`.build.message`).
    pub note: Option<String>,
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub statuses: BTreeMap<String, String>,
}

/// `[sources.<name>.auth]`.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `bearer`, `basic`, `query`, `header` or `hmac-sha256`.
    pub kind: String,
    /// The header that holds the secret (`header`) or the signature (`hmac-sha256`).
    pub header: Option<String>,
    /// The query parameter (`query`; default `token`).
    pub name: Option<String>,
    /// `hex` (default) or `base64` (`hmac-sha256`).
    pub encoding: Option<String>,
    /// What precedes the digest (`sha256=`), if anything (`hmac-sha256`).
    pub prefix: Option<String>,
}

/// A compiled declared source.
pub struct Declared {
    name: String,
    auth: Auth,
    delivery_key: Option<Expression>,
    when: Option<Expression>,
    id: Expression,
    /// By name (`FIELDS`); `system`, `environment` and `status` are always there.
    fields: BTreeMap<&'static str, Expression>,
    /// The tool's word, lower-cased, to shiplog's status.
    statuses: BTreeMap<String, DeploymentStatus>,
    rule: String,
}

/// One jq expression, compiled, with its text for error messages.
struct Expression {
    key: &'static str,
    text: String,
    filter: jq::JqFilter,
}

impl Expression {
    fn compile(source: &str, key: &'static str, text: &str) -> Result<Self, String> {
        let filter = jq::compile(text).map_err(|e| format!("[sources.{source}] {key}: {e}"))?;
        Ok(Self {
            key,
            text: text.trim().to_string(),
            filter,
        })
    }

    /// Every output, or the failure naming the key and the expression.
    fn all(&self, input: &Val, inputs: &Inputs) -> Result<Vec<Value>, SourceError> {
        jq::run(&self.filter, input.clone(), &inputs.headers, &inputs.query)
            .map(|outputs| outputs.iter().map(jq::to_json).collect())
            .map_err(|e| self.failed(&e))
    }

    fn failed(&self, error: &str) -> SourceError {
        let text: String = self.text.chars().take(200).collect();
        SourceError::InvalidPayload(format!("`{}` = '{text}' failed: {error}", self.key))
    }
}

/// What expressions read besides the body.
struct Inputs {
    headers: Val,
    query: Val,
}

/// The route name's rule: `[a-z0-9-]`, not a built-in source's name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "[sources.{name}]: a source's name is its route (/webhooks/NAME): 1 to 64 of a-z, 0-9 and -"
        ));
    }
    if super::BUILT_IN.iter().any(|b| b.name == name) {
        return Err(format!(
            "[sources.{name}]: `{name}` is a built-in source; name the declared one differently"
        ));
    }
    Ok(())
}

impl Declared {
    /// Compiles a declaration (its recipe's keys under its own); every mistake names the source,
    /// the key and the problem.
    pub fn new(name: &str, config: DeclaredConfig) -> Result<Self, String> {
        check_name(name)?;
        let config = recipes::resolve(name, config)?;
        let required = |key: &'static str, value: &Option<String>| {
            let text = value
                .as_deref()
                .ok_or_else(|| format!("[sources.{name}] {key} is required (a jq expression)"))?;
            Expression::compile(name, key, text)
        };
        let optional = |key: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(|text| Expression::compile(name, key, text))
                .transpose()
        };
        let mut fields = BTreeMap::new();
        for (key, value) in field_texts(&config) {
            let expression = match key {
                "system" | "environment" | "status" => Some(required(key, value)?),
                _ => optional(key, value)?,
            };
            if let Some(expression) = expression {
                fields.insert(key, expression);
            }
        }
        Ok(Self {
            auth: auth(name, config.auth.as_ref())?,
            delivery_key: optional("delivery_key", &config.delivery_key)?,
            when: optional("when", &config.when)?,
            id: required("id", &config.id)?,
            statuses: statuses(name, &config.statuses)?,
            rule: format!("sources.{name}"),
            name: name.to_string(),
            fields,
        })
    }
}

/// The field expressions as written, by key.
fn field_texts(config: &DeclaredConfig) -> [(&'static str, &Option<String>); 13] {
    [
        ("system", &config.system),
        ("environment", &config.environment),
        ("status", &config.status),
        ("started_at", &config.started_at),
        ("finished_at", &config.finished_at),
        ("commit_sha", &config.commit_sha),
        ("ref", &config.git_ref),
        ("version", &config.version),
        ("url", &config.url),
        ("actor", &config.actor),
        ("committed_at", &config.committed_at),
        ("tags", &config.tags),
        ("note", &config.note),
    ]
}

/// `[sources.<name>.auth]` as an [`Auth`] (required: every source has a secret).
fn auth(name: &str, config: Option<&AuthConfig>) -> Result<Auth, String> {
    let config = config.ok_or_else(|| {
        format!("[sources.{name}.auth] is required: kind = \"bearer\" | \"basic\" | \"query\" | \"header\" | \"hmac-sha256\"")
    })?;
    let header = |what: &str| {
        config
            .header
            .clone()
            .filter(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).is_ok())
            .ok_or_else(|| {
                format!("[sources.{name}.auth] header is required for kind = \"{what}\" (a header name)")
            })
    };
    match config.kind.as_str() {
        "bearer" => Ok(Auth::Bearer),
        "basic" => Ok(Auth::Basic),
        "query" => Ok(Auth::Query(config.name.clone().unwrap_or_else(|| "token".into()))),
        "header" => Ok(Auth::Header(header("header")?)),
        "hmac-sha256" => Ok(Auth::Hmac(Signature {
            header: header("hmac-sha256")?,
            encoding: match config.encoding.as_deref() {
                None | Some("hex") => Encoding::Hex,
                Some("base64") => Encoding::Base64,
                Some(other) => {
                    return Err(format!(
                        "[sources.{name}.auth] encoding = \"{other}\": use \"hex\" or \"base64\""
                    ));
                }
            },
            prefix: config.prefix.clone().unwrap_or_default(),
        })),
        other => Err(format!(
            "[sources.{name}.auth] kind = \"{other}\": use bearer, basic, query, header or hmac-sha256"
        )),
    }
}

/// `[sources.<name>.statuses]`: the tool's words (case-insensitive) to shiplog's statuses.
fn statuses(
    name: &str,
    table: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, DeploymentStatus>, String> {
    table
        .iter()
        .map(|(word, status)| {
            let parsed = match status.trim().to_lowercase().as_str() {
                "queued" => DeploymentStatus::Queued,
                "running" => DeploymentStatus::Running,
                "succeeded" => DeploymentStatus::Succeeded,
                "failed" => DeploymentStatus::Failed,
                "cancelled" | "canceled" => DeploymentStatus::Cancelled,
                "unknown" => DeploymentStatus::Unknown,
                _ => {
                    return Err(format!(
                        "[sources.{name}.statuses] {word} = \"{status}\": use queued, running, succeeded, failed, cancelled or unknown"
                    ));
                }
            };
            Ok((word.trim().to_lowercase(), parsed))
        })
        .collect()
}

impl Source for Declared {
    fn name(&self) -> &str {
        &self.name
    }

    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn accept(&self, delivery: &Delivery<'_>) -> Result<Accepted, SourceError> {
        let body: Value = serde_json::from_slice(delivery.body)
            .map_err(|e| SourceError::InvalidPayload(format!("the body is not JSON: {e}")))?;
        let input = jq::from_json(&body);
        let inputs = Inputs {
            headers: jq::string_map(delivery.headers.iter().map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })),
            query: jq::string_map(
                serde_urlencoded::from_str::<Vec<(String, String)>>(delivery.query.unwrap_or_default())
                    .unwrap_or_default(),
            ),
        };
        let key = match &self.delivery_key {
            Some(expression) => match first_text(expression, &input, &inputs)? {
                Some(key) => format!("key:{}", truncate(&key, 255)),
                None => {
                    return Err(
                        expression.failed("gave no value (the delivery key is required when declared)")
                    );
                }
            },
            None => idempotency_key(delivery.headers).unwrap_or_else(|| body_key(delivery.body)),
        };
        Ok(Accepted {
            key,
            redacted: None,
            parsed: self.parse(&input, &inputs, delivery.received_at)?,
            rule: Some(self.rule.clone()),
        })
    }
}

impl Declared {
    fn parse(&self, input: &Val, inputs: &Inputs, received_at: i64) -> Result<Parsed, SourceError> {
        if let Some(when) = &self.when {
            let kept = when
                .all(input, inputs)?
                .first()
                .is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)));
            if !kept {
                return Ok(Parsed::Ignored(format!(
                    "[sources.{}] when = '{}' is false for this delivery",
                    self.name,
                    truncate(&when.text, 200)
                )));
            }
        }
        let ids = self.id.all(input, inputs)?;
        if ids.is_empty() {
            return Err(self.id.failed("gave no value (every deployment needs an id)"));
        }
        let mut values: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
        for (key, expression) in &self.fields {
            let outputs = expression.all(input, inputs)?;
            if outputs.len() > 1 && outputs.len() != ids.len() {
                return Err(expression.failed(&format!(
                    "gave {} values for {} ids (a field gives one value for all, or one per id)",
                    outputs.len(),
                    ids.len()
                )));
            }
            values.insert(key, outputs);
        }
        let observations = ids
            .iter()
            .enumerate()
            .map(|(n, id)| self.observation(id, n, &values, received_at))
            .collect::<Result<_, _>>()?;
        Ok(Parsed::Deployments(observations))
    }

    /// The `n`th deployment: each field's `n`th value, or its only one.
    fn observation(
        &self,
        id: &Value,
        n: usize,
        values: &BTreeMap<&'static str, Vec<Value>>,
        received_at: i64,
    ) -> Result<Observation, SourceError> {
        let value = |key: &str| {
            values
                .get(key)
                .and_then(|outputs| outputs.get(n).or(outputs.first().filter(|_| outputs.len() == 1)))
                .filter(|v| !v.is_null())
        };
        let text = |key: &str| value(key).and_then(as_text).map(|t| truncate(&t, MAX_TEXT_LEN));
        let name = |key: &str| -> Result<String, SourceError> {
            text(key)
                .filter(|t| !t.trim().is_empty())
                .map(|t| truncate(t.trim(), MAX_NAME_LEN))
                .ok_or_else(|| self.fields[key].failed("gave no text (a required field)"))
        };
        let time = |key: &str| -> Result<Option<i64>, SourceError> {
            value(key)
                .map(|v| instant(v).map_err(|e| self.fields[key].failed(&e)))
                .transpose()
        };
        let external_id = as_text(id)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| self.id.failed("gave a value that is not text or a number"))?;
        let raw_status = name("status")?;
        let status = self
            .statuses
            .get(&raw_status.to_lowercase())
            .copied()
            .unwrap_or(DeploymentStatus::Unknown);
        let (started_at, finished_at) = (time("started_at")?, time("finished_at")?);
        let reported = match status {
            DeploymentStatus::Running => started_at,
            s if s.is_terminal() => finished_at.or(started_at),
            _ => None,
        };
        // Tags are best-effort: what is not a usable tag is left out, never the deployment.
        let tags = match value("tags") {
            Some(Value::Object(map)) => crate::domain::tags::usable(
                map.iter()
                    .filter_map(|(key, value)| as_text(value).map(|text| (key.clone(), text))),
            ),
            _ => BTreeMap::new(),
        };
        Ok(Observation {
            external_id: truncate(external_id.trim(), MAX_NAME_LEN),
            system: name("system")?,
            environment: name("environment")?,
            environment_tier: None,
            status,
            raw_status,
            occurred_at: reported.unwrap_or(received_at),
            tags,
            note: text("note"),
            environment_url: None,
            times_estimated: reported.is_none(),
            started_at,
            finished_at: finished_at.filter(|_| status.is_terminal()),
            commit_sha: super::json::sha(text("commit_sha")),
            git_ref: text("ref"),
            version: text("version"),
            url: text("url"),
            actor: text("actor"),
            tenant: None,
            committed_at: time("committed_at")?,
            origin: None,
        })
    }
}

/// A time as the built-in sources read one, and epoch seconds too: a number (or digits) below
/// 10^11 is seconds (as milliseconds that would be before March 1973).
fn instant(value: &Value) -> Result<i64, String> {
    const SECONDS_BELOW: f64 = 1e11;
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s)
            if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            s.trim().parse::<f64>().ok()
        }
        _ => None,
    };
    match number {
        Some(n) if n.abs() < SECONDS_BELOW => Ok((n * 1000.0).round() as i64),
        Some(n) => Ok(n.round() as i64),
        None => parse_instant(value).map_err(|e| e.to_string()),
    }
}

/// The first output as text (strings as they are, numbers as written), if any.
fn first_text(expression: &Expression, input: &Val, inputs: &Inputs) -> Result<Option<String>, SourceError> {
    Ok(expression.all(input, inputs)?.first().and_then(as_text))
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Every declared source, compiled (`[sources]` of the settings, by name).
pub fn all(declared: &BTreeMap<String, toml::Value>) -> Result<Vec<Arc<dyn Source>>, String> {
    declared
        .iter()
        .map(|(name, table)| {
            let config: DeclaredConfig = table
                .clone()
                .try_into()
                .map_err(|e| format!("[sources.{name}]: {e}"))?;
            Ok(Arc::new(Declared::new(name, config)?) as Arc<dyn Source>)
        })
        .collect()
}

#[cfg(test)]
mod tests;
