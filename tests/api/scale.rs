//! Seeded data: the deployments lists keep using their indexes (a plan check on whichever
//! database the suite runs on), and the seeder writes what it says.

use serde_json::json;
use shiplog::seed::{SeedOptions, environment_name, system_name};
use shiplog::store::{DeploymentFilter, PageRequest, Position};

use crate::helpers::spawn_app;

fn first_page() -> PageRequest {
    PageRequest {
        after: None,
        before: None,
        limit: 20,
        from_end: false,
    }
}

/// A plan uses an index for `deployments` and never sorts or scans the whole table.
fn assert_indexed(plan: &str, what: &str) {
    let lower = plan.to_lowercase();
    assert!(lower.contains("index"), "{what}: no index in the plan:\n{plan}");
    assert!(
        !lower.contains("seq scan on deployments"),
        "{what}: full scan:\n{plan}"
    );
    assert!(
        !lower.contains("temp b-tree"),
        "{what}: sorts instead of reading in index order:\n{plan}"
    );
    assert!(
        !lower.contains("sort key") && !lower.contains("-> sort"),
        "{what}: sorts:\n{plan}"
    );
    // SQLite: "SCAN deployments" without an index is a full scan.
    for line in lower.lines() {
        if line.contains("scan deployments") && !line.contains("seq scan") {
            assert!(line.contains("using"), "{what}: full scan:\n{plan}");
        }
    }
}

#[tokio::test]
async fn filtered_deployment_lists_use_indexes_on_a_seeded_database() {
    let app = spawn_app().await;
    let options = SeedOptions {
        deployments: 30_000,
        systems: 50,
        environments: 6,
        days: 365,
        seed: 7,
    };
    let written = shiplog::seed::seed(&app.store, &options).await.unwrap();
    assert_eq!(written, 30_000);

    let now = shiplog::domain::now_millis();
    let week = 7 * 86_400_000;
    let system = DeploymentFilter {
        systems: vec![system_name(3)],
        ..DeploymentFilter::default()
    };
    let environment = DeploymentFilter {
        environments: vec![environment_name(0)],
        ..DeploymentFilter::default()
    };
    let window = DeploymentFilter {
        systems: vec![system_name(3)],
        environments: vec![environment_name(0)],
        from: Some(now - 60 * week),
        to: Some(now - 59 * week),
        ..DeploymentFilter::default()
    };
    let time_only = DeploymentFilter {
        from: Some(now - 30 * week),
        to: Some(now - 29 * week),
        ..DeploymentFilter::default()
    };
    // A deep page: the cursor of a row far down the list.
    let deep = app
        .store
        .deployments_page(
            &system,
            PageRequest {
                limit: 400,
                ..first_page()
            },
        )
        .await
        .unwrap();
    let cursor = Position::from(deep.rows.last().unwrap());
    let cases = [
        ("newest", DeploymentFilter::default(), first_page()),
        ("one system", system.clone(), first_page()),
        ("one environment", environment, first_page()),
        ("system + environment + 7 days", window, first_page()),
        ("a time window", time_only, first_page()),
        (
            "a deep page of one system",
            system.clone(),
            PageRequest {
                after: Some(cursor),
                ..first_page()
            },
        ),
        (
            "the oldest page (last)",
            system,
            PageRequest {
                from_end: true,
                ..first_page()
            },
        ),
    ];
    for (what, filter, page) in cases {
        let plan = app.store.explain_page(&filter, page).await.unwrap();
        assert_indexed(&plan, what);
    }
}

#[tokio::test]
async fn seeded_deployments_are_spread_over_systems_environments_and_the_year() {
    let app = spawn_app().await;
    let options = SeedOptions {
        deployments: 2_000,
        systems: 5,
        environments: 3,
        days: 30,
        seed: 1,
    };
    shiplog::seed::seed(&app.store, &options).await.unwrap();
    let data = app
        .data(
            "{ systems { name } environments { name } deployments(first: 1) { totalCount edges { node { events { status } } } }
               failed: deployments(filter: { statuses: [FAILED] }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(data["systems"].as_array().unwrap().len(), 5);
    assert_eq!(data["environments"].as_array().unwrap().len(), 3);
    assert_eq!(data["deployments"]["totalCount"], 2000);
    assert_eq!(
        data["deployments"]["edges"][0]["node"]["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let failed = data["failed"]["totalCount"].as_u64().unwrap();
    assert!((100..=300).contains(&failed), "about 10% fail: {failed}");
    let mut per_system = Vec::new();
    for i in 0..5 {
        let count = app
            .data(
                "query($s: [String!]) { deployments(filter: { systems: $s }) { totalCount } }",
                json!({ "s": [system_name(i)] }),
            )
            .await["deployments"]["totalCount"]
            .as_u64()
            .unwrap();
        per_system.push(count);
    }
    assert_eq!(per_system.iter().sum::<u64>(), 2000);
    assert!(per_system.iter().all(|c| *c > 250), "{per_system:?}");
}
