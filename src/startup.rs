//! Building and running the server. Building on port 0 binds a free port and reports it, so
//! tests run the real server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::domain::MappingRules;
use crate::enrich::Enrichers;
use crate::enrich::worker::Processor;
use crate::events::Hub;
use crate::http::{AppState, router};
use crate::ingest::Ingest;
use crate::sources::{Registry, Secret};
use crate::store::writer::Writer;
use crate::store::{DbOptions, Store, StoreError};

pub use crate::http::random_token;

/// The settings key of a generated secret.
pub fn generated_secret_key(source: &str) -> String {
    format!("secret.{source}")
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error("cannot migrate the database: {0}")]
    Migrate(StoreError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

/// A built server, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    /// Client connections held at most at once (see `http::serve`).
    connection_limit: usize,
    address: SocketAddr,
    state: AppState,
    store: Store,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    writer_task: JoinHandle<()>,
}

impl Application {
    /// What re-reading the settings replaces (see [`reread_settings`]).
    pub fn reloader(&self) -> crate::ingest::Reloader {
        self.state.ingest.reloader()
    }

    /// Connects and migrates the database, resolves secrets, binds the port.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let options = db_options(&settings);
        let store = Store::connect(&options)
            .await
            .map_err(|source| StartupError::Database {
                url: redact_url(&settings.database_url),
                source,
            })?;
        store.migrate().await.map_err(StartupError::Migrate)?;
        let sections = with_gitlab_home(&store, &settings.sections).await?;
        let sources = Registry::with_declared(&sections, &settings.sources).map_err(StartupError::Other)?;
        let secrets = resolve_secrets(&store, &settings, &sources).await?;
        let heroku: crate::sources::heroku::HerokuConfig =
            settings.section("heroku").get().map_err(StartupError::Other)?;
        let enrichers = Enrichers::configured(
            &settings.api,
            std::time::Duration::from_secs(heroku.coupling_cache_seconds),
        );
        crate::telemetry::metrics();
        let hub = Hub::new(16 * 1024);
        let replica = random_token(8);
        // The writer gets a connection of its own, on its own thread (see `Writer::spawn`),
        // except on an in-memory SQLite database, which only the shared pool can see.
        let in_memory =
            settings.database_url.contains(":memory:") || settings.database_url.contains("mode=memory");
        let own = (!in_memory).then(|| DbOptions {
            max_connections: 1,
            ..options.clone()
        });
        let (writer, writer_task) = Writer::spawn(store.clone(), own, hub.clone(), replica.clone());
        let rules = Arc::new(MappingRules::new(&settings.mapping));
        let ingest = Ingest::new(sources, secrets, enrichers, rules, writer)
            .with_catalog(settings.checked_catalog.clone());
        let (stop, stopping) = watch::channel(false);
        let mut tasks = background(&store, &ingest, &settings, &replica, &hub, &stopping);
        tasks.extend(
            crate::import::reconcile::spawn(&store, &ingest, &settings.reconcile, &replica, &stopping)
                .map_err(StartupError::Other)?,
        );
        let listener = TcpListener::bind(&settings.listen)
            .await
            .map_err(|source| StartupError::Listen {
                address: settings.listen.clone(),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| StartupError::Listen {
            address: settings.listen.clone(),
            source,
        })?;
        let state = AppState {
            schema: crate::graphql::schema(store.clone(), hub.clone(), &ingest, &settings),
            hub,
            limiter: Arc::new(crate::http::limits::RateLimiter::new(
                settings.webhook_rate_limit,
                settings.webhook_rate_limit * 4.0,
            )),
            store: store.clone(),
            ingest,
            max_body_bytes: settings.max_body_bytes,
            tokens: crate::http::auth::ApiTokens::new(&settings.api_tokens),
            write_tokens: crate::http::auth::ApiTokens::new(&settings.write_tokens),
            cors_origins: settings.cors_origins.clone(),
            shutdown: stopping,
        };
        tracing::info!(%address, database = %redact_url(&settings.database_url), replica, "shiplog is ready");
        let connection_limit = crate::http::serve::connection_limit(options.max_connections);
        Ok(Self {
            listener,
            connection_limit,
            address,
            state,
            store,
            stop,
            tasks,
            writer_task,
        })
    }

