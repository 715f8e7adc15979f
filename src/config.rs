//! Settings: built-in defaults, then an optional TOML file, then `SHIPLOG_*` environment
//! variables and flags (clap reads both; a flag wins over its variable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::RulesConfig;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "shiplog",
    version,
    about = "What was deployed, where, when and how: deployment webhooks from every tool, one GraphQL API.",
    long_about = "What was deployed, where, when and how: deployment webhooks from every tool, one GraphQL API.\n\n\
        With no command, shiplog serves. Every setting can also come from a TOML file (--config, or \
        ./shiplog.toml when it exists); flags and SHIPLOG_* variables win over the file."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve webhooks and the GraphQL API (the default).
    Serve,
    /// Print the GraphQL schema (SDL); `shiplog print-schema > schema.graphql` regenerates the checked-in copy.
    PrintSchema,
    /// Print the webhook secrets shiplog generated and stored in its database.
    Secrets,
    /// Put failed deliveries back to pending; the running server's workers retry them at once.
    Reprocess {
        /// Only these delivery ids (default: every failed delivery).
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
    /// Re-map every deployment's system and environment with the current rules (after editing
    /// [mapping] in the settings file): in place, idempotent, with a summary.
    Replay,
    /// Fill the database with realistic deployments (benchmarks, demos).
    Seed(crate::seed::SeedOptions),
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings settable by flag and environment variable.
#[derive(Debug, Default, Args)]
pub struct SettingsArgs {
    /// TOML settings file [default: ./shiplog.toml when it exists]
    #[arg(long, env = "SHIPLOG_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address and port to serve on [default: 127.0.0.1:8080]
    #[arg(long, env = "SHIPLOG_LISTEN", global = true)]
    pub listen: Option<String>,
    /// sqlite://FILE or postgres://USER@HOST/DB [default: sqlite://shiplog.db]
    #[arg(long, env = "SHIPLOG_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Database pool size [default: SQLite: cores + 2, at least 4; PostgreSQL: 16]
    #[arg(long, env = "SHIPLOG_DATABASE_MAX_CONNECTIONS", global = true)]
    pub database_max_connections: Option<u32>,
    /// SQLite durability: full (survives power loss) or normal (survives process crashes) [default: full]
    #[arg(long, env = "SHIPLOG_SQLITE_SYNCHRONOUS", global = true)]
    pub sqlite_synchronous: Option<SqliteSynchronous>,
    /// Secret for POST /webhooks/generic (Authorization: Bearer) [default: generated on first start and stored]
    #[arg(long, env = "SHIPLOG_GENERIC_SECRET", hide_env_values = true, global = true)]
    pub generic_secret: Option<String>,
    /// Secret for POST /webhooks/gitlab (the webhook's secret token, sent as X-Gitlab-Token)
    #[arg(long, env = "SHIPLOG_GITLAB_SECRET", hide_env_values = true, global = true)]
    pub gitlab_secret: Option<String>,
    /// Secret for POST /webhooks/jenkins (Basic-auth password or ?token= in the notification URL)
    #[arg(long, env = "SHIPLOG_JENKINS_SECRET", hide_env_values = true, global = true)]
    pub jenkins_secret: Option<String>,
    /// Secret for POST /webhooks/heroku (the webhook's HMAC secret)
    #[arg(long, env = "SHIPLOG_HEROKU_SECRET", hide_env_values = true, global = true)]
    pub heroku_secret: Option<String>,
    /// Heroku Platform API key (read access), to find each app's pipeline and stage
    #[arg(long, env = "SHIPLOG_HEROKU_API_KEY", hide_env_values = true, global = true)]
    pub heroku_api_key: Option<String>,
    /// Heroku Platform API base URL [default: https://api.heroku.com]
    #[arg(long, env = "SHIPLOG_HEROKU_API_URL", global = true)]
    pub heroku_api_url: Option<String>,
    /// Secret for POST /webhooks/octopus (header X-Shiplog-Secret, or Authorization: Bearer)
    #[arg(long, env = "SHIPLOG_OCTOPUS_SECRET", hide_env_values = true, global = true)]
    pub octopus_secret: Option<String>,
    /// Octopus API key (X-Octopus-ApiKey), for precise times, users and commits
    #[arg(long, env = "SHIPLOG_OCTOPUS_API_KEY", hide_env_values = true, global = true)]
    pub octopus_api_key: Option<String>,
    /// Octopus server URL for API calls [default: the payload's ServerUri]
    #[arg(long, env = "SHIPLOG_OCTOPUS_API_URL", global = true)]
    pub octopus_api_url: Option<String>,
    /// Attempts at enriching a delivery before it is marked failed [default: 25]
    #[arg(long, env = "SHIPLOG_RETRY_MAX_ATTEMPTS", global = true)]
    pub retry_max_attempts: Option<i32>,
    /// Tokens for reading the GraphQL API, comma-separated; when set, every query and
    /// subscription needs one (Authorization: Bearer, or Basic with the token as password)
    #[arg(
        long,
        env = "SHIPLOG_API_TOKENS",
        hide_env_values = true,
        global = true,
        value_delimiter = ','
    )]
    pub api_tokens: Option<Vec<String>>,
    /// Browser origins allowed to call the GraphQL API (CORS), comma-separated, or * [default: none]
    #[arg(long, env = "SHIPLOG_CORS_ORIGINS", global = true, value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Webhook deliveries per second per client address, with bursts of four times that;
    /// 0 disables [default: 100]
    #[arg(long, env = "SHIPLOG_WEBHOOK_RATE_LIMIT", global = true)]
    pub webhook_rate_limit: Option<f64>,
    /// Largest accepted request body in bytes [default: 1048576]
    #[arg(long, env = "SHIPLOG_MAX_BODY_BYTES", global = true)]
    pub max_body_bytes: Option<usize>,
    /// Log format [default: text]
    #[arg(long, env = "SHIPLOG_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

