//! Queries: filters, the Instant scalar, GET queries, errors and the statement budget.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const IDS: &str = "query($filter: DeploymentFilter) { deployments(filter: $filter, first: 100) {
    edges { node { externalId } } } }";

async fn ids(app: &TestApp, filter: Value) -> Vec<String> {
    let data = app.data(IDS, json!({ "filter": filter })).await;
    let mut ids: Vec<String> = data["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["externalId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Four deployments that differ in every filterable way.
async fn seed(app: &TestApp) {
    let rows = [
        (
            "a",
            "billing",
            "production",
            "succeeded",
            "2026-01-10T00:00:00Z",
            "aaaa1111",
        ),
        (
            "b",
            "billing",
            "staging",
            "failed",
            "2026-02-10T00:00:00Z",
            "bbbb2222",
        ),
        (
            "c",
            "search",
            "production",
            "running",
            "2026-03-10T00:00:00Z",
            "cccc3333",
        ),
        (
            "d",
            "search",
            "dev",
            "cancelled",
            "2026-04-10T00:00:00Z",
            "aaaa4444",
        ),
    ];
    for (id, system, environment, status, at, sha) in rows {
        app.deliver(json!({
            "id": id, "system": system, "environment": environment, "status": status,
            "startedAt": at, "finishedAt": if status == "running" { Value::Null } else { json!(at) },
            "commitSha": sha
        }))
        .await;
    }
}

#[tokio::test]
async fn every_filter_narrows_the_deployments() {
    let app = spawn_app().await;
    seed(&app).await;
    let cases = [
        (json!(null), vec!["a", "b", "c", "d"]),
        (json!({}), vec!["a", "b", "c", "d"]),
        (json!({ "systems": [] }), vec!["a", "b", "c", "d"]),
        (json!({ "systems": ["billing"] }), vec!["a", "b"]),
        (
            json!({ "systems": ["billing", "search"] }),
            vec!["a", "b", "c", "d"],
        ),
        (json!({ "systems": ["nope"] }), vec![]),
        (json!({ "environments": ["production"] }), vec!["a", "c"]),
        (json!({ "environments": ["development"] }), vec!["d"]),
        (json!({ "statuses": ["FAILED", "CANCELLED"] }), vec!["b", "d"]),
        (json!({ "sources": ["generic"] }), vec!["a", "b", "c", "d"]),
        (json!({ "sources": ["gitlab"] }), vec![]),
        (json!({ "from": "2026-02-01T00:00:00Z" }), vec!["b", "c", "d"]),
        (json!({ "to": "2026-02-10T00:00:00Z" }), vec!["a", "b"]),
        (
            json!({ "from": 1_767_225_600_000_i64, "to": "1772323200000" }),
            vec!["a", "b"],
        ),
        (json!({ "commitSha": "aaaa" }), vec!["a", "d"]),
        (json!({ "commitSha": "AAAA1111" }), vec!["a"]),
        (
            json!({ "systems": ["search"], "environments": ["production"], "statuses": ["RUNNING"] }),
            vec!["c"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(ids(&app, filter.clone()).await, expected, "filter {filter}");
    }
}

#[tokio::test]
async fn systems_and_environments_answer_their_own_questions() {
    let app = spawn_app().await;
    seed(&app).await;
    let data = app
        .data(
            r#"{ systems { name environments { name } }
                 system(name: "search") { name lastDeployment { externalId }
                     prod: lastDeployment(environment: "production") { externalId }
                     deployments(first: 10) { totalCount edges { node { externalId } } } }
                 environments { name systems { name } }
                 environment(name: "production") { deployments { totalCount } }
                 missing: system(name: "nope") { name } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["systems"][0]["name"], "billing");
    assert_eq!(
        data["systems"][0]["environments"],
        json!([{ "name": "production" }, { "name": "staging" }])
    );
    assert_eq!(data["system"]["lastDeployment"]["externalId"], "d");
    assert_eq!(data["system"]["prod"]["externalId"], "c");
    assert_eq!(data["system"]["deployments"]["totalCount"], 2);
    assert_eq!(data["environment"]["deployments"]["totalCount"], 2);
    assert_eq!(data["missing"], Value::Null);
    let production = data["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "production")
        .unwrap();
    assert_eq!(
        production["systems"],
        json!([{ "name": "billing" }, { "name": "search" }])
    );
}

#[tokio::test]
async fn instants_come_in_as_iso_or_epoch_milliseconds_and_go_out_as_utc() {
    let app = spawn_app().await;
    seed(&app).await;
    for from in [
        json!("2026-03-10T01:00:00+01:00"),
        json!(1_773_100_800_000_i64),
        json!("1773100800000"),
    ] {
        assert_eq!(
            ids(&app, json!({ "from": from })).await,
            vec!["c", "d"],
            "from {from}"
        );
    }
    let bad = app
        .graphql(IDS, json!({ "filter": { "from": "next week" } }))
        .await;
    let message = bad["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("next week") && message.contains("ISO-8601"),
        "{bad}"
    );
}

#[tokio::test]
async fn a_query_over_get_works_and_one_deployment_is_found_by_id() {
    let app = spawn_app().await;
    let answer = app.deliver(crate::helpers::generic("g-1", "running")).await;
    let id = answer["deploymentIds"][0].as_i64().unwrap();
    let response: Value = app
        .client
        .get(app.url("/graphql"))
        .query(&[(
            "query",
            format!("{{ deployment(id: \"{id}\") {{ externalId status }} }}"),
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        response["data"]["deployment"],
        json!({ "externalId": "g-1", "status": "RUNNING" })
    );
    let bad = app.graphql("{ deployment(id: \"abc\") { id } }", json!({})).await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_page_of_100_with_nested_fields_costs_a_constant_number_of_statements() {
    let app = spawn_app().await;
    let posts = (0..120).map(|i| {
        let mut body = crate::helpers::generic(&format!("s-{i}"), "succeeded");
        body["system"] = json!(format!("system-{}", i % 7));
        body["environment"] = json!(["production", "staging", "dev"][i % 3]);
        let app = &app;
        async move { app.deliver(body).await }
    });
    futures_util::future::join_all(posts).await;
    let query = "query($n: Int) { deployments(first: $n) { edges { node { id system { name }
        environment { name } events { status deployment { id } } } } } }";
    // The first page reads the names of systems and environments; later pages find them in
    // the store's id cache (ids are never reused, rows never renamed). The statement counter is
    // the whole process's, so a background poll can land in one measurement: each size is
    // measured three times and the fewest counts.
    app.data(query, json!({ "n": 100 })).await;
    let mut costs = Vec::new();
    for n in [10, 100] {
        let mut fewest = u64::MAX;
        for _ in 0..3 {
            app.settle().await;
            let before = app.store.statements();
            let data = app.data(query, json!({ "n": n })).await;
            fewest = fewest.min(app.store.statements() - before);
            assert_eq!(data["deployments"]["edges"].as_array().unwrap().len(), n as usize);
        }
        costs.push(fewest);
    }
    assert_eq!(
        costs[0], costs[1],
        "statements for 10 vs 100 deployments: {costs:?}"
    );
    assert!(
        costs[1] <= 2,
        "page + events once the names are cached, got {costs:?}"
    );
}

#[tokio::test]
async fn asking_for_too_big_a_page_is_a_clear_error() {
    let app = spawn_app().await;
    let response = app
        .graphql("{ deployments(first: 5000) { edges { cursor } } }", json!({}))
        .await;
    assert!(
        response["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 500"),
        "{response}"
    );
    let both = app
        .graphql(
            "{ deployments(first: 5, last: 5) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert!(
        both["errors"][0]["message"].as_str().unwrap().contains("either"),
        "{both}"
    );
}

/// Every field of `Deployment` a list can answer without the generic executor.
const EVERY_FIELD: &str = "id source externalId system { id name __typename }
    environment { id name __typename } status rawStatus rawSystem rawEnvironment environmentTier
    tenant startedAt finishedAt durationSeconds deployedAt commitSha ref version url actor
    firstSeenAt updatedAt __typename";

#[tokio::test]
async fn lists_answer_plain_fields_exactly_as_the_generic_executor_does() {
    let app = spawn_app().await;
    // Real deliveries from every source, so each optional field is both set and null somewhere.
    for (source, fixture) in [
        ("generic", "succeeded.json"),
        ("gitlab", "deployment_success.json"),
        ("jenkins", "deploy_completed_failure.json"),
        ("heroku", "release_update_succeeded.real-redacted.json"),
        ("octopus", "deployment_started_tenant.derived.json"),
    ] {
        crate::contract::send_fixture(&app, source, fixture).await;
    }
    app.deliver(
        json!({ "id": "r", "system": "billing", "environment": "staging", "status": "running",
        "startedAt": 1_700_000_000_123_i64, "commitSha": "cccc" }),
    )
    .await;
    app.deliver(
        json!({ "id": "f", "system": "billing", "environment": "production", "status": "failed",
        "startedAt": "2026-01-10T00:00:00Z", "finishedAt": "2026-01-10T00:00:01.5Z", "version": "1.2",
        "url": "https://ci.example.com/f", "actor": "ada", "ref": "main" }),
    )
    .await;

    // Plain fields (the direct path), then the same fields behind an inline fragment and with
    // a repeated response key (both answered by async-graphql's own executor).
    let direct = format!("{{ deployments(first: 50) {{ edges {{ node {{ {EVERY_FIELD} }} }} }} }}");
    let generic = format!(
        "{{ deployments(first: 50) {{ edges {{ node {{ ... on Deployment {{ {EVERY_FIELD} }} }} }} }} }}"
    );
    let fast = app.body(&direct).await;
    assert_eq!(fast, app.body(&generic).await);
    let answer: Value = serde_json::from_str(&fast).unwrap();
    let nodes: Vec<&Value> = answer["data"]["deployments"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| &edge["node"])
        .collect();
    assert_eq!(nodes.len(), 7, "{fast}");
    // Each optional field is set on some deployment and null on another.
    for field in [
        "environmentTier",
        "tenant",
        "finishedAt",
        "durationSeconds",
        "ref",
        "version",
        "url",
        "actor",
    ] {
        assert!(
            nodes.iter().any(|n| !n[field].is_null()),
            "{field} never set: {fast}"
        );
        assert!(
            nodes.iter().any(|n| n[field].is_null()),
            "{field} never null: {fast}"
        );
    }
    let failed = nodes.iter().find(|n| n["externalId"] == "f").unwrap();
    assert_eq!(failed["durationSeconds"], json!(1.5));
    assert_eq!(failed["finishedAt"], "2026-01-10T00:00:01.500Z");
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["system"]["__typename"], "System");

    // Aliases, and the same key asked twice, give what the generic executor gives.
    let aliased = "{ deployments(first: 50) { nodes { key: externalId when: deployedAt
        app: system { label: name } env: environment { name } status status } } }";
    let through_fragment = "{ deployments(first: 50) { nodes { ... on Deployment { key: externalId
        when: deployedAt app: system { label: name } env: environment { name } status status } } } }";
    let fast = app.body(aliased).await;
    assert!(
        fast.contains(r#""key":"f","when":"2026-01-10T00:00:01.500Z","app":{"label":"billing"}"#),
        "{fast}"
    );
    assert_eq!(fast, app.body(through_fragment).await);

    // Every field skipped: null objects, as async-graphql answers them.
    let skipped = "{ deployments(first: 2) { nodes { id @skip(if: true) } } }";
    assert_eq!(
        app.body(skipped).await,
        r#"{"data":{"deployments":{"nodes":[null,null]}}}"#
    );
    let skipped_inner = "{ deployments(first: 1) { nodes { id system { name @skip(if: true) } } } }";
    let through_fragment =
        "{ deployments(first: 1) { nodes { ... on Deployment { id system { name @skip(if: true) } } } } }";
    assert_eq!(app.body(skipped_inner).await, app.body(through_fragment).await);
}
