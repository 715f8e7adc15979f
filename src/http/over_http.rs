//! GraphQL over HTTP as the GraphQL Foundation's spec draws it: which media type an answer is
//! in (from `Accept`), what a request must look like before it is run, and which status a
//! request error gets. `graphql-http`'s server audit checks all of it (tests/clients).

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{BatchResponse, ServerError};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::graphql::errors;

/// The spec's own media type: request errors are 4xx and carry no `data`.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
/// What every older client parses: every well-formed request is answered 200.
pub const APPLICATION_JSON: &str = "application/json";

/// The media type of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Json,
    GraphqlResponse,
}

impl Media {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => APPLICATION_JSON,
            Self::GraphqlResponse => GRAPHQL_RESPONSE_JSON,
        }
    }

    /// The first media range the client accepts (highest `q` first, then in the order
    /// listed) that shiplog can answer in. No `Accept`, `*/*` and `application/*` get
    /// `application/json`, as the spec asks until clients have moved (and as graphql-http's
    /// audit checks); nothing acceptable is a 406 that names both types.
    pub fn negotiate(headers: &HeaderMap) -> Result<Self, Refusal> {
        let listed: Vec<&str> = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|range| !range.is_empty())
            .collect();
        if listed.is_empty() {
            return Ok(Self::Json);
        }
        let mut ranges: Vec<(f32, Option<Self>)> = listed.iter().map(|range| media_range(range)).collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranges
            .into_iter()
            .filter(|(q, _)| *q > 0.0)
            .find_map(|(_, media)| media)
            .ok_or_else(|| Refusal {
                status: StatusCode::NOT_ACCEPTABLE,
                code: "NOT_ACCEPTABLE",
                message: format!(
                    "shiplog answers in {GRAPHQL_RESPONSE_JSON} or {APPLICATION_JSON}, and this request \
                     accepts only `{}`: add one of them to Accept",
                    listed.join(", ")
                ),
                allow: None,
            })
    }
}

/// One `Accept` entry: its weight and the media type it lets shiplog answer in, if any.
fn media_range(range: &str) -> (f32, Option<Media>) {
    let mut parts = range.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
    let mut q = 1.0;
    let mut utf8 = true;
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "q" => q = value.parse().unwrap_or(0.0),
            "charset" => utf8 = matches!(value.to_ascii_lowercase().as_str(), "utf-8" | "utf8"),
            _ => {}
        }
    }
    let media = match essence.as_str() {
        _ if !utf8 => None,
        GRAPHQL_RESPONSE_JSON => Some(Media::GraphqlResponse),
        APPLICATION_JSON | "application/*" | "*/*" => Some(Media::Json),
        _ => None,
    };
    (q, media)
}

/// A request refused before anything ran: its status, code and what to fix.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The methods to name in `Allow` (a 405).
    pub allow: Option<&'static str>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// The refusal as a GraphQL errors document, in the negotiated media type.
    pub fn into_response(self, media: Media) -> Response {
        let body = serde_json::json!({
            "errors": [{ "message": self.message, "extensions": { "code": self.code } }]
        });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media.content_type()),
        );
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// A POST body must be JSON (`Content-Type: application/json`, UTF-8).
pub fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let unsupported = |message: String| Refusal {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "UNSUPPORTED_MEDIA_TYPE",
        message,
        allow: None,
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported(
            "the request has no Content-Type: send the body as JSON ({\"query\": \"{ systemNames }\"}) \
             with `Content-Type: application/json`"
                .into(),
        ));
    };
    let value = value.to_str().unwrap_or_default();
    let mut parts = value.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    let utf8 = parts.all(|parameter| match parameter.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            matches!(
                charset.trim().trim_matches('"').to_ascii_lowercase().as_str(),
                "utf-8" | "utf8"
            )
        }
        _ => true,
    });
    if essence.eq_ignore_ascii_case(APPLICATION_JSON) && utf8 {
        return Ok(());
    }
    Err(unsupported(format!(
        "a GraphQL request's body is UTF-8 JSON sent as `Content-Type: application/json`, not `{value}` \
         (or send a query in the URL: GET /graphql?query=...)"
    )))
}

/// The body of a POST: one request object, or a batch (an array of them).
pub fn parse_body(body: &[u8]) -> Result<Requests, Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| Refusal::bad_request(format!("the body is not JSON: {error}")))?;
    match value {
        Value::Object(fields) => Ok(Requests::One(Box::new(prepare(fields)?))),
        Value::Array(items) if items.is_empty() => Err(Refusal::bad_request(
            "the body is an empty batch: send one request object, or an array of them",
        )),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(fields) => prepare(fields),
                other => Err(Refusal::bad_request(format!(
                    "every request in a batch is a JSON object, not {}",
                    kind(&other)
                ))),
            })
            .collect::<Result<_, _>>()
            .map(Requests::Batch),
        other => Err(Refusal::bad_request(format!(
            "the body must be a JSON object like {{\"query\": \"{{ systemNames }}\"}}, not {}",
            kind(&other)
        ))),
    }
}

