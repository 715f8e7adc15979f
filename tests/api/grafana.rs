//! The Grafana-shaped fields and DORA metrics.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const DAY: i64 = 86_400_000;
/// 2026-01-05T00:00:00Z, a Monday.
const T0: i64 = 1_767_571_200_000;

async fn deliver(app: &TestApp, id: &str, system: &str, environment: &str, status: &str, at: i64) {
    app.deliver(json!({
        "id": id, "system": system, "environment": environment, "status": status,
        "startedAt": at - 60_000, "finishedAt": if status == "running" { Value::Null } else { json!(at) },
        "version": format!("1.0.{id}")
    }))
    .await;
}

async fn seed(app: &TestApp) {
    deliver(app, "1", "billing", "production", "succeeded", T0 + 3_600_000).await;
    deliver(app, "2", "billing", "production", "failed", T0 + DAY + 3_600_000).await;
    deliver(
        app,
        "3",
        "billing",
        "production",
        "succeeded",
        T0 + DAY + 3 * 3_600_000,
    )
    .await;
    deliver(app, "4", "search", "staging", "succeeded", T0 + 3 * DAY).await;
    deliver(
        app,
        "5",
        "search",
        "production",
        "running",
        T0 + 3 * DAY + 120_000,
    )
    .await;
}

#[tokio::test]
async fn deployment_list_takes_grafana_time_macros_and_all_values() {
    let app = spawn_app().await;
    seed(&app).await;
    let query = "query($from: Instant!, $to: Instant!, $systems: [String!]) {
        deploymentList(from: $from, to: $to, systems: $systems) { time system environment status version durationSeconds } }";
    for (from, to) in [
        (
            json!("2026-01-05T00:00:00.000Z"),
            json!("2026-01-12T00:00:00.000Z"),
        ),
        (json!(T0), json!(T0 + 7 * DAY)),
        (json!(T0.to_string()), json!((T0 + 7 * DAY).to_string())),
    ] {
        for systems in [
            json!(null),
            json!([]),
            json!("*"),
            json!(["$__all"]),
            json!(["billing", "search"]),
        ] {
            let data = app
                .data(query, json!({ "from": from, "to": to, "systems": systems }))
                .await;
            assert_eq!(
                data["deploymentList"].as_array().unwrap().len(),
                5,
                "{from} {to} {systems}"
            );
        }
    }
    let data = app
        .data(
            query,
            json!({ "from": T0, "to": T0 + 7 * DAY, "systems": "billing" }),
        )
        .await;
    let rows = data["deploymentList"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "a single value is a one-element list");
    assert_eq!(rows[0]["time"], "2026-01-06T03:00:00.000Z", "newest first");
    assert_eq!(rows[0]["durationSeconds"], 60.0);
}

