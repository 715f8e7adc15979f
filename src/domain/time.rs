//! Instants: epoch milliseconds inside shiplog, `YYYY-MM-DDTHH:MM:SS.mmmZ` outside.
//!
//! Input comes as ISO-8601 strings (with or without offset or fraction), as epoch
//! milliseconds in a JSON number (Grafana's `$__from` overflows GraphQL's 32-bit Int), or as
//! epoch milliseconds in a numeric string.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Why a value is not an instant; the message says what would be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a time: use ISO-8601 (2026-11-26T14:03:00Z, with an offset or Z) or epoch milliseconds"
)]
pub struct InstantError(pub String);

/// The current time in epoch milliseconds.
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
pub fn format_millis(millis: i64) -> String {
    match Utc.timestamp_millis_opt(millis).single() {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => millis.to_string(),
    }
}

/// Parses a JSON value as an instant: a number of epoch ms, or a string (see [`parse_instant_str`]).
pub fn parse_instant(value: &serde_json::Value) -> Result<i64, InstantError> {
    match value {
        serde_json::Value::Number(number) => {
            if let Some(millis) = number.as_i64() {
                checked(millis, &number.to_string())
            } else if let Some(float) = number.as_f64() {
                checked(float.round() as i64, &number.to_string())
            } else {
                Err(InstantError(number.to_string()))
            }
        }
        serde_json::Value::String(text) => parse_instant_str(text),
        other => Err(InstantError(other.to_string())),
    }
}

/// Parses a string instant: epoch milliseconds, RFC 3339 / ISO-8601 with offset, a naive
/// date-time (taken as UTC) or a plain date (midnight UTC).
pub fn parse_instant_str(text: &str) -> Result<i64, InstantError> {
    let trimmed = text.trim();
    let error = || InstantError(text.chars().take(64).collect());
    if trimmed.is_empty() {
        return Err(error());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) || is_negative_number(trimmed) {
        let millis = trimmed.parse::<i64>().map_err(|_| error())?;
        return checked(millis, text);
    }
    // GitLab writes `2016-08-12 15:23:28 UTC` in pipeline and older job events.
    if let Some(naive) = trimmed.strip_suffix(" UTC") {
        return parse_instant_str(naive);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(time.timestamp_millis());
    }
    // ISO-8601 allows a space for the `T` and offsets without a colon.
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(time) = DateTime::parse_from_str(trimmed, format) {
            return Ok(time.timestamp_millis());
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(trimmed, format) {
            return Ok(time.and_utc().timestamp_millis());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
        && let Some(time) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(time.and_utc().timestamp_millis());
    }
    Err(error())
}

fn is_negative_number(text: &str) -> bool {
    text.len() > 1 && text.starts_with('-') && text[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Keeps instants within years 0..=9999 so formatting and databases never overflow.
fn checked(millis: i64, original: &str) -> Result<i64, InstantError> {
    const MIN: i64 = -62_167_219_200_000; // 0000-01-01
    const MAX: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999
    if (MIN..=MAX).contains(&millis) {
        Ok(millis)
    } else {
        Err(InstantError(original.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_764_165_780_000; // 2025-11-26T14:03:00Z

    #[test]
    fn iso_strings_with_offsets_and_fractions_parse() {
        assert_eq!(parse_instant_str("2025-11-26T14:03:00Z"), Ok(T));
        assert_eq!(parse_instant_str("2025-11-26T14:03:00.000Z"), Ok(T));
        assert_eq!(parse_instant_str("2025-11-26T16:03:00+02:00"), Ok(T));
        assert_eq!(parse_instant_str("2025-11-26T16:03:00+0200"), Ok(T));
        assert_eq!(parse_instant_str("2025-11-26 16:03:00 +0200"), Ok(T));
        assert_eq!(parse_instant_str("2025-11-26T14:03:00"), Ok(T));
        assert_eq!(parse_instant_str("2025-11-26T14:03:00.1234567Z"), Ok(T + 123));
        assert_eq!(parse_instant_str("2025-11-26 14:03:00 UTC"), Ok(T));
    }

    #[test]
    fn epoch_milliseconds_parse_as_numbers_and_strings() {
        assert_eq!(parse_instant(&json!(T)), Ok(T));
        assert_eq!(parse_instant(&json!(T.to_string())), Ok(T));
        assert_eq!(parse_instant(&json!(T as f64)), Ok(T));
    }

    #[test]
    fn garbage_is_refused_with_the_value_in_the_message() {
        let error = parse_instant_str("yesterday").unwrap_err();
        assert!(error.to_string().contains("`yesterday`"));
        assert!(parse_instant(&json!(true)).is_err());
        assert!(parse_instant(&json!(i64::MAX)).is_err());
        assert!(parse_instant_str("").is_err());
    }

    #[test]
    fn output_is_utc_with_milliseconds() {
        assert_eq!(format_millis(T + 5), "2025-11-26T14:03:00.005Z");
    }
}