/// The URL of a GET: `query`, and `operationName`, `variables` and `extensions` (JSON, as
/// URL-encoded strings).
pub fn parse_url(raw: &str) -> Result<Prepared, Refusal> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|error| Refusal::bad_request(format!("the query string cannot be decoded: {error}")))?;
    let mut fields = Map::new();
    for (name, text) in pairs {
        let value = match name.as_str() {
            "variables" | "extensions" if !text.is_empty() => serde_json::from_str(&text)
                .map_err(|error| Refusal::bad_request(format!("`{name}` in the URL is not JSON: {error}")))?,
            "variables" | "extensions" => Value::Null,
            _ => Value::String(text),
        };
        fields.insert(name, value);
    }
    prepare(fields)
}

/// What a body holds: one request, or a batch whose answer is an array.
pub enum Requests {
    One(Box<Prepared>),
    Batch(Vec<Prepared>),
}

/// One request, checked: its parameters well-formed and its document parsed (or the parse
/// error, which is answered as a GraphQL request error, not a refusal).
pub struct Prepared {
    pub request: async_graphql::Request,
    pub parsed: Result<ExecutableDocument, ServerError>,
}

impl Prepared {
    /// The kind of the operation the request would run (when its document parsed and names it).
    pub fn operation(&self) -> Option<OperationType> {
        let document = self.parsed.as_ref().ok()?;
        match (&document.operations, self.request.operation_name.as_deref()) {
            (DocumentOperations::Single(operation), _) => Some(operation.node.ty),
            (DocumentOperations::Multiple(operations), Some(name)) => {
                operations.get(name).map(|operation| operation.node.ty)
            }
            (DocumentOperations::Multiple(_), None) => None,
        }
    }
}

fn prepare(mut fields: Map<String, Value>) -> Result<Prepared, Refusal> {
    let query = match fields.remove("query") {
        Some(Value::String(query)) => query,
        None | Some(Value::Null) => return Err(missing_query(&fields)),
        Some(other) => {
            return Err(Refusal::bad_request(format!(
                "`query` must be a string holding a GraphQL document, not {}",
                kind(&other)
            )));
        }
    };
    let mut request = async_graphql::Request::new(query.clone());
    match fields.remove("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name),
        Some(other) => return Err(not_a("operationName", "a string (or null)", &other)),
    }
    match fields.remove("variables") {
        None | Some(Value::Null) => {}
        Some(variables @ Value::Object(_)) => {
            request = request.variables(async_graphql::Variables::from_json(variables));
        }
        Some(other) => {
            return Err(not_a(
                "variables",
                "an object of variable values (or null)",
                &other,
            ));
        }
    }
    match fields.remove("extensions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(extensions)) => {
            for (name, value) in extensions {
                let value = async_graphql::Value::from_json(value).unwrap_or(async_graphql::Value::Null);
                request.extensions.0.insert(name, value);
            }
        }
        Some(other) => return Err(not_a("extensions", "an object (or null)", &other)),
    }
    let parsed = async_graphql::parser::parse_query(&query).map_err(errors::parse_error);
    Ok(Prepared { request, parsed })
}

fn missing_query(fields: &Map<String, Value>) -> Refusal {
    let persisted = fields
        .get("extensions")
        .and_then(|extensions| extensions.get("persistedQuery"))
        .is_some();
    if persisted {
        return Refusal {
            code: "PERSISTED_QUERY_NOT_SUPPORTED",
            ..Refusal::bad_request("persisted queries are not supported: send the document in `query`")
        };
    }
    let known = ["operationName", "variables", "extensions"];
    let unknown: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|key| !known.contains(key))
        .collect();
    let hint = match unknown.as_slice() {
        [] => String::new(),
        keys => format!(" (it has `{}`, which shiplog does not read)", keys.join("`, `")),
    };
    Refusal::bad_request(format!(
        "the request has no `query`{hint}: send {{\"query\": \"{{ systemNames }}\"}}"
    ))
}

fn not_a(name: &str, expected: &str, got: &Value) -> Refusal {
    Refusal::bad_request(format!("`{name}` must be {expected}, not {}", kind(got)))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a response is a request error: nothing ran (no `data`) and every error is about
/// the request as a whole (parsing, validation, variables), not a field.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty())
}

