//! Several shiplog replicas on one PostgreSQL database: live events cross replicas through
//! LISTEN/NOTIFY, and every replica serves the same data. (On SQLite there is one process
//! per database file, so these tests only run when the suite runs on PostgreSQL.)

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestDb, generic, spawn_app_on};

const EVENTS: &str = "subscription { deploymentEvents { status deployment { externalId system { name } } } }";

#[tokio::test]
async fn a_webhook_accepted_by_one_replica_reaches_a_subscriber_of_another() {
    let db = std::sync::Arc::new(TestDb::new().await);
    if !db.is_postgres() {
        eprintln!("skipped: replicas share a PostgreSQL database (set SHIPLOG_TEST_DATABASE_URL)");
        return;
    }
    let (a, b) = tokio::join!(spawn_app_on(db.clone(), |_| {}), spawn_app_on(db.clone(), |_| {}));
    let mut on_b = b.subscribe(EVENTS, json!({})).await;
    let mut on_a = a.subscribe(EVENTS, json!({})).await;
    // Let B's listener connect before the first notification.
    tokio::time::sleep(Duration::from_millis(300)).await;

    for i in 0..5 {
        let sent = Instant::now();
        a.deliver(generic(&format!("r-{i}"), "succeeded")).await;
        let event = on_b
            .next_event(Duration::from_secs(5))
            .await
            .expect("the event on replica B");
        let latency = sent.elapsed();
        assert_eq!(
            event["deploymentEvents"]["deployment"]["externalId"],
            format!("r-{i}")
        );
        assert!(
            latency < Duration::from_secs(1),
            "crossed replicas in {latency:?}"
        );
        let local = on_a
            .next_event(Duration::from_secs(5))
            .await
            .expect("the event on replica A");
        assert_eq!(
            local["deploymentEvents"]["deployment"]["externalId"],
            format!("r-{i}")
        );
    }
    assert!(
        on_b.next_event(Duration::from_millis(300)).await.is_none(),
        "each event arrives once"
    );

    let query =
        "{ deployments(first: 50) { totalCount edges { node { id externalId status } } } systems { name } }";
    assert_eq!(a.data(query, json!({})).await, b.data(query, json!({})).await);
}

#[tokio::test]
async fn replicas_starting_together_migrate_once_and_agree_on_the_generated_secret() {
    let db = std::sync::Arc::new(TestDb::new().await);
    if !db.is_postgres() {
        eprintln!("skipped: replicas share a PostgreSQL database (set SHIPLOG_TEST_DATABASE_URL)");
        return;
    }
    let no_secret = |settings: &mut shiplog::config::Settings| {
        settings.secrets.remove("generic");
    };
    let (a, b, c) = tokio::join!(
        spawn_app_on(db.clone(), no_secret),
        spawn_app_on(db.clone(), no_secret),
        spawn_app_on(db.clone(), no_secret)
    );
    let secrets = [
        a.store.setting("secret.generic").await.unwrap(),
        b.store.setting("secret.generic").await.unwrap(),
        c.store.setting("secret.generic").await.unwrap(),
    ];
    assert!(secrets[0].is_some());
    assert!(secrets.iter().all(|s| *s == secrets[0]));
    let secret = secrets[0].clone().unwrap();
    for app in [&a, &b, &c] {
        let answer = app
            .client
            .post(app.url("/webhooks/generic"))
            .bearer_auth(&secret)
            .json(&generic("m-1", "running"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
}

#[tokio::test]
async fn a_listener_that_lost_its_connection_catches_up_on_what_it_missed() {
    let db = std::sync::Arc::new(TestDb::new().await);
    if !db.is_postgres() {
        eprintln!("skipped: replicas share a PostgreSQL database (set SHIPLOG_TEST_DATABASE_URL)");
        return;
    }
    let (a, b) = tokio::join!(spawn_app_on(db.clone(), |_| {}), spawn_app_on(db.clone(), |_| {}));
    let mut on_b = b.subscribe(EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Cut every LISTEN connection of this database (both replicas' listeners), as a network
    // blip or a failover would.
    let admin = sea_orm::Database::connect(db.url()).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .await
    .unwrap();
    a.deliver(generic("gap-1", "succeeded")).await;
    let event = on_b
        .next_event(Duration::from_secs(10))
        .await
        .expect("the event, by catch-up or notification");
    assert_eq!(event["deploymentEvents"]["deployment"]["externalId"], "gap-1");
    assert!(
        on_b.next_event(Duration::from_millis(500)).await.is_none(),
        "and only once"
    );
    let _ = admin.close().await;
}
