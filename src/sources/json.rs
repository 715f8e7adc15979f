//! Reading tools' JSON: the few helpers every source needs, with error messages that name the
//! field (as a dotted path) and say what was expected.

use serde_json::Value;

use super::SourceError;
use crate::domain::{MAX_NAME_LEN, parse_instant};

/// The body as a JSON object; `what` names the expected payload in the error.
pub fn object(body: &[u8], what: &str) -> Result<Value, SourceError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| SourceError::InvalidPayload(format!("the body is not JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(SourceError::InvalidPayload(format!(
            "the body must be a JSON object ({what})"
        )))
    }
}

/// A JSON pointer as the dotted path people read (`/data/app/name` -> `data.app.name`).
pub fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// A text field: a non-blank string (trimmed) or a number's decimal text.
pub fn text(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A time field in any format `parse_instant` reads; absent or null is None.
pub fn time(value: &Value, pointer: &str) -> Result<Option<i64>, SourceError> {
    match value.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(raw) => parse_instant(raw)
            .map(Some)
            .map_err(|e| SourceError::InvalidPayload(format!("`{}`: {e}", dotted(pointer)))),
    }
}

/// A required name (system, environment, id) of at most `MAX_NAME_LEN` bytes.
pub fn name(raw: Option<String>, what: &str) -> Result<String, SourceError> {
    match raw {
        Some(name) if name.len() <= MAX_NAME_LEN => Ok(name),
        Some(_) => Err(SourceError::InvalidPayload(format!(
            "`{what}` is longer than {MAX_NAME_LEN} bytes"
        ))),
        None => Err(SourceError::InvalidPayload(format!("`{what}` is missing"))),
    }
}

/// A git sha: 7 to 64 hex digits, lower-cased; None for anything else (and for all zeros,
/// which tools send for "no commit").
pub fn sha(raw: Option<String>) -> Option<String> {
    raw.filter(|s| (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|s| s.to_lowercase())
        .filter(|s| s.bytes().any(|b| b != b'0'))
}

/// The first 64 characters of a tool's word, for messages.
pub fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_are_hex_of_a_sane_length_and_never_all_zeros() {
        assert_eq!(sha(Some("9F2C1A0B".into())).as_deref(), Some("9f2c1a0b"));
        assert_eq!(sha(Some("abc".into())), None);
        assert_eq!(sha(Some("0000000000000000000000000000000000000000".into())), None);
        assert_eq!(sha(Some("main".into())), None);
    }

    #[test]
    fn fields_are_named_as_dotted_paths() {
        let value: Value = serde_json::json!({ "data": { "at": "soon" } });
        let error = time(&value, "/data/at").unwrap_err().to_string();
        assert!(error.starts_with("`data.at`"), "{error}");
    }
}