/// The answer in the negotiated media type: with `application/graphql-response+json` a request
/// error is a 400 without `data`; with `application/json` every executed request is a 200.
pub fn answer(media: Media, response: BatchResponse) -> Response {
    let request_error = match &response {
        BatchResponse::Single(one) => is_request_error(one),
        BatchResponse::Batch(_) => false,
    };
    /// A request error's answer: its errors (and extensions), no `data`.
    #[derive(serde::Serialize)]
    struct Refused<'a> {
        errors: &'a [ServerError],
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
    }
    // Serialized as it is, not through `serde_json::Value`: answers keep the query's field order.
    let (status, body) = match &response {
        BatchResponse::Single(one) if request_error && media == Media::GraphqlResponse => (
            StatusCode::BAD_REQUEST,
            serde_json::to_string(&Refused {
                errors: &one.errors,
                extensions: &one.extensions,
            }),
        ),
        _ => (StatusCode::OK, serde_json::to_string(&response)),
    };
    let body = body.unwrap_or_default();
    let mut answer = (status, body).into_response();
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    if response.is_ok()
        && let Some(cache_control) = response.cache_control().value()
        && let Ok(value) = HeaderValue::from_str(&cache_control)
    {
        headers.insert(header::CACHE_CONTROL, value);
    }
    headers.extend(response.http_headers());
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Result<Media, Refusal> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        Media::negotiate(&headers)
    }

    #[test]
    fn the_client_gets_the_type_it_prefers() {
        assert_eq!(Media::negotiate(&HeaderMap::new()).unwrap(), Media::Json);
        assert_eq!(accept("application/json").unwrap(), Media::Json);
        assert_eq!(accept(GRAPHQL_RESPONSE_JSON).unwrap(), Media::GraphqlResponse);
        assert_eq!(
            accept("application/graphql-response+json, application/json").unwrap(),
            Media::GraphqlResponse
        );
        assert_eq!(
            accept("application/json;q=0.9, application/graphql-response+json").unwrap(),
            Media::GraphqlResponse
        );
        assert_eq!(
            accept("application/graphql-response+json;q=0.5, application/json").unwrap(),
            Media::Json
        );
        assert_eq!(accept("text/html, */*;q=0.8").unwrap(), Media::Json);
        assert_eq!(accept("application/json; charset=utf-8").unwrap(), Media::Json);
        let refused = accept("text/html, application/json; charset=latin1, application/xml").unwrap_err();
        assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
        assert!(refused.message.contains("text/html"), "{}", refused.message);
        assert!(accept("application/json;q=0").is_err());
    }

    #[test]
    fn a_parse_error_is_one_line_with_its_position() {
        let Ok(Requests::One(prepared)) = parse_body(br#"{"query": "{ systemNames "}"#) else {
            panic!("one request")
        };
        let error = prepared.parsed.unwrap_err();
        assert!(!error.message.contains('\n'), "{}", error.message);
        assert!(
            error.message.starts_with("syntax error at line 1, column 15"),
            "{}",
            error.message
        );
        assert_eq!(error.locations.len(), 1);
        assert_eq!(error.locations[0].column, 15);
    }

    #[test]
    fn malformed_parameters_say_what_to_send() {
        let message = |body: &str| parse_body(body.as_bytes()).err().map(|refusal| refusal.message);
        assert!(message(r#"{"qeury": "{ a }"}"#).unwrap().contains("`qeury`"));
        assert!(message(r#"{"query": 1}"#).unwrap().contains("not a number"));
        assert!(
            message(r#"{"query": "{ a }", "variables": "x"}"#)
                .unwrap()
                .contains("`variables`")
        );
        assert!(
            message(r#"{"query": "{ a }", "operationName": []}"#)
                .unwrap()
                .contains("`operationName`")
        );
        assert!(
            message(r#"{"query": "{ a }", "extensions": 2}"#)
                .unwrap()
                .contains("`extensions`")
        );
        assert!(message("[]").unwrap().contains("empty batch"));
        assert!(message("3").unwrap().contains("not a number"));
        assert_eq!(
            message(r#"{"query": "{ a }", "variables": null, "extensions": {}}"#),
            None
        );
        let persisted = parse_body(br#"{"extensions": {"persistedQuery": {"version": 1}}}"#)
            .err()
            .unwrap();
        assert_eq!(persisted.code, "PERSISTED_QUERY_NOT_SUPPORTED");
    }

    #[test]
    fn a_get_reads_json_variables_from_the_url() {
        let prepared =
            parse_url("query=query%20(%24n%3A%20Int)%20%7B%20a%20%7D&variables=%7B%22n%22%3A1%7D").unwrap();
        assert!(prepared.parsed.is_ok());
        assert_eq!(prepared.operation(), Some(OperationType::Query));
        let mutation = parse_url("query=mutation%20%7B%20a%20%7D").unwrap();
        assert_eq!(mutation.operation(), Some(OperationType::Mutation));
        assert!(parse_url("query=%7B%20a%20%7D&variables=nope").is_err());
    }
}
