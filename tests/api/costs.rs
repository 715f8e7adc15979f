//! What one GraphQL request may cost: list fields are paid for by what they can return, the
//! whole request's rows, points and aggregate fields are bounded, and arguments too big to be
//! a real filter get a BAD_USER_INPUT that says so, never an internal error.

use serde_json::{Value, json};

use crate::helpers::{generic, spawn_app};

fn codes(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("none").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn aliases(count: usize, field: &str) -> String {
    let body: Vec<String> = (0..count).map(|n| format!("a{n}: {field}")).collect();
    format!("{{ {} }}", body.join(" "))
}

#[tokio::test]
async fn many_aliases_of_costly_fields_are_refused_with_a_clear_error() {
    let app = spawn_app().await;
    app.deliver(generic("cost-1", "succeeded")).await;
    let window = r#"from: "2020-01-01T00:00:00Z", to: "2030-01-01T00:00:00Z""#;

    // 200 x 10,000 rows: far over the request's 50,000.
    let lists = app
        .graphql(
            &aliases(200, &format!("deploymentList({window}, limit: 10000) {{ id }}")),
            json!({}),
        )
        .await;
    let refused = codes(&lists);
    assert!(!refused.is_empty(), "no field was refused");
    assert!(refused.iter().all(|code| code == "BAD_USER_INPUT"), "{refused:?}");
    assert!(
        lists.to_string().contains("split it into several requests"),
        "says what to do"
    );
    // Five of them fit.
    let five = app
        .graphql(
            &aliases(5, &format!("deploymentList({window}, limit: 10000) {{ id }}")),
            json!({}),
        )
        .await;
    assert!(five.get("errors").is_none(), "{five}");

    // 300 frequency series grouped by system, 600 boards: over the aggregate fields' budget.
    let series = app
        .graphql(
            &aliases(
                300,
                &format!("deploymentFrequency({window}, interval: DAY, groupBy: [SYSTEM]) {{ count }}"),
            ),
            json!({}),
        )
        .await;
    assert!(
        codes(&series).iter().any(|code| code == "BAD_USER_INPUT"),
        "{}",
        series["errors"]
    );
    let boards = app
        .graphql(&aliases(600, "board { environments { name } }"), json!({}))
        .await;
    assert!(codes(&boards).iter().any(|code| code == "BAD_USER_INPUT"));
    assert!(codes(&boards).iter().all(|code| code == "BAD_USER_INPUT"));
}

#[tokio::test]
async fn arguments_too_big_to_be_a_filter_are_bad_user_input() {
    let app = spawn_app().await;
    app.deliver(generic("arg-1", "succeeded")).await;
    let names: Vec<String> = (0..60_000).map(|n| format!("s{n}")).collect();
    let many = app
        .graphql(
            "query($systems: [String!]) { deployments(filter: { systems: $systems }) { totalCount } }",
            json!({ "systems": names }),
        )
        .await;
    assert_eq!(codes(&many), ["BAD_USER_INPUT"], "{}", many["errors"]);
    assert!(
        many["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1000")
    );

    let sha = "a".repeat(900 * 1024);
    let long = app
        .graphql(
            "query($sha: String) { deployments(filter: { commitSha: $sha }) { totalCount } }",
            json!({ "sha": sha }),
        )
        .await;
    assert_eq!(codes(&long), ["BAD_USER_INPUT"]);

    let grafana = app
        .graphql(
            r#"query($systems: [String!]) { deploymentList(from: "2020-01-01T00:00:00Z", to: "2030-01-01T00:00:00Z", systems: $systems) { id } }"#,
            json!({ "systems": (0..5_000).map(|n| format!("s{n}")).collect::<Vec<_>>() }),
        )
        .await;
    assert_eq!(codes(&grafana), ["BAD_USER_INPUT"]);
}
