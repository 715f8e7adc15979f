//! The Grafana dashboard that ships with shiplog cannot rot: every GraphQL query in it runs
//! against a seeded server with Grafana's macros substituted as Grafana would, in each form
//! (ISO dates, epoch milliseconds, JSON list variables, "All").

use serde_json::{Value, json};
use shiplog::seed::SeedOptions;

use crate::helpers::spawn_app;

/// Every `(query, root_selector)` in a dashboard, wherever Infinity keeps them.
fn queries(node: &Value, found: &mut Vec<(String, String)>) {
    match node {
        Value::Object(map) => {
            if let Some(query) = map
                .get("url_options")
                .and_then(|o| o.get("body_graphql_query"))
                .and_then(Value::as_str)
            {
                let root = map
                    .get("root_selector")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                found.push((query.to_string(), root.to_string()));
            }
            map.values().for_each(|v| queries(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, found)),
        _ => {}
    }
}

/// Grafana's interpolation of the macros the dashboard uses.
fn interpolate(query: &str, from: i64, to: i64, systems: &str, environments: &str) -> String {
    let iso = |t: i64| shiplog::domain::format_millis(t);
    query
        .replace("${__from:date:iso}", &iso(from))
        .replace("${__to:date:iso}", &iso(to))
        .replace("${__from}", &from.to_string())
        .replace("${__to}", &to.to_string())
        .replace("$__from", &from.to_string())
        .replace("$__to", &to.to_string())
        .replace("${system:json}", systems)
        .replace("${environment:json}", environments)
}

#[tokio::test]
async fn every_dashboard_query_answers_with_data_and_no_errors() {
    let app = spawn_app().await;
    let options = SeedOptions {
        deployments: 3_000,
        systems: 5,
        environments: 3,
        days: 30,
        seed: 3,
    };
    shiplog::seed::seed(&app.store, &options).await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/shiplog-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut found = Vec::new();
    queries(&dashboard, &mut found);
    assert!(found.len() >= 10, "queries found: {}", found.len());
    let to = shiplog::domain::now_millis();
    let from = to - 30 * 86_400_000;
    let system = shiplog::seed::system_name(0);
    let variants = [
        ("\"*\"".to_string(), "\"*\"".to_string()),
        (
            format!("[\"{system}\"]"),
            "[\"production\",\"staging\"]".to_string(),
        ),
        (format!("\"{system}\""), "[\"$__all\"]".to_string()),
    ];
    for (query, root) in &found {
        for (systems, environments) in &variants {
            let text = interpolate(query, from, to, systems, environments);
            assert!(
                !text.contains('$') || text.contains("$__all"),
                "an uninterpolated macro: {text}"
            );
            let response = app.graphql(&text, json!({})).await;
            assert!(response.get("errors").is_none(), "{text}\n{response}");
            let mut data = &response;
            for key in root.split('.') {
                data = &data[key];
            }
            let rows = data
                .as_array()
                .unwrap_or_else(|| panic!("{root} is not a list: {response}"));
            assert!(!rows.is_empty(), "no data for {text}");
        }
    }
}
