//! Serving connections: axum's own `serve` has no timeouts and no connection limit, so a
//! client holding idle connections (or sending its request head a byte at a time) could take
//! every file descriptor, and with them health checks, webhooks and the database. Here:
//! - a connection must send its first byte, and then its whole request head, within
//!   `HEAD_TIMEOUT`; a keep-alive connection idle for as long is closed too (hyper's header
//!   timer runs again while it waits for the next request);
//! - at most `limit` connections are open at once (the process's file limit less a reserve for
//!   the database pool and the listener); at the limit, the connection that has been silent
//!   longest (connected, no byte yet) makes room for the newcomer, or the newcomer is closed;
//! - request bodies have their own timeouts in the handlers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tower::ServiceExt;

/// How long a client has for its first byte, then for its whole request head, and how long
/// a keep-alive connection may sit idle between requests.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors kept for everything that is not a client connection: the listener, the
/// database pool, the writer's and the listener's connections, logs, TLS roots.
const RESERVED_FILES: u64 = 64;

/// How many client connections this process may hold: its open-file limit (raised to the hard
/// limit first) less the database pool and a reserve.
pub fn connection_limit(pool_size: u32) -> usize {
    let files = raise_file_limit();
    let reserved = RESERVED_FILES + u64::from(pool_size);
    files.saturating_sub(reserved).max(16) as usize
}

/// Raises the soft open-file limit to the hard one (many systems start services at 1,024);
/// returns the limit now in force.
#[cfg(target_os = "linux")]
fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), hard) = (limit.current, limit.maximum) else {
        return 1 << 20;
    };
    let wanted = hard.unwrap_or(1 << 20).min(1 << 20);
    if wanted > current {
        let raised = rustix::process::Rlimit {
            current: Some(wanted),
            maximum: hard,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return wanted;
        }
    }
    current
}

#[cfg(not(target_os = "linux"))]
fn raise_file_limit() -> u64 {
    1024
}

/// The connections that have not sent a byte yet, oldest first, each with the switch that
/// closes it.
#[derive(Default)]
struct Silent {
    next: u64,
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets requests
/// in flight finish, and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limit: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limit));
    let silent = Arc::new(Mutex::new(Silent::default()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::debug!(limit, "serving connections");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors (or another failure of accept itself): wait a
                    // moment rather than spin; the limit above should keep this from happening.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let permit = match admit(&permits, &silent).await {
            Some(permit) => permit,
            None => {
                metrics::counter!("shiplog_connections_refused_total").increment(1);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (close, closed) = oneshot::channel();
        let id = match silent.lock() {
            Ok(mut silent) => {
                let id = silent.next;
                silent.next += 1;
                silent.waiting.push_back((id, close));
                Some(id)
            }
            Err(_) => None,
        };
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            permit,
            closed,
            id,
            silent.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// One client connection: its first byte within `HEAD_TIMEOUT` (or it is closed, or evicted
/// to make room), then HTTP/1 or HTTP/2 until it ends or the server shuts down.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    _permit: OwnedSemaphorePermit,
    closed: oneshot::Receiver<()>,
    id: Option<u64>,
    silent: Arc<Mutex<Silent>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let spoke = first_byte(&stream, closed).await;
    if let (Some(id), Ok(mut silent)) = (id, silent.lock()) {
        silent.waiting.retain(|(waiting, _)| *waiting != id);
    }
    if !spoke {
        return;
    }
    let service = tower::service_fn(
        move |mut request: axum::extract::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move { app.oneshot(request.map(axum::body::Body::new)).await }
        },
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let connection = builder.serve_connection_with_upgrades(
        TokioIo::new(stream),
        TowerToHyperService::new(service.map_err(|never: Infallible| match never {})),
    );
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::trace!(%error, %peer, "connection ended with an error");
    }
}

/// A place for one more connection: a free one, else the one silent the longest, closed.
async fn admit(permits: &Arc<Semaphore>, silent: &Mutex<Silent>) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        return Some(permit);
    }
    let oldest = silent.lock().ok()?.waiting.pop_front();
    let (_, close) = oldest?;
    let _ = close.send(());
    // The evicted connection's task gives its permit back as it ends.
    tokio::time::timeout(Duration::from_secs(1), permits.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Waits for the connection's first byte; false when it sends none within `HEAD_TIMEOUT`,
/// closes, or is evicted to make room.
async fn first_byte(stream: &TcpStream, evicted: oneshot::Receiver<()>) -> bool {
    // `peek`, not `readable`: readiness may be reported before any byte has arrived.
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut byte)) => matches!(peeked, Ok(Ok(1..))),
        _ = evicted => false,
    }
}