/// SQLite's `synchronous` setting in WAL mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

/// The TOML file's shape. Every key is optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub database_max_connections: Option<u32>,
    pub sqlite_synchronous: Option<SqliteSynchronous>,
    pub max_body_bytes: Option<usize>,
    pub log_format: Option<LogFormat>,
    /// Tokens for reading the GraphQL API.
    #[serde(default)]
    pub api_tokens: Vec<String>,
    pub webhook_rate_limit: Option<f64>,
    /// Browser origins allowed to call the GraphQL API.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// source name -> secret (`[secrets] generic = "..."`).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Environment and system aliases (`[mapping.environment_aliases]`, ...).
    #[serde(default)]
    pub mapping: RulesConfig,
    /// `[jenkins]`: which builds are deployments.
    #[serde(default)]
    pub jenkins: crate::sources::jenkins::JenkinsConfig,
    /// `[heroku]`: environments of apps in no pipeline.
    #[serde(default)]
    pub heroku: crate::sources::heroku::HerokuConfig,
    /// `[board]`: the order of environments.
    #[serde(default)]
    pub board: crate::graphql::board::BoardConfig,
    /// `[dora]`: which environments count as production.
    #[serde(default)]
    pub dora: crate::graphql::grafana::DoraConfig,
    /// API access for enrichment (`[api] heroku_key = ...`).
    #[serde(default)]
    pub api: ApiSettings,
}

/// API keys and URLs of the tools shiplog asks for what webhooks do not carry.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub heroku_key: Option<String>,
    pub heroku_url: Option<String>,
    pub octopus_key: Option<String>,
    pub octopus_url: Option<String>,
    pub retry_max_attempts: Option<i32>,
}

/// SQLite connections: the writer plus one reader per core and a spare. SQLite readers work on
/// this process's own cores, so more of them only add page caches and threads (each keeps its
/// own C-library heap). On 2 cores, over a million deployments at concurrency 16: 8 connections,
/// 36-52 MiB under the query load; 4 connections, 28-39 MiB, with lists faster and counts per
/// environment 17% slower in that run (869 / 990 / 1,491 / 912 req/s against 1,325 / 1,379 /
/// 1,234 / 897).
fn sqlite_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    (cores + 2).clamp(4, 16)
}

/// The resolved settings the server runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: String,
    pub database_url: String,
    pub database_max_connections: u32,
    pub sqlite_synchronous_full: bool,
    /// source name -> configured secret. Sources missing here refuse deliveries (401), except
    /// `generic`, which gets a generated secret on first start.
    pub secrets: BTreeMap<String, String>,
    pub mapping: RulesConfig,
    pub sources: crate::sources::SourcesConfig,
    /// Resolved API access for enrichment.
    pub api: ApiSettings,
    /// How pending deliveries are retried.
    pub retry: crate::enrich::RetryPolicy,
    /// Which environments DORA counts as production.
    pub dora: crate::graphql::grafana::DoraConfig,
    /// The board's environment order.
    pub board: crate::graphql::board::BoardConfig,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    /// Tokens for reading the GraphQL API (empty: open).
    pub api_tokens: Vec<String>,
    /// CORS origins (empty: same origin only).
    pub cors_origins: Vec<String>,
    /// Webhook deliveries per second per client (0: no limit).
    pub webhook_rate_limit: f64,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the settings file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://shiplog.db";