#[tokio::test]
async fn frequency_is_long_format_ascending_with_empty_buckets_filled() {
    let app = spawn_app().await;
    seed(&app).await;
    let data = app
        .data(
            "{ deploymentFrequency(from: \"2026-01-05T00:00:00Z\", to: \"2026-01-08T23:59:59Z\", interval: DAY, groupBy: [SYSTEM]) { time count system } }",
            json!({}),
        )
        .await;
    let points: Vec<(String, i64, String)> = data["deploymentFrequency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["time"].as_str().unwrap()[..10].to_string(),
                p["count"].as_i64().unwrap(),
                p["system"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, i64, String)> = [
        ("2026-01-05", 1, "billing"),
        ("2026-01-05", 0, "search"),
        ("2026-01-06", 2, "billing"),
        ("2026-01-06", 0, "search"),
        ("2026-01-07", 0, "billing"),
        ("2026-01-07", 0, "search"),
        ("2026-01-08", 0, "billing"),
        ("2026-01-08", 2, "search"),
    ]
    .iter()
    .map(|(d, c, s)| (d.to_string(), *c, s.to_string()))
    .collect();
    assert_eq!(points, expected);
    // Totals equal counting the rows.
    let total: i64 = points.iter().map(|p| p.1).sum();
    assert_eq!(total, 5);

    // UTC-05:00: the 01:00Z and 03:00Z deployments of the 6th belong to the 5th locally.
    let local = app
        .data(
            "{ deploymentFrequency(from: \"2026-01-05T05:00:00Z\", to: \"2026-01-07T04:59:59Z\", interval: DAY, utcOffsetMinutes: -300) { time count } }",
            json!({}),
        )
        .await;
    let local: Vec<(String, i64)> = local["deploymentFrequency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["time"].as_str().unwrap().to_string(),
                p["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        local,
        [
            ("2026-01-05T05:00:00.000Z".to_string(), 2),
            ("2026-01-06T05:00:00.000Z".to_string(), 0)
        ]
    );

    let weekly = app
        .data("{ deploymentFrequency(from: 1767571200000, to: 1768175999999, interval: WEEK, groupBy: [STATUS]) { time count status } }", json!({}))
        .await;
    let mut statuses: Vec<String> = weekly["deploymentFrequency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["status"].as_str().unwrap(), p["count"]))
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["FAILED 1", "RUNNING 1", "SUCCEEDED 3"]);
    let too_many = app
        .graphql(
            "{ deploymentFrequency(from: 0, to: 1767571200000, interval: HOUR) { count } }",
            json!({}),
        )
        .await;
    assert!(
        too_many["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("wider interval"),
        "{too_many}"
    );

    // Under the bucket limit, but too many points once every group gets every bucket.
    for i in 0..11 {
        deliver(
            &app,
            &format!("p{i}"),
            &format!("system-{i}"),
            "production",
            "succeeded",
            T0,
        )
        .await;
    }
    let hourly = "query($groupBy: [GroupBy!]) { deploymentFrequency(from: 1704067200000, to: 1767916800000, interval: HOUR, groupBy: $groupBy) { time count } }";
    let too_many = app
        .graphql(hourly, json!({ "groupBy": ["SYSTEM", "STATUS"] }))
        .await;
    assert_eq!(
        too_many["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{too_many}"
    );
    let message = too_many["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("17737 buckets x 15 groups"), "{message}");
    // One group for the same range is fine.
    let one = app.data(hourly, json!({ "groupBy": [] })).await;
    let points = one["deploymentFrequency"].as_array().unwrap();
    assert_eq!(points.len(), 17737);
    // Built a slice at a time: still every hour once, in order, every deployment counted.
    let times: Vec<&str> = points.iter().map(|p| p["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
    assert_eq!(times[0], "2024-01-01T00:00:00.000Z");
    assert_eq!(times[17736], "2026-01-09T00:00:00.000Z");
    let total: i64 = points.iter().map(|p| p["count"].as_i64().unwrap()).sum();
    assert_eq!(total, 16, "5 seeded + 11");
}

#[tokio::test]
async fn annotations_and_template_variables() {
    let app = spawn_app().await;
    seed(&app).await;
    let data = app
        .data(
            "{ deploymentAnnotations(from: \"2026-01-01T00:00:00Z\", to: \"2026-02-01T00:00:00Z\") { time timeEnd title text tags }
               systemNames environmentNames all: environmentNames(systems: \"*\") billing: environmentNames(systems: [\"billing\"]) }",
            json!({}),
        )
        .await;
    let annotations = data["deploymentAnnotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 5);
    let running = &annotations[0];
    assert_eq!(running["timeEnd"], Value::Null, "in progress: no end");
    assert_eq!(running["title"], "search 1.0.5 → production (running)");
    assert_eq!(running["tags"], "shiplog,search,production,running,generic");
    assert_eq!(annotations[1]["time"], "2026-01-07T23:59:00.000Z");
    assert_eq!(annotations[1]["timeEnd"], "2026-01-08T00:00:00.000Z");
    assert_eq!(data["systemNames"], json!(["billing", "search"]));
    assert_eq!(data["environmentNames"], json!(["production", "staging"]));
    assert_eq!(data["all"], data["environmentNames"]);
    assert_eq!(data["billing"], json!(["production"]));
}

#[tokio::test]
async fn dora_metrics_follow_their_definitions() {
    let app = spawn_app().await;
    seed(&app).await;
    // A commit time makes lead time measurable for one deployment: 2 hours before it.
    app.deliver(
        json!({ "id": "6", "system": "billing", "environment": "prod", "status": "succeeded",
        "finishedAt": T0 + 4 * DAY, "committedAt": T0 + 4 * DAY - 7_200_000 }),
    )
    .await;
    let data = app
        .data(
            "{ doraMetrics(from: 1767571200000, to: 1768176000000) { system environment deployments deploymentDays
                 deploymentsPerDay succeededDeployments failedDeployments changeFailureRate recoveries
                 meanTimeToRecoverySeconds medianTimeToRecoverySeconds medianLeadTimeSeconds leadTimeSampleSize } }",
            json!({}),
        )
        .await;
    let rows = data["doraMetrics"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        1,
        "only billing deployed to production and finished: {rows:?}"
    );
    let billing = &rows[0];
    assert_eq!(billing["system"], "billing");
    assert_eq!(billing["environment"], Value::Null);
    assert_eq!(billing["deployments"], 4);
    assert_eq!(billing["succeededDeployments"], 3);
    assert_eq!(billing["failedDeployments"], 1);
    assert_eq!(billing["changeFailureRate"], 0.25);
    assert_eq!(billing["deploymentDays"], 3);
    assert_eq!(billing["deploymentsPerDay"], 3.0 / 7.0);
    assert_eq!(billing["recoveries"], 1);
    assert_eq!(billing["meanTimeToRecoverySeconds"], 7200.0);
    assert_eq!(billing["medianLeadTimeSeconds"], 7200.0);
    assert_eq!(billing["leadTimeSampleSize"], 1);

    let staging = app
        .data("{ doraMetrics(from: 1767571200000, to: 1768176000000, environments: [\"staging\"], groupBy: [SYSTEM, ENVIRONMENT]) { system environment deployments changeFailureRate } }", json!({}))
        .await;
    assert_eq!(
        staging["doraMetrics"],
        json!([{ "system": "search", "environment": "staging", "deployments": 1, "changeFailureRate": 0.0 }])
    );
}

#[tokio::test]
async fn long_lists_answer_plain_fields_exactly_as_the_generic_executor_does() {
    let app = spawn_app().await;
    seed(&app).await;
    app.deliver(
        json!({ "id": "full", "system": "search", "environment": "staging", "status": "succeeded",
        "startedAt": T0 + 3 * DAY, "finishedAt": T0 + 3 * DAY + 1_500, "commitSha": "abc123",
        "actor": "ada", "url": "https://ci.example.com/full" }),
    )
    .await;
    let window = r#"from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z""#;
    for (field, arguments, fields) in [
        (
            "deploymentList",
            window.to_string(),
            "time id system environment status rawStatus source version commitSha startedAt finishedAt durationSeconds actor url __typename",
        ),
        (
            "deploymentFrequency",
            format!("{window}, groupBy: [SYSTEM, ENVIRONMENT, STATUS, SOURCE]"),
            "time count system environment status source __typename",
        ),
        (
            "deploymentAnnotations",
            window.to_string(),
            "time timeEnd title text tags __typename",
        ),
    ] {
        // Plain fields (built directly) against the same fields behind an inline fragment
        // (async-graphql's executor), byte for byte, aliases included.
        let typename = match field {
            "deploymentList" => "DeploymentRow",
            "deploymentFrequency" => "FrequencyPoint",
            _ => "DeploymentAnnotation",
        };
        let direct = app
            .body(&format!("{{ {field}({arguments}) {{ {fields} a: time }} }}"))
            .await;
        let generic = app
            .body(&format!(
                "{{ {field}({arguments}) {{ ... on {typename} {{ {fields} a: time }} }} }}"
            ))
            .await;
        assert_eq!(direct, generic, "{field}");
        let answer: Value = serde_json::from_str(&direct).unwrap();
        let items = answer["data"][field].as_array().unwrap();
        assert!(items.len() >= 3, "{field}: {direct}");
        assert_eq!(items[0]["__typename"], typename);
        assert_eq!(items[0]["a"], items[0]["time"]);
        // Every field is set somewhere (null-only fields would compare trivially).
        for name in fields.split_whitespace() {
            assert!(
                items.iter().any(|item| !item[name].is_null()),
                "{field}.{name} never set: {direct}"
            );
        }
    }
}