    /// The bound address (the real port when built on port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The store, for tests that count statements.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The live-event hub, for tests that wait for a subscription to be registered.
    pub fn hub(&self) -> &Hub {
        &self.state.hub
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `signal` completes. In-flight requests finish, WebSocket clients get a
    /// close frame, the ingest writer drains its queue, then the pool closes.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self {
            listener,
            connection_limit,
            state,
            store,
            stop,
            tasks,
            writer_task,
            ..
        } = self;
        let app = router(state);
        let stopper = stop.clone();
        let result = crate::http::serve::serve(listener, app, connection_limit, async move {
            signal.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopper.send(true);
        })
        .await;
        let _ = stop.send(true);
        for task in tasks {
            let _ = task.await;
        }
        // The router (and with it every Writer handle) is gone: the writer drains and ends.
        let _ = writer_task.await;
        store.close().await;
        tracing::info!("shiplog stopped");
        result
    }
}

/// The tasks that run beside the server: the fan-out listener (PostgreSQL) and the enrichment
/// worker. They end when `stopping` turns true.
fn background(
    store: &Store,
    ingest: &Ingest,
    settings: &Settings,
    replica: &str,
    hub: &Hub,
    stopping: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if store.backend() == sea_orm::DatabaseBackend::Postgres {
        tasks.push(tokio::spawn(crate::store::fanout::listen(
            store.clone(),
            settings.database_url.clone(),
            replica.to_string(),
            hub.clone(),
            stopping.clone(),
        )));
    }
    let processor = Processor {
        store: store.clone(),
        ingest: ingest.clone(),
        retry: settings.retry,
    };
    tasks.push(tokio::spawn(processor.run(stopping.clone())));
    match crate::commits::GitHosts::configured(&settings.api) {
        Ok(hosts) => tasks.push(crate::commits::spawn(
            store,
            hosts,
            ingest,
            replica,
            settings.retry,
            stopping,
        )),
        Err(error) => tracing::error!(%error, "the Git hosts' tokens cannot be used: no commits are read"),
    }
    tasks.extend(crate::sink::spawn(
        store,
        &settings.cdevents_sink,
        replica,
        stopping,
    ));
    tasks
}

/// The pipeline for a one-off command (`shiplog import`): the server's sources, rules and
/// group-commit writer, without its HTTP side. Drop the `Ingest`, then await the task: the
/// writer drains what it was given.
pub async fn pipeline(
    settings: &Settings,
    store: &Store,
    enrichers: Enrichers,
) -> Result<(Ingest, JoinHandle<()>), StartupError> {
    let sections = with_gitlab_home(store, &settings.sections).await?;
    let sources = Registry::with_declared(&sections, &settings.sources).map_err(StartupError::Other)?;
    let own = (!settings.database_url.contains(":memory:")).then(|| DbOptions {
        max_connections: 1,
        ..db_options(settings)
    });
    let (writer, task) = Writer::spawn(store.clone(), own, Hub::new(1024), random_token(8));
    let rules = Arc::new(MappingRules::new(&settings.mapping));
    let ingest = Ingest::new(sources, BTreeMap::new(), enrichers, rules, writer)
        .with_catalog(settings.checked_catalog.clone());
    Ok((ingest, task))
}

/// Connection settings for the store.
pub fn db_options(settings: &Settings) -> DbOptions {
    DbOptions {
        url: settings.database_url.clone(),
        max_connections: settings.pool_size(),
        sqlite_synchronous_full: settings.sqlite_synchronous == crate::config::SqliteSynchronous::Full,
    }
}

/// The secret of each source: configured, or for a source that generates one (`generic`)
/// generated once and stored in the database (so every replica and every restart agree),
/// printed at its first start.
async fn resolve_secrets(
    store: &Store,
    settings: &Settings,
    sources: &Registry,
) -> Result<BTreeMap<String, Secret>, StartupError> {
    let mut secrets = BTreeMap::new();
    for source in sources.iter() {
        let name = source.name();
        let configured = settings
            .secrets
            .get(name)
            .or_else(|| settings.secrets.get(&name.replace('-', "_")));
        if let Some(secret) = configured {
            secrets.insert(name.to_string(), Secret::new(secret.clone()));
        } else if source.generates_secret() {
            let secret = generated_secret(store, name).await?;
            secrets.insert(name.to_string(), Secret::new(secret));
        }
    }
    Ok(secrets)
}

