//! The real binary's PostgreSQL connections: every connection the pool opens, including the
//! ones it opens under load long after startup, has TCP_NODELAY. sqlx 0.9.0 stopped setting
//! it (src/store/nodelay.rs); a connection without it sends a statement bigger than one TLS
//! record in Nagle-delayed pieces, 40 ms each. And the ingest writer's own connection: a
//! delivery is stored while every connection of the readers' pool is busy.

use std::net::TcpStream;

use serde_json::json;

use crate::crash::Server;
use crate::helpers::{TestDb, generic, spawn_app_on};

#[cfg(target_os = "linux")]
#[tokio::test]
async fn every_postgres_connection_the_pool_opens_has_nodelay() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("skipped: needs PostgreSQL (set SHIPLOG_TEST_DATABASE_URL)");
        return;
    }
    let port = reqwest::Url::parse(db.url()).unwrap().port().unwrap_or(5432);
    let server = Server::start(&db).await;
    let pid = server.child.id();
    // The live-event listener connects on its own and sets the option on every socket there
    // is at that moment: let it settle, so only the pool's hook can cover what comes next.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let at_start = postgres_sockets(pid, port);

    // Concurrent queries make the pool open connections it did not need at startup.
    let client = reqwest::Client::new();
    let query = "{ deployments(first: 100) { totalCount edges { node { id system { name } } } } }";
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..48 {
        let request = client
            .post(server.url("/graphql"))
            .json(&json!({ "query": query }));
        requests.spawn(async move { request.send().await.map(|r| r.status()) });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap().unwrap(), 200);
    }

    let after = postgres_sockets(pid, port);
    assert!(
        after.len() > at_start.len(),
        "the pool opened connections under load ({} at start, {} after)",
        at_start.len(),
        after.len()
    );
    let without: Vec<i32> = after
        .iter()
        .filter(|(_, nodelay)| !nodelay)
        .map(|(fd, _)| *fd)
        .collect();
    assert!(
        without.is_empty(),
        "connections to PostgreSQL without TCP_NODELAY: fds {without:?} of {after:?}"
    );
}

/// The TCP sockets of process `pid` connected to `port`, by descriptor, with their
/// TCP_NODELAY (read through a duplicate from `pidfd_getfd`).
#[cfg(target_os = "linux")]
fn postgres_sockets(pid: u32, port: u16) -> Vec<(i32, bool)> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let pidfd = pidfd_open(Pid::from_raw(pid as i32).unwrap(), PidfdFlags::empty()).unwrap();
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        let Ok(duplicate) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let stream = TcpStream::from(duplicate);
        if stream.peer_addr().is_ok_and(|peer| peer.port() == port) {
            sockets.push((fd, stream.nodelay().unwrap()));
        }
    }
    sockets.sort_unstable();
    sockets
}

/// On PostgreSQL the ingest writer works on a connection of its own, so a webhook is stored
/// and answered while every connection of the readers' pool waits: slow reads never hold up
/// deliveries. (Sharing the pool, the delivery would wait for the lock below and then fail on
/// the pool's acquire timeout.)
#[tokio::test]
async fn postgres_ingest_does_not_wait_for_the_readers_pool() {
    use std::time::Duration;

    use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, TransactionTrait};

    let db = std::sync::Arc::new(TestDb::new().await);
    if !db.is_postgres() {
        eprintln!("skipped: needs PostgreSQL (set SHIPLOG_TEST_DATABASE_URL)");
        return;
    }
    let app = spawn_app_on(db.clone(), |settings| settings.database_max_connections = Some(1)).await;
    // One session of the test's own watches the server's: its waits, then what it committed.
    let watcher = sea_orm::Database::connect(db.url()).await.unwrap();
    let count = |sql: &'static str| {
        let watcher = &watcher;
        async move {
            watcher
                .query_one_raw(Statement::from_string(DatabaseBackend::Postgres, sql))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap()
        }
    };

    // Another session holds `settings` (a table ingest never touches), so a read of it takes
    // the readers' only connection and waits.
    let locker = sea_orm::Database::connect(db.url()).await.unwrap();
    let lock = locker.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE settings IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let reader = tokio::spawn({
        let store = app.store.clone();
        async move { store.setting("held").await }
    });
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for _ in 0..200 {
        if count(waiting).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), app.store.ping())
            .await
            .is_err(),
        "the readers' pool should have no connection left"
    );

    let response = tokio::time::timeout(
        Duration::from_secs(30),
        app.post_generic(&generic("held-1", "succeeded")),
    )
    .await
    .expect("the delivery must not wait for the readers' pool");
    assert!(
        response.status().is_success(),
        "{}: {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    let stored = "SELECT count(*) AS n FROM deployments WHERE external_id = 'held-1'";
    assert_eq!(count(stored).await, 1, "committed, seen from another session");

    // The held read finishes once the lock goes.
    lock.rollback().await.unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), None);
    let _ = locker.close().await;
    let _ = watcher.close().await;
    app.stop().await;
}