/// The default address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Settings {
    /// Resolves flags and variables over the file over the defaults.
    pub fn load(args: &SettingsArgs) -> Result<Self, ConfigError> {
        let (path, required) = match &args.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from("shiplog.toml"), false),
        };
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<FileSettings>(&text).map_err(|source| ConfigError::Parse {
                path: path.clone(),
                source: Box::new(source),
            })?,
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
                FileSettings::default()
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Ok(Self::resolve(args, file))
    }

    /// Layers flags and variables over a parsed file.
    pub fn resolve(args: &SettingsArgs, file: FileSettings) -> Self {
        let database_url = args
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        let is_sqlite = database_url.starts_with("sqlite:");
        let mut secrets = file.secrets;
        for (source, secret) in [
            ("generic", &args.generic_secret),
            ("gitlab", &args.gitlab_secret),
            ("jenkins", &args.jenkins_secret),
            ("heroku", &args.heroku_secret),
            ("octopus", &args.octopus_secret),
        ] {
            if let Some(secret) = secret {
                secrets.insert(source.into(), secret.clone());
            }
        }
        // Every source's secret can come from SHIPLOG_<SOURCE>_SECRET, including sources
        // added after this list of flags was written.
        for (key, value) in std::env::vars() {
            if let Some(source) = key
                .strip_prefix("SHIPLOG_")
                .and_then(|k| k.strip_suffix("_SECRET"))
                && !source.is_empty()
                && !value.is_empty()
            {
                secrets.entry(source.to_lowercase()).or_insert(value);
            }
        }
        secrets.retain(|_, secret| !secret.trim().is_empty());
        Self {
            listen: args
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            database_max_connections: args
                .database_max_connections
                .or(file.database_max_connections)
                .unwrap_or(if is_sqlite { sqlite_pool_size() } else { 16 }),
            sqlite_synchronous_full: args.sqlite_synchronous.or(file.sqlite_synchronous)
                != Some(SqliteSynchronous::Normal),
            database_url,
            secrets,
            mapping: file.mapping,
            sources: crate::sources::SourcesConfig {
                jenkins: file.jenkins,
                heroku: file.heroku,
            },
            api: ApiSettings {
                heroku_key: args
                    .heroku_api_key
                    .clone()
                    .or(file.api.heroku_key)
                    .filter(|k| !k.is_empty()),
                heroku_url: args.heroku_api_url.clone().or(file.api.heroku_url),
                octopus_key: args
                    .octopus_api_key
                    .clone()
                    .or(file.api.octopus_key)
                    .filter(|k| !k.is_empty()),
                octopus_url: args.octopus_api_url.clone().or(file.api.octopus_url),
                retry_max_attempts: args.retry_max_attempts.or(file.api.retry_max_attempts),
            },
            retry: crate::enrich::RetryPolicy {
                max_attempts: args
                    .retry_max_attempts
                    .or(file.api.retry_max_attempts)
                    .unwrap_or(25)
                    .max(1),
                ..crate::enrich::RetryPolicy::default()
            },
            dora: file.dora,
            board: file.board,
            max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(1024 * 1024),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            api_tokens: args.api_tokens.clone().unwrap_or(file.api_tokens),
            cors_origins: args.cors_origins.clone().unwrap_or(file.cors_origins),
            webhook_rate_limit: args
                .webhook_rate_limit
                .or(file.webhook_rate_limit)
                .unwrap_or(100.0)
                .max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_everything_and_flags_win_over_it() {
        let file: FileSettings = toml::from_str(
            r#"
            listen = "0.0.0.0:9000"
            database_url = "postgres://db/shiplog"
            [secrets]
            generic = "from-file"
            [mapping.environment_aliases]
            production = ["eu-prod"]
            "#,
        )
        .unwrap();
        let args = SettingsArgs {
            listen: Some("127.0.0.1:1".into()),
            ..SettingsArgs::default()
        };
        let settings = Settings::resolve(&args, file);
        assert_eq!(settings.listen, "127.0.0.1:1");
        assert_eq!(settings.database_url, "postgres://db/shiplog");
        assert_eq!(settings.database_max_connections, 16);
        assert_eq!(
            settings.secrets.get("generic").map(String::as_str),
            Some("from-file")
        );
        assert_eq!(
            settings.mapping.environment_aliases["production"],
            vec!["eu-prod".to_string()]
        );
    }

    #[test]
    fn defaults_are_a_local_sqlite_file_on_port_8080() {
        let settings = Settings::resolve(&SettingsArgs::default(), FileSettings::default());
        assert_eq!(settings.listen, "127.0.0.1:8080");
        assert_eq!(settings.database_url, "sqlite://shiplog.db");
        assert!(settings.sqlite_synchronous_full);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        assert!(toml::from_str::<FileSettings>("listn = \"x\"").is_err());
    }
}