/// The secret shiplog made up for `source` on its first start (made now when there is none).
async fn generated_secret(store: &Store, source: &str) -> Result<String, StartupError> {
    let setting = crate::sources::secret_setting(source);
    let key = generated_secret_key(source);
    let existing = store
        .setting(&key)
        .await
        .map_err(|e| StartupError::Other(e.to_string()))?;
    if let Some(secret) = existing {
        tracing::info!(
            "{setting} is not set: using the secret generated on first start (`shiplog secrets` prints it)"
        );
        return Ok(secret);
    }
    let generated = random_token(24);
    let stored = store
        .setting_or_insert(&key, &generated)
        .await
        .map_err(|e| StartupError::Other(e.to_string()))?;
    if stored == generated {
        tracing::warn!(
            secret = %stored,
            "{setting} is not set: generated this secret for POST /webhooks/{source} and stored it in the database; send it as `Authorization: Bearer <secret>` (shown once; `shiplog secrets` prints it again)"
        );
    }
    Ok(stored)
}

/// A database URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Reads the settings again on SIGHUP, and when the settings file or a `[catalog]
/// backstage_files` file changes (checked every two seconds): the catalog and the mapping rules
/// are replaced for what is read and received from then on (`shiplog replay` moves stored
/// history). Settings with a problem are logged and the previous ones stay. Other settings
/// (the port, the database, secrets, sources) still need a restart.
pub fn reread_settings(
    args: crate::config::SettingsArgs,
    pipeline: crate::ingest::Reloader,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|error| tracing::warn!(%error, "SIGHUP cannot be listened for; file changes still are"))
            .ok();
        let mut files = watched_files(&args, Settings::load(&args).ok().as_ref());
        let mut seen = stamps(&files);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            #[cfg(unix)]
            let asked = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let asked = std::future::pending::<bool>();
            let asked = tokio::select! {
                asked = asked => asked,
                _ = tick.tick() => false,
            };
            let now = stamps(&files);
            if !asked && now == seen {
                continue;
            }
            seen = now;
            match Settings::load(&args) {
                Ok(settings) => {
                    let catalog = settings.checked_catalog.clone();
                    tracing::info!(
                        systems = catalog.systems().count(),
                        teams = catalog.teams().len(),
                        "settings read again: the catalog and mapping rules apply from now on (`shiplog replay` moves stored history)"
                    );
                    pipeline.reload(MappingRules::new(&settings.mapping), catalog);
                    files = watched_files(&args, Some(&settings));
                    seen = stamps(&files);
                }
                Err(error) => tracing::error!(
                    %error,
                    "the settings were read again and have a problem: the previous catalog and mapping rules stay until it is fixed"
                ),
            }
        }
    })
}

/// The settings file and the catalog files the settings name.
fn watched_files(args: &crate::config::SettingsArgs, settings: Option<&Settings>) -> Vec<std::path::PathBuf> {
    let mut files = vec![
        args.config
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("shiplog.toml")),
    ];
    if let Some(settings) = settings {
        files.extend(settings.catalog_files());
    }
    files
}

/// Each file's modification time and length (None when it cannot be read).
fn stamps(files: &[std::path::PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    files
        .iter()
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// The sections, with `[gitlab] home_instance` learned when it is not written: the instance of
/// the oldest GitLab delivery that named one (kept in the settings table once known). Its job
/// ids stay bare, as they were before ids were scoped to instances.
pub async fn with_gitlab_home(
    store: &Store,
    sections: &std::collections::BTreeMap<String, toml::Value>,
) -> Result<std::collections::BTreeMap<String, toml::Value>, StartupError> {
    const KEY: &str = "gitlab.home_instance";
    let mut sections = sections.clone();
    let written = sections
        .get("gitlab")
        .and_then(|section| section.get("home_instance"))
        .is_some();
    if written {
        return Ok(sections);
    }
    let known = match store
        .setting(KEY)
        .await
        .map_err(|e| StartupError::Other(format!("reading the GitLab home instance: {e}")))?
    {
        Some(home) => Some(home),
        None => match store
            .first_journaled_header("gitlab", "x-gitlab-instance")
            .await
            .map_err(|e| StartupError::Other(format!("reading the GitLab home instance: {e}")))?
        {
            Some(home) => Some(
                store
                    .setting_or_insert(KEY, &home)
                    .await
                    .map_err(|e| StartupError::Other(format!("reading the GitLab home instance: {e}")))?,
            ),
            None => None,
        },
    };
    if let Some(home) = known {
        let section = sections
            .entry("gitlab".to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let toml::Value::Table(table) = section {
            table.insert("home_instance".into(), toml::Value::String(home));
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://shiplog.db"), "sqlite://shiplog.db");
    }
}
