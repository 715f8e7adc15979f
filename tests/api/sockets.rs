//! The real binary's PostgreSQL connections: every connection the pool opens, including the
//! ones it opens under load long after startup, has TCP_NODELAY. sqlx 0.9.0 stopped setting
//! it (src/store/nodelay.rs); a connection without it sends a statement bigger than one TLS
//! record in Nagle-delayed pieces, 40 ms each.

use std::net::TcpStream;

use serde_json::json;

use crate::crash::Server;
use crate::helpers::TestDb;

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
