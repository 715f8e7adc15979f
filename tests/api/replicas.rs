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

#[tokio::test]
async fn a_replica_that_cannot_read_for_a_while_still_delivers_every_event_once() {
    let db = std::sync::Arc::new(TestDb::new().await);
    if !db.is_postgres() {
        eprintln!("skipped: replicas share a PostgreSQL database (set SHIPLOG_TEST_DATABASE_URL)");
        return;
    }
    let a = spawn_app_on(db.clone(), |_| {}).await;
    // B connects as a role of its own, so the test can take its reads away and give them back
    // (as a failover to a standby that is not yet readable, or a revoked grant, would).
    let role = format!("shiplog_b_{}", uuid::Uuid::new_v4().simple());
    let admin = sea_orm::Database::connect(db.url()).await.unwrap();
    let run = |sql: String| {
        let admin = admin.clone();
        async move {
            sea_orm::ConnectionTrait::execute_unprepared(&admin, &sql)
                .await
                .unwrap()
        }
    };
    run(format!(
        "CREATE ROLE {role} LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}; GRANT ALL ON SCHEMA public TO {role}"
    ))
    .await;
    let b_url = db.url().replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(b_url, db.url(), "the test database URL names the user postgres");
    let b = spawn_app_on(db.clone(), move |settings| settings.database_url = b_url).await;
    let mut on_b = b.subscribe(EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.deliver(generic("before", "succeeded")).await;
    let event = on_b
        .next_event(Duration::from_secs(5))
        .await
        .expect("the first event");
    assert_eq!(event["deploymentEvents"]["deployment"]["externalId"], "before");

    // B can no longer read events, and its listener is cut (so it must catch up too).
    run(format!("REVOKE SELECT ON deployment_events FROM {role}")).await;
    run(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}' AND query ILIKE 'LISTEN%'"
    ))
    .await;
    let mut acknowledged = std::collections::BTreeSet::new();
    for n in 0..20 {
        let id = format!("while-{n}");
        a.deliver(generic(&id, "succeeded")).await;
        acknowledged.insert(id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    run(format!("GRANT SELECT ON deployment_events TO {role}")).await;

    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < acknowledged.len() {
        let Some(event) = on_b.next_event(Duration::from_secs(15)).await else {
            break;
        };
        let id = event["deploymentEvents"]["deployment"]["externalId"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(seen.insert(id.clone()), "{id} arrived twice");
    }
    let missing: Vec<_> = acknowledged.difference(&seen).collect();
    assert!(missing.is_empty(), "replica B's subscriber missed {missing:?}");
    b.stop().await;
    a.stop().await;
    run(format!("DROP OWNED BY {role}; DROP ROLE {role}")).await;
    let _ = admin.close().await;
}
