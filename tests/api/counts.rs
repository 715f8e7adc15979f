//! The per-day rollup behind counts and frequency: kept at ingest, it must always give the
//! same answers as counting the deployment rows, also after deployments move between days,
//! statuses, systems and environments.

use serde_json::{Value, json};
use shiplog::domain::DeploymentStatus;
use shiplog::store::DeploymentFilter;
use shiplog::store::analytics::{Dimension, Width};

use crate::helpers::{TestApp, spawn_app};

const DAY: i64 = 86_400_000;
/// 2026-01-05T00:00:00Z, a Monday.
const T0: i64 = 1_767_571_200_000;

/// A small deterministic generator (no extra crate, the same sequence on every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const SYSTEMS: [&str; 3] = ["billing", "search", "checkout"];
const ENVIRONMENTS: [&str; 3] = ["production", "staging", "development"];
const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// 160 deliveries for 40 deployments: each is seen several times, moving forward in status
/// and time (across midnight often) and sometimes to another system or environment.
async fn ingest(app: &TestApp, rng: &mut Lcg) {
    for round in 0..4 {
        for id in 0..40 {
            let system = SYSTEMS[rng.below(3) as usize];
            let environment = ENVIRONMENTS[rng.below(3) as usize];
            let status = STATUSES[(round + rng.below(2) as usize).min(4)];
            let started = T0 + (id as i64 % 6) * DAY + rng.below(DAY as u64) as i64;
            let mut body = json!({
                "id": format!("d-{id}"), "system": system, "environment": environment,
                "status": status, "startedAt": started,
            });
            if matches!(status, "succeeded" | "failed" | "cancelled") {
                body["finishedAt"] = json!(started + rng.below(2 * DAY as u64) as i64);
            }
            app.deliver(body).await;
        }
    }
}

fn filters(rng: &mut Lcg) -> Vec<DeploymentFilter> {
    let mut out = vec![DeploymentFilter::default()];
    for _ in 0..60 {
        let pick = |rng: &mut Lcg, list: &[&str]| -> Vec<String> {
            match rng.below(3) {
                0 => Vec::new(),
                1 => vec![list[rng.below(list.len() as u64) as usize].to_string()],
                _ => list[..2].iter().map(|s| s.to_string()).collect(),
            }
        };
        // Bounds: open, on midnight, the last millisecond of a day, or anywhere.
        let bound = |rng: &mut Lcg| -> Option<i64> {
            let day = T0 + (rng.below(9) as i64 - 1) * DAY;
            match rng.below(4) {
                0 => None,
                1 => Some(day),
                2 => Some(day - 1),
                _ => Some(day + rng.below(DAY as u64) as i64),
            }
        };
        let (a, b) = (bound(rng), bound(rng));
        let (from, to) = match (a, b) {
            (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
            other => other,
        };
        let statuses = match rng.below(3) {
            0 => Vec::new(),
            1 => vec![DeploymentStatus::Succeeded],
            _ => vec![DeploymentStatus::Succeeded, DeploymentStatus::Failed],
        };
        out.push(DeploymentFilter {
            systems: pick(rng, &SYSTEMS),
            environments: pick(rng, &ENVIRONMENTS),
            statuses,
            from,
            to,
            ..DeploymentFilter::default()
        });
    }
    // A name nobody deployed, and a source filter (which the rollup cannot answer).
    out.push(DeploymentFilter {
        systems: vec!["nobody".into()],
        ..DeploymentFilter::default()
    });
    out.push(DeploymentFilter {
        sources: vec!["generic".into()],
        from: Some(T0 + DAY / 2),
        ..DeploymentFilter::default()
    });
    out
}

#[tokio::test]
async fn rollup_counts_equal_counting_the_rows() {
    let app = spawn_app().await;
    let mut rng = Lcg(7);
    ingest(&app, &mut rng).await;
    let store = &app.store;

    // What the writer kept equals a rebuild from the rows.
    let kept = store.count_rollup().await.unwrap();
    store.rebuild_counts().await.unwrap();
    let rebuilt = store.count_rollup().await.unwrap();
    assert!(!kept.is_empty());
    assert_eq!(kept, rebuilt, "the rollup kept at ingest differs from a rebuild");

    let total = store.count_rows(&DeploymentFilter::default()).await.unwrap();
    assert_eq!(total, 40);
    let mut nonzero = 0;
    for filter in filters(&mut rng) {
        let rows = store.count_rows(&filter).await.unwrap();
        let counted = store.count_deployments(&filter).await.unwrap();
        assert_eq!(counted, rows, "count for {filter:?}");
        nonzero += usize::from(rows > 0);
        for width in [Width::Day, Width::Week] {
            for dimensions in [
                vec![],
                vec![Dimension::System],
                vec![Dimension::Environment, Dimension::Status],
                vec![Dimension::System, Dimension::Environment],
            ] {
                let buckets = store.count_buckets(&filter, width, 0, &dimensions).await.unwrap();
                let reference = store
                    .count_bucket_rows(&filter, width, 0, &dimensions)
                    .await
                    .unwrap();
                assert_eq!(buckets, reference, "{width:?} {dimensions:?} for {filter:?}");
            }
        }
    }
    assert!(
        nonzero > 20,
        "too few filters matched anything ({nonzero}): the comparison proves little"
    );
    app.stop().await;
}

#[tokio::test]
async fn counts_per_environment_over_graphql_match_the_rows() {
    let app = spawn_app().await;
    let mut rng = Lcg(11);
    ingest(&app, &mut rng).await;
    // The comparison's query (c): totalCount per environment over a window with a mid-day end.
    let (from, to) = (T0 + DAY, T0 + 4 * DAY + 3_600_000);
    let query = "query($from: Instant!, $to: Instant!) {
        environments { name deployments(filter: { from: $from, to: $to }) { totalCount } }
    }";
    let mut costs = Vec::new();
    let mut data = Value::Null;
    for _ in 0..4 {
        app.settle().await;
        let before = app.store.statements();
        data = app.data(query, json!({ "from": from, "to": to })).await;
        costs.push(app.store.statements() - before);
    }
    // The environments, then every environment's count in one grouped statement (the first
    // time also reads the names' ids). The counter is the whole process's, so a background
    // poll can land in one measurement: the fewest of the warm runs is the request's cost.
    let warm = costs[1..].iter().min().copied();
    assert_eq!(warm, Some(2), "statements for counts per environment: {costs:?}");
    let environments = data["environments"].as_array().unwrap();
    assert_eq!(environments.len(), 3);
    let mut sum = 0;
    for environment in environments {
        let name = environment["name"].as_str().unwrap();
        let filter = DeploymentFilter {
            environments: vec![name.to_string()],
            from: Some(from),
            to: Some(to),
            ..DeploymentFilter::default()
        };
        let rows = app.store.count_rows(&filter).await.unwrap();
        assert_eq!(
            environment["deployments"]["totalCount"],
            Value::from(rows),
            "{name}"
        );
        sum += rows;
    }
    assert!(sum > 0);
    app.stop().await;
}
