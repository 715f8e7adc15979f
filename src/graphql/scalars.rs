//! `scalar Instant`: ISO-8601 strings, epoch milliseconds as a number (beyond 32-bit Int) or
//! as a numeric string in; `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC out.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

use crate::domain::{format_millis, parse_instant_str};

/// A point in time, epoch milliseconds inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instant(pub i64);

/// A point in time. Input: an ISO-8601 string, or epoch milliseconds as a number or numeric
/// string. Output: `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
#[Scalar(name = "Instant")]
impl ScalarType for Instant {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(number) => {
                let json = serde_json::Value::Number(number.clone());
                crate::domain::parse_instant(&json)
                    .map(Instant)
                    .map_err(|e| InputValueError::custom(e.to_string()))
            }
            Value::String(text) => parse_instant_str(text)
                .map(Instant)
                .map_err(|e| InputValueError::custom(e.to_string())),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(format_millis(self.0))
    }
}
