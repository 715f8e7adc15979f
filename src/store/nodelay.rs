//! TCP_NODELAY on the PostgreSQL connections. sqlx 0.9.0 stopped setting it (sqlx issue 4335,
//! fixed upstream in PR 4336, not released yet); without it a statement written in more than
//! one piece (a TLS record is at most 16 KiB) waits for the server's delayed ACK: 40 ms.
//!
//! sqlx gives no access to its socket, so whenever the pool opens a connection (its own
//! after-connect hook) every TCP socket of this process gets the option, through a duplicate
//! from `pidfd_getfd`, so no descriptor is ever borrowed unsafely. Setting it on other TCP
//! sockets (HTTP clients and servers) is harmless: hyper sets it on its own. Remove this once
//! sqlx sets it again.

/// Sets TCP_NODELAY on every TCP socket this process has open; other descriptors are skipped.
#[cfg(target_os = "linux")]
pub fn apply() {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    let Ok(pidfd) = pidfd_open(getpid(), PidfdFlags::empty()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        if let Ok(socket) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) {
            // Not a TCP socket (Unix, UDP): the first call fails and nothing changes.
            let _ = rustix::net::sockopt::set_tcp_nodelay(&socket, true);
        }
    }
}

/// Elsewhere sqlx's sockets keep the system's default.
#[cfg(not(target_os = "linux"))]
pub fn apply() {}
