//! A bad day for the database: a full disk under SQLite, commits refused by PostgreSQL. Every
//! delivery answered 2xx must be in the database afterwards; while it cannot write, webhooks get
//! a prompt 503 and `/readyz` says why; when it can again, shiplog recovers by itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{SECRET, TestApp, TestDb, spawn_app_on};

/// A tmpfs of `megabytes`, mounted for the test's lifetime (root only, as in CI).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(base: &std::path::Path, megabytes: u32) -> Option<SmallDisk> {
        let path = base.join("disk");
        std::fs::create_dir_all(&path).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A generic delivery of about 16 KiB (the padding is a field shiplog does not read).
fn big_delivery(id: &str) -> Value {
    json!({ "id": id, "system": "billing", "environment": "production", "status": "succeeded",
            "notes": "x".repeat(16 * 1024) })
}

async fn ready(app: &TestApp) -> (u16, Value) {
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends `big_delivery`s named `prefix-N` from `senders` tasks until `refusals` of them got a
/// 503; returns the ids answered 2xx. Every refusal must come promptly, and never a 2xx after
/// a refusal from the same sender without the database having taken it.
async fn fill(app: &TestApp, prefix: &str, senders: usize, refusals: usize) -> BTreeSet<String> {
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let (client, url, refused) = (app.client.clone(), app.url("/webhooks/generic"), refused.clone());
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..2_000 {
                if refused.load(std::sync::atomic::Ordering::Relaxed) >= refusals {
                    break;
                }
                let id = format!("{prefix}-{sender}-{n}");
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(SECRET)
                    .json(&big_delivery(&id))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    200 => acknowledged.push(id),
                    503 => {
                        let waited = started.elapsed();
                        assert!(
                            waited < Duration::from_secs(5),
                            "a refusal took {waited:?}: a full database must be answered promptly"
                        );
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => panic!("unexpected answer {other}: {}", response.text().await.unwrap()),
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(
        refused.load(std::sync::atomic::Ordering::Relaxed) >= refusals,
        "the disk never filled up"
    );
    acknowledged
}

/// The external ids stored in the database, read through a connection of the test's own.
async fn stored_ids(url: &str) -> BTreeSet<String> {
    let db = sea_orm::Database::connect(url).await.unwrap();
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        &db,
        sea_orm::Statement::from_string(db.get_database_backend(), "SELECT external_id FROM deployments"),
    )
    .await
    .unwrap();
    let ids = rows
        .into_iter()
        .map(|row| row.try_get::<String>("", "external_id").unwrap())
        .collect();
    let _ = db.close().await;
    ids
}

async fn wait_until_ready(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = ready(app).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shiplog did not recover by itself: /readyz still says {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_full_disk_never_acknowledges_a_delivery_it_did_not_store_and_recovers_by_itself() {
    let base = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(base.path(), 6) else {
        assert!(
            std::env::var("SHIPLOG_REQUIRE_TMPFS").is_err(),
            "could not mount a tmpfs, and SHIPLOG_REQUIRE_TMPFS says this test must run"
        );
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs it)");
        return;
    };
    // Room to free later: the database fills what is left around it. Two MiB: the space must
    // also let SQLite checkpoint the WAL the full disk left behind (with one MiB, the suite's
    // runs under load sometimes stayed short for more than 30 s after it came back).
    let ballast = disk.path.join("ballast");
    std::fs::write(&ballast, vec![0u8; 2 * 1024 * 1024]).unwrap();
    let url = format!("sqlite://{}", disk.path.join("shiplog.db").display());
    let db = Arc::new(TestDb::Sqlite {
        _dir: tempfile::tempdir().unwrap(),
        url: url.clone(),
    });
    let app = spawn_app_on(db.clone(), |_| {}).await;

    let mut acknowledged = fill(&app, "full", 4, 12).await;
    // `/readyz` tells how the last write went. A smaller write that still fitted (the writer's
    // own 16 KiB probe after a second without deliveries, or one sender's single delivery
    // after a batch of several failed) can say ready for a moment; the next big delivery
    // finds the disk full again. Seen in CI under the whole suite's load.
    let (mut status, mut body) = ready(&app).await;
    for n in 0..10 {
        if status == 503 {
            break;
        }
        let id = format!("full-more-{n}");
        let response = app.post_generic(&big_delivery(&id)).await;
        match response.status().as_u16() {
            200 => {
                acknowledged.insert(id);
            }
            503 => {}
            other => panic!("unexpected answer {other}: {}", response.text().await.unwrap()),
        }
        (status, body) = ready(&app).await;
    }
    assert_eq!(status, 503, "/readyz while the disk is full: {body}");
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("full"), "/readyz says why: {message}");

    // Space comes back: shiplog notices by itself, without a delivery to try.
    std::fs::remove_file(&ballast).unwrap();
    wait_until_ready(&app).await;
    // Deliveries are taken again. The first writes after the space came back may still find
    // the disk short (the WAL takes its share back first, later under the whole suite's load:
    // CI once needed more than 5 s); a refusal then is a 503 the sender retries, as webhook
    // senders do, never a 2xx for something not stored.
    for n in 0..5 {
        let id = format!("after-{n}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let response = app.post_generic(&big_delivery(&id)).await;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            if status == 200 {
                break;
            }
            assert!(
                status == 503 && Instant::now() < deadline,
                "{id}: {status} {text}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        acknowledged.insert(id);
    }
    app.stop().await;

    let stored = stored_ids(&url).await;
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "answered 200 but not in the file after a restart: {lost:?}"
    );
    drop(disk);
}

#[tokio::test]
async fn a_commit_postgresql_refuses_is_answered_503_and_the_server_recovers_by_itself() {
    let db = Arc::new(TestDb::new().await);
    if !db.is_postgres() {
        eprintln!("skipped: needs PostgreSQL (set SHIPLOG_TEST_DATABASE_URL)");
        return;
    }
    let app = spawn_app_on(db.clone(), |_| {}).await;
    // A deferred constraint trigger fails COMMIT itself (as a full disk or a lost standby
    // would), not a statement before it, while the switch is on.
    let admin = sea_orm::Database::connect(db.url()).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        "CREATE TABLE fault (refuse boolean NOT NULL);
         INSERT INTO fault VALUES (false);
         CREATE FUNCTION fault_check() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF (SELECT refuse FROM fault) THEN RAISE EXCEPTION 'injected fault: the commit is refused'; END IF;
           RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER fault_deliveries AFTER INSERT OR UPDATE ON deliveries
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_check();
         CREATE CONSTRAINT TRIGGER fault_settings AFTER INSERT OR UPDATE ON settings
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_check();",
    )
    .await
    .unwrap();
    let mut acknowledged = BTreeSet::new();
    for n in 0..5 {
        let id = format!("before-{n}");
        app.deliver(big_delivery(&id)).await;
        acknowledged.insert(id);
    }
    sea_orm::ConnectionTrait::execute_unprepared(&admin, "UPDATE fault SET refuse = true")
        .await
        .unwrap();
    acknowledged.extend(fill(&app, "refused", 4, 12).await);
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "/readyz while commits fail: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("injected fault"),
        "/readyz says why: {body}"
    );
    sea_orm::ConnectionTrait::execute_unprepared(&admin, "UPDATE fault SET refuse = false")
        .await
        .unwrap();
    wait_until_ready(&app).await;
    for n in 0..5 {
        let id = format!("after-{n}");
        app.deliver(big_delivery(&id)).await;
        acknowledged.insert(id);
    }
    app.stop().await;
    let _ = admin.close().await;
    let stored = stored_ids(db.url()).await;
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "answered 200 but not stored: {lost:?}");
    assert!(
        stored.iter().all(|id| acknowledged.contains(id)),
        "only acknowledged deliveries were stored while commits failed"
    );
}
