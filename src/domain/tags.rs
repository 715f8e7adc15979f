//! Key:value tags on deployments: what a key and a value may be, the same for every path
//! that sets them (payloads, the generic webhook, the write API) and for the filter.

use std::collections::BTreeMap;

/// The most tags one deployment carries.
pub const MAX_TAGS: usize = 32;
/// The longest key (bytes).
pub const MAX_KEY_LEN: usize = 64;
/// The longest value (bytes).
pub const MAX_VALUE_LEN: usize = 255;

/// A key and value, trimmed, or what is wrong with them: a key is 1 to 64 letters, digits,
/// `-`, `_`, `.` or `/`; a value is 1 to 255 bytes.
pub fn checked(key: &str, value: &str) -> Result<(String, String), String> {
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty()
        || key.len() > MAX_KEY_LEN
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return Err(format!(
            "tag key `{}` must be 1 to {MAX_KEY_LEN} letters, digits, `-`, `_`, `.` or `/`",
            key.chars().take(64).collect::<String>()
        ));
    }
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(format!("tag `{key}`: a value is 1 to {MAX_VALUE_LEN} bytes"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Checked tags from pairs, at most [`MAX_TAGS`], or every problem found.
pub fn checked_all<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut tags = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, value) in pairs {
        match checked(key, value) {
            Ok((key, value)) => {
                tags.insert(key, value);
            }
            Err(problem) => problems.push(problem),
        }
    }
    if tags.len() > MAX_TAGS {
        problems.push(format!(
            "{} tags; a deployment carries at most {MAX_TAGS}",
            tags.len()
        ));
    }
    if problems.is_empty() {
        Ok(tags)
    } else {
        Err(problems)
    }
}

/// The usable tags among pairs a tool sent: each checked, the bad ones left out (logged), at
/// most [`MAX_TAGS`] (the first by key). Tools' tags never cost a deployment.
pub fn usable(pairs: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    for (key, value) in pairs {
        match checked(&key, &value) {
            Ok((key, value)) => {
                tags.insert(key, value);
            }
            Err(problem) => tracing::debug!(%problem, "a tool's tag left out"),
        }
    }
    while tags.len() > MAX_TAGS {
        tags.pop_last();
    }
    tags
}

/// A filter's `key:value` (the first `:` splits: values may hold more).
pub fn filter_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once(':')
        .ok_or_else(|| format!("tag filter `{text}` is not `key:value`"))?;
    checked(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_filters_say_what_is_wrong() {
        assert_eq!(
            filter_pair("tenant: acme:eu").unwrap(),
            ("tenant".into(), "acme:eu".into())
        );
        assert!(filter_pair("tenant").unwrap_err().contains("key:value"));
        assert!(checked("a b", "x").unwrap_err().contains("letters"));
        assert!(checked("tier", " ").unwrap_err().contains("1 to 255"));
        let many: Vec<(String, String)> = (0..40).map(|n| (format!("k{n}"), "v".to_string())).collect();
        let problems = checked_all(many.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_err();
        assert!(problems[0].contains("at most 32"), "{problems:?}");
    }
}
