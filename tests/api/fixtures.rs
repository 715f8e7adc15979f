//! Every fixture through its source's parser, snapshotted (insta): a parser change is a diff.

use std::path::Path;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use shiplog::sources::Delivery;

/// The receive time every fixture is parsed at.
const RECEIVED_AT: i64 = 1_800_000_000_000;

pub fn fixture_dir(source: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(source)
}

/// The headers of a fixture (`<name>.headers`), or none.
pub fn fixture_headers(body: &Path) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(text) = std::fs::read_to_string(body.with_extension("headers")) {
        for line in text.lines() {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(
                    HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                    HeaderValue::from_str(value.trim()).unwrap(),
                );
            }
        }
    }
    headers
}

/// Every `.json` fixture of a source, sorted.
pub fn fixtures(source: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(fixture_dir(source))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_fixture_has_a_reviewed_snapshot_of_its_normalised_output() {
    let registry = crate::helpers::registry();
    let mut count = 0;
    for source in registry.names() {
        let parser = registry.get(source).unwrap();
        for path in fixtures(source) {
            let body = std::fs::read(&path).unwrap();
            let headers = fixture_headers(&path);
            let delivery = Delivery {
                headers: &headers,
                query: None,
                body: &body,
                received_at: RECEIVED_AT,
            };
            let accepted = parser
                .accept(&delivery)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = format!("{source}__{}", path.file_stem().unwrap().to_string_lossy());
            insta::assert_json_snapshot!(
                name,
                serde_json::json!({
                    "deliveryKey": accepted.key,
                    "parsed": accepted.parsed,
                })
            );
            count += 1;
        }
    }
    assert!(count >= 37, "fixtures found: {count}");
}
