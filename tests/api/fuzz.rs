//! Every parser against arbitrary bytes and mutated real payloads: an error or a result, never
//! a panic or a hang. A bounded pass runs with every `cargo test` (1,000 cases per parser and
//! property; raise with PROPTEST_CASES for a longer run).

use std::sync::OnceLock;

use axum::http::HeaderMap;
use proptest::prelude::*;
use serde_json::Value;
use shiplog::sources::{Delivery, Registry};

use crate::fixtures::fixtures;

/// Every source of the registry (a new one is fuzzed without a line here).
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(crate::helpers::registry)
}

fn parse_everywhere(body: &[u8]) {
    let registry = registry();
    let headers = HeaderMap::new();
    for parser in registry.iter() {
        let delivery = Delivery {
            headers: &headers,
            query: Some("token=x"),
            body,
            received_at: 1_800_000_000_000,
        };
        let _ = parser.accept(&delivery);
    }
}

/// Every fixture body, for mutation (read once).
fn corpus() -> &'static [Value] {
    static CORPUS: OnceLock<Vec<Value>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        registry()
            .names()
            .flat_map(fixtures)
            .filter_map(|path| serde_json::from_slice(&std::fs::read(path).ok()?).ok())
            .collect()
    })
}

/// A JSON value that stresses parsers: wrong types, huge and odd strings, big numbers, nesting.
fn hostile() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        (0usize..70_000).prop_map(|n| Value::String("x".repeat(n))),
        Just(Value::String("2021-04-28 21:50:00 +0200".into())),
        Just(Value::String("-99999999999999999999".into())),
        Just(Value::String("\u{1F600}\u{0000}\u{FEFF}".into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces, or removes, the node at a random path of a real payload.
fn mutate(mut value: Value, path: &[usize], replacement: Option<Value>) -> Value {
    let mut node = &mut value;
    for (depth, step) in path.iter().enumerate() {
        let last = depth + 1 == path.len();
        match node {
            Value::Object(map) if !map.is_empty() => {
                let key = map.keys().nth(step % map.len()).cloned().unwrap_or_default();
                if last {
                    match &replacement {
                        Some(new) => {
                            map.insert(key, new.clone());
                        }
                        None => {
                            map.remove(&key);
                        }
                    }
                    return value;
                }
                node = map.get_mut(&key).unwrap();
            }
            Value::Array(items) if !items.is_empty() => {
                let index = step % items.len();
                if last {
                    match &replacement {
                        Some(new) => items[index] = new.clone(),
                        None => {
                            items.remove(index);
                        }
                    }
                    return value;
                }
                node = &mut items[index];
            }
            _ => break,
        }
    }
    value
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_parser(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        parse_everywhere(&body);
    }

    #[test]
    fn mutated_real_payloads_never_panic_a_parser(
        pick in any::<usize>(),
        path in prop::collection::vec(any::<usize>(), 1..6),
        replacement in prop::option::of(hostile()),
    ) {
        let corpus = corpus();
        let payload = mutate(corpus[pick % corpus.len()].clone(), &path, replacement);
        parse_everywhere(&serde_json::to_vec(&payload).unwrap());
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    parse_everywhere(deep.as_bytes());
    let deep_object = format!("{}1{}", "{\"Payload\":".repeat(50_000), "}".repeat(50_000));
    parse_everywhere(deep_object.as_bytes());
}
