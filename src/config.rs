//! Settings, layered with figment: built-in defaults, then the TOML file, then `SHIPLOG_*`
//! environment variables, then flags (a flag beats its variable, which beats the file). Each
//! key is a field of [`Settings`], written once; the variables take the fields' names
//! (`SHIPLOG_DATABASE_URL` is `database_url`) except the few renamed in [`environment`], and a
//! source's secret is `SHIPLOG_<SOURCE>_SECRET` or `[secrets] <source>` for every source of the
//! registry. A source's own settings are its section (`[jenkins]`), read by the source.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::RulesConfig;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "shiplog",
    version,
    about = "What was deployed, where, when and how: deployment webhooks from every tool, one GraphQL API.",
    long_about = "What was deployed, where, when and how: deployment webhooks from every tool, one GraphQL API.\n\n\
        With no command, shiplog serves. Every setting can also come from a TOML file (--config, or \
        ./shiplog.toml when it exists) and from a SHIPLOG_* variable (SHIPLOG_DATABASE_URL, \
        SHIPLOG_GITLAB_SECRET, ...: see the README's Configuration table); flags win over variables, \
        which win over the file."
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
    /// Apply changed rules to what is stored: re-map every deployment's system and environment
    /// (after editing [mapping]), and put back to pending the deliveries the sources' current
    /// rules now make deployments of; in place, idempotent, with a summary.
    Replay {
        /// Change nothing: show what would move, appear or disappear, with examples.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a source's mapping on a captured body and print what it would store (or each
    /// error, with the expression that failed): no server, no database.
    TrySource {
        /// The source (a declared one, or a built-in).
        name: String,
        /// A file holding the body, as the tool sent it.
        file: PathBuf,
        /// A header the tool sent with it ('Name: value'; repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The query string the tool's URL carries (`env=staging`).
        #[arg(long)]
        query: Option<String>,
    },
    /// Check the whole settings file: declared sources compile, rules, secrets set or missing.
    /// Exits non-zero with the messages when something must be fixed.
    CheckConfig,
    /// The recipes shipped for tools without a built-in source; with a name, its TOML.
    Recipes {
        /// A recipe to print.
        name: Option<String>,
    },
    /// Why a delivery is (or is not) a deployment: the rule that decided, the tool's words and
    /// shiplog's names with the rule behind each, and the deployments it touched.
    Explain {
        /// The delivery's id (`deliveryId` in the webhook's answer, `Delivery.id`).
        id: i64,
    },
    /// Fill the database with realistic deployments (benchmarks, demos).
    Seed(crate::seed::SeedOptions),
    /// Import deployment history from a tool's API (resumable: run it again after an
    /// interruption); imported deployments merge with the same deployments' webhooks.
    Import {
        #[command(subcommand)]
        tool: ImportTool,
    },
}

/// The tools `shiplog import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportTool {
    /// GitLab's deployments API, per project or for every project of a group.
    Gitlab {
        /// The instance (`https://gitlab.example.com`) [default: https://gitlab.com]
        #[arg(long, default_value = crate::import::gitlab::DEFAULT_API_URL)]
        api_url: String,
        /// A token that can read the projects (read_api)
        #[arg(long, env = "SHIPLOG_GITLAB_TOKEN", hide_env_values = true)]
        token: String,
        /// A project's path (`group/app`; repeatable)
        #[arg(long)]
        project: Vec<String>,
        /// Every project of this group and its subgroups
        #[arg(long)]
        group: Option<String>,
        /// Only deployments updated since (ISO 8601 or a date, `2025-01-01`)
        #[arg(long)]
        since: Option<String>,
    },
    /// GitHub's deployments and their statuses, per repository.
    Github {
        /// The API (`https://github.example.com/api/v3` for GitHub Enterprise Server) [default: https://api.github.com]
        #[arg(long, default_value = crate::import::github::DEFAULT_API_URL)]
        api_url: String,
        /// A token that can read deployments
        #[arg(long, env = "SHIPLOG_GITHUB_TOKEN", hide_env_values = true)]
        token: String,
        /// A repository (`owner/app`; repeatable)
        #[arg(long)]
        repo: Vec<String>,
        /// Only deployments created since (ISO 8601 or a date, `2025-01-01`)
        #[arg(long)]
        since: Option<String>,
    },
    /// Heroku's releases, per app; systems and environments from the apps' pipelines.
    Heroku {
        /// The Platform API [default: https://api.heroku.com]
        #[arg(long, default_value = crate::import::heroku::DEFAULT_API_URL)]
        api_url: String,
        /// An API key (`heroku authorizations:create`)
        #[arg(long, env = "SHIPLOG_HEROKU_API_KEY", hide_env_values = true)]
        api_key: String,
        /// An app (repeatable)
        #[arg(long)]
        app: Vec<String>,
        /// Every app of this pipeline (its name or id)
        #[arg(long)]
        pipeline: Option<String>,
        /// Only releases created since (ISO 8601 or a date, `2025-01-01`)
        #[arg(long)]
        since: Option<String>,
    },
    /// Octopus Deploy's deployments of a space (or of one project), with their tasks and releases.
    Octopus {
        /// The Octopus server (`https://octopus.example.com`)
        #[arg(long)]
        api_url: String,
        /// An API key (`API-...`)
        #[arg(long, env = "SHIPLOG_OCTOPUS_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The space [default: Spaces-1]
        #[arg(long, default_value = "Spaces-1")]
        space: String,
        /// Only this project (its name or `Projects-N`)
        #[arg(long)]
        project: Option<String>,
        /// Only deployments created since (ISO 8601 or a date, `2025-01-01`)
        #[arg(long)]
        since: Option<String>,
    },
    /// Jenkins builds of jobs (folders and multibranch branches by full name).
    Jenkins {
        /// The Jenkins URL (`https://jenkins.example.com`)
        #[arg(long)]
        url: String,
        /// The user the API token belongs to
        #[arg(long, env = "SHIPLOG_JENKINS_USER")]
        user: String,
        /// The user's API token
        #[arg(long, env = "SHIPLOG_JENKINS_TOKEN", hide_env_values = true)]
        token: String,
        /// A job's full name (`team/app/deploy`; repeatable)
        #[arg(long)]
        job: Vec<String>,
        /// Only builds started since (ISO 8601 or a date, `2025-01-01`)
        #[arg(long)]
        since: Option<String>,
    },
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// SQLite's `synchronous` setting in WAL mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Acknowledged deliveries survive power loss.
    #[default]
    Full,
    /// Acknowledged deliveries survive process crashes (faster).
    Normal,
}

/// The flags: the settings people set on a command line. Every other setting has its
/// variable and its file key.
#[derive(Clone, Debug, Default, Args, Serialize)]
pub struct SettingsArgs {
    /// TOML settings file [default: ./shiplog.toml when it exists]
    #[arg(long, env = "SHIPLOG_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address and port to serve on [default: 127.0.0.1:8080]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// sqlite://FILE or postgres://USER@HOST/DB [default: sqlite://shiplog.db]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Database pool size [default: SQLite: cores + 2, at least 4; PostgreSQL: 16]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_max_connections: Option<u32>,
    /// SQLite durability [default: full]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlite_synchronous: Option<SqliteSynchronous>,
    /// A source's webhook secret, NAME=VALUE (repeatable); prefer SHIPLOG_<NAME>_SECRET, which
    /// process listings do not show
    #[arg(long = "secret", global = true, value_name = "NAME=VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "secrets_as_map")]
    pub secrets: Vec<String>,
    /// Attempts at enriching a delivery before it is marked failed [default: 25]
    #[arg(long, global = true)]
    #[serde(skip)]
    pub retry_max_attempts: Option<i32>,
    /// Tokens for reading the GraphQL API, comma-separated [default: none, the API is open]
    #[arg(long, global = true, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_tokens: Option<Vec<String>>,
    /// Browser origins allowed to call the GraphQL API (CORS), comma-separated, or * [default: none]
    #[arg(long, global = true, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Vec<String>>,
    /// Webhook deliveries per second per client address (bursts of four times that); 0 disables [default: 100]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_rate_limit: Option<f64>,
    /// Largest accepted request body in bytes [default: 1048576]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Log format [default: text]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

fn secrets_as_map<S: serde::Serializer>(secrets: &[String], serializer: S) -> Result<S::Ok, S::Error> {
    let map: BTreeMap<&str, &str> = secrets.iter().filter_map(|pair| pair.split_once('=')).collect();
    map.serialize(serializer)
}

pub use crate::enrich::ApiSettings;

/// The settings shiplog runs with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: String,
    pub database_url: String,
    /// Pool size; None picks one for the database (see `pool_size`).
    pub database_max_connections: Option<u32>,
    pub sqlite_synchronous: SqliteSynchronous,
    /// source name -> configured secret. Sources missing here refuse deliveries (401), except
    /// those that generate one on first start (`generic`).
    #[serde(deserialize_with = "lenient::map")]
    pub secrets: BTreeMap<String, String>,
    /// `[mapping]`: environment and system aliases.
    pub mapping: RulesConfig,
    /// `[systems.<name>]`: the catalog (team, description, repository, links, tags, aliases).
    pub systems: BTreeMap<String, crate::domain::CatalogEntry>,
    /// `[repositories]`: system -> repository (`github:owner/name`), a short way to write
    /// `[systems.<name>] repository`.
    pub repositories: BTreeMap<String, String>,
    /// `[catalog]`: other places systems are described (Backstage files).
    pub catalog: CatalogFiles,
    /// The catalog, checked (from `systems` and `catalog`).
    #[serde(skip)]
    pub checked_catalog: std::sync::Arc<crate::domain::Catalog>,
    /// The settings file's folder: relative catalog paths start there.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// `[api]`: keys and URLs for enrichment.
    pub api: ApiSettings,
    /// `[dora]`: which environments count as production.
    pub dora: crate::graphql::grafana::DoraConfig,
    /// `[board]`: the order of environments.
    pub board: crate::graphql::board::BoardConfig,
    /// `[environments]`: which come and go, and when one counts as stopped.
    pub environments: crate::domain::lifecycle::EnvironmentsConfig,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    /// Tokens for reading the GraphQL API (empty: open).
    #[serde(deserialize_with = "lenient::list")]
    pub api_tokens: Vec<String>,
    /// Tokens for the write API's mutations (separate from the read tokens; empty: no
    /// mutation is allowed). A write token also reads.
    #[serde(deserialize_with = "lenient::list")]
    pub write_tokens: Vec<String>,
    /// CORS origins (empty: same origin only).
    #[serde(deserialize_with = "lenient::list")]
    pub cors_origins: Vec<String>,
    /// Webhook deliveries per second per client (0: no limit).
    pub webhook_rate_limit: f64,
    /// How pending deliveries are retried (its attempts from `[api] retry_max_attempts`).
    #[serde(skip)]
    pub retry: crate::enrich::RetryPolicy,
    /// `[sources.<name>]`: sources declared in the file (or from a recipe), by route name.
    pub sources: BTreeMap<String, toml::Value>,
    /// `[cdevents_sink]`: where every finished deployment is sent as a CDEvent.
    pub cdevents_sink: crate::sink::SinkConfig,
    /// `[[reconcile]]`: the tools' APIs the server polls for what webhooks missed.
    pub reconcile: Vec<crate::import::reconcile::ReconcileConfig>,
    /// Every other top-level table: a source's section (`[jenkins]`, `[heroku]`).
    #[serde(flatten)]
    pub sections: BTreeMap<String, toml::Value>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            database_url: DEFAULT_DATABASE_URL.into(),
            database_max_connections: None,
            sqlite_synchronous: SqliteSynchronous::Full,
            secrets: BTreeMap::new(),
            mapping: RulesConfig::default(),
            systems: BTreeMap::new(),
            repositories: BTreeMap::new(),
            catalog: CatalogFiles::default(),
            checked_catalog: Default::default(),
            base_dir: None,
            api: ApiSettings::default(),
            dora: Default::default(),
            board: Default::default(),
            environments: Default::default(),
            max_body_bytes: 1024 * 1024,
            log_format: LogFormat::Text,
            api_tokens: Vec::new(),
            write_tokens: Vec::new(),
            cors_origins: Vec::new(),
            webhook_rate_limit: 100.0,
            retry: Default::default(),
            sources: BTreeMap::new(),
            cdevents_sink: Default::default(),
            reconcile: Vec::new(),
            sections: BTreeMap::new(),
        }
    }
}

/// Aliases two Backstage Components share (a monorepo's components often carry its one
/// `github.com/project-slug`) name neither: they are left out, with a warning, rather than
/// stopping the server; a conflict a `[systems]` table writes stays an error.
fn drop_shared_aliases(entries: &mut BTreeMap<String, crate::domain::CatalogEntry>) {
    let mut claims: BTreeMap<String, usize> = BTreeMap::new();
    for entry in entries.values() {
        for alias in &entry.aliases {
            *claims.entry(alias.to_lowercase()).or_default() += 1;
        }
    }
    for (name, entry) in entries.iter_mut() {
        entry.aliases.retain(|alias| {
            let shared = claims.get(&alias.to_lowercase()).is_some_and(|n| *n > 1);
            if shared {
                tracing::warn!(system = %name, %alias, "several Backstage Components claim this alias; it names none of them");
            }
            !shared
        });
    }
}

/// `[catalog]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogFiles {
    /// Backstage catalog files, or glob patterns (`../catalog/**/catalog-info.yaml`), relative
    /// to the settings file's folder.
    pub backstage_files: Vec<String>,
}

impl CatalogFiles {
    /// The files the patterns name, sorted; a pattern that names none is an error (a typo
    /// would otherwise empty the catalog silently).
    fn files(&self, base: Option<&std::path::Path>) -> Result<Vec<PathBuf>, String> {
        let mut files = Vec::new();
        for pattern in &self.backstage_files {
            let full = match base {
                Some(base) if std::path::Path::new(pattern).is_relative() => base.join(pattern),
                _ => PathBuf::from(pattern),
            };
            let text = full.to_string_lossy().to_string();
            let mut found: Vec<PathBuf> = glob::glob(&text)
                .map_err(|e| format!("[catalog] backstage_files: `{pattern}` is not a pattern: {e}"))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if found.is_empty() {
                return Err(format!("[catalog] backstage_files: no file matches `{text}`"));
            }
            files.append(&mut found);
        }
        files.sort();
        files.dedup();
        Ok(files)
    }
}

/// Why settings could not be loaded: the message names the file, key or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the settings are not valid: {0}")]
    Invalid(String),
}

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://shiplog.db";
/// The default address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The `SHIPLOG_*` variables: each field by its own name, a few renamed to where they live in
/// the file, and every source's secret. Other `SHIPLOG_*` variables (the test suite's, say)
/// are not settings.
fn environment() -> Env {
    const FIELDS: &[&str] = &[
        "listen",
        "database_url",
        "database_max_connections",
        "sqlite_synchronous",
        "max_body_bytes",
        "log_format",
        "api_tokens",
        "write_tokens",
        "cors_origins",
        "webhook_rate_limit",
    ];
    const RENAMED: &[(&str, &str)] = &[
        ("heroku_api_key", "api.heroku_key"),
        ("heroku_api_url", "api.heroku_url"),
        ("octopus_api_key", "api.octopus_key"),
        ("octopus_api_url", "api.octopus_url"),
        ("retry_max_attempts", "api.retry_max_attempts"),
        ("github_token", "api.github_token"),
        ("github_api_url", "api.github_url"),
        ("gitlab_token", "api.gitlab_token"),
        ("gitlab_api_url", "api.gitlab_url"),
        ("cdevents_sink_url", "cdevents_sink.url"),
        ("cdevents_sink_token", "cdevents_sink.token"),
    ];
    Env::prefixed("SHIPLOG_").filter_map(|key| {
        let key = key.as_str().to_lowercase();
        if FIELDS.contains(&key.as_str()) {
            return Some(key.into());
        }
        if let Some((_, path)) = RENAMED.iter().find(|(name, _)| *name == key) {
            return Some((*path).into());
        }
        let source = key.strip_suffix("_secret").filter(|s| !s.is_empty())?;
        Some(format!("secrets.{source}").into())
    })
}

impl Settings {
    /// Layers flags over variables over the file over the defaults.
    pub fn load(args: &SettingsArgs) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match &args.config {
            Some(path) => {
                std::fs::metadata(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                figment = figment.merge(Toml::file_exact(path));
            }
            // The default file is optional (and only looked for here, not in parent folders); a
            // file named with --config must exist.
            None if std::path::Path::new("shiplog.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("shiplog.toml"));
            }
            None => {}
        }
        let figment = figment.merge(environment()).merge(Serialized::defaults(args));
        let mut settings: Settings = figment
            .extract()
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        if let Some(attempts) = args.retry_max_attempts {
            settings.api.retry_max_attempts = Some(attempts);
        }
        settings.base_dir = args
            .config
            .as_deref()
            .or(Some(std::path::Path::new("shiplog.toml")))
            .and_then(|file| file.parent())
            .map(std::path::Path::to_path_buf);
        settings.finish()
    }

    /// Settings from a TOML text alone (README examples, tests).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        settings.finish()
    }

    /// Checks what serde cannot and derives the rest: every other top-level table must be a
    /// source's section; blank secrets and keys are unset.
    fn finish(mut self) -> Result<Self, ConfigError> {
        let known: Vec<&str> = crate::sources::BUILT_IN.iter().map(|s| s.name).collect();
        if let Some(unknown) = self.sections.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(ConfigError::Invalid(format!(
                "unknown key `{unknown}` (a setting, or a source's section: {})",
                known.join(", ")
            )));
        }
        let entries = self.catalog_entries()?;
        let catalog = crate::domain::Catalog::new(&entries, &self.mapping.system_aliases)
            .map_err(ConfigError::Invalid)?;
        self.mapping.catalog_aliases = catalog.aliases();
        self.checked_catalog = std::sync::Arc::new(catalog);
        self.secrets.retain(|_, secret| !secret.trim().is_empty());
        self.api.heroku_key = self.api.heroku_key.filter(|k| !k.is_empty());
        self.api.octopus_key = self.api.octopus_key.filter(|k| !k.is_empty());
        self.webhook_rate_limit = self.webhook_rate_limit.max(0.0);
        self.retry.max_attempts = self.api.retry_max_attempts.unwrap_or(25).max(1);
        Ok(self)
    }

    /// The files `[catalog] backstage_files` matches now (none when a pattern matches nothing).
    pub fn catalog_files(&self) -> Vec<PathBuf> {
        self.catalog.files(self.base_dir.as_deref()).unwrap_or_default()
    }

    /// The `[systems]` tables over the Components of `[catalog] backstage_files` (a table wins
    /// field by field; aliases add up).
    fn catalog_entries(&self) -> Result<BTreeMap<String, crate::domain::CatalogEntry>, ConfigError> {
        let mut entries: BTreeMap<String, crate::domain::CatalogEntry> = BTreeMap::new();
        for path in self
            .catalog
            .files(self.base_dir.as_deref())
            .map_err(ConfigError::Invalid)?
        {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let components = crate::domain::backstage::components(&text)
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            for (name, mut entry) in components {
                entry.origin = Some(format!("{} (Component {name})", path.display()));
                let merged = match entries.remove(&name) {
                    Some(before) => before.over(entry),
                    None => entry,
                };
                entries.insert(name, merged);
            }
        }
        drop_shared_aliases(&mut entries);
        for (name, table) in &self.systems {
            let mut table = table.clone();
            table.origin = Some(format!("[systems.{name}]"));
            let merged = match entries.remove(name) {
                Some(backstage) => table.over(backstage),
                None => table,
            };
            entries.insert(name.clone(), merged);
        }
        for (name, repository) in &self.repositories {
            let entry = entries
                .entry(name.clone())
                .or_insert_with(|| crate::domain::CatalogEntry {
                    origin: Some(format!("[repositories] {name}")),
                    ..Default::default()
                });
            match &entry.repository {
                Some(other) if other.trim() != repository.trim() => {
                    return Err(ConfigError::Invalid(format!(
                        "[repositories] {name} = \"{repository}\" but {} says `{other}`: keep one",
                        entry.origin.as_deref().unwrap_or("the catalog")
                    )));
                }
                _ => entry.repository = Some(repository.clone()),
            }
        }
        Ok(entries)
    }

    /// A source's section of the file.
    pub fn section<'a>(&'a self, name: &'a str) -> crate::sources::Section<'a> {
        crate::sources::Section {
            name,
            value: self.sections.get(name),
        }
    }

    /// The database pool's size: as set, else by database.
    pub fn pool_size(&self) -> u32 {
        self.database_max_connections
            .unwrap_or(if self.database_url.starts_with("sqlite:") {
                sqlite_pool_size()
            } else {
                16
            })
    }
}

/// SQLite readers: one per core and a spare (the writer has its own connection). SQLite
/// readers work on this process's own cores, so more of them only add page caches and threads
/// (each keeps its own C-library heap) for no more throughput (README, Performance).
fn sqlite_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    (cores + 2).clamp(4, 16)
}

/// Values as people type them in variables: a token of digits is still text, a list may be
/// comma-separated.
pub(crate) mod lenient {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Str(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }

    impl Text {
        fn into_string(self) -> String {
            match self {
                Text::Str(s) => s,
                Text::Int(n) => n.to_string(),
                Text::Float(n) => n.to_string(),
                Text::Bool(b) => b.to_string(),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<Text>),
        One(Text),
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Text>::deserialize(d)?.map(Text::into_string))
    }

    pub fn map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
        Ok(BTreeMap::<String, Text>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, v.into_string()))
            .collect())
    }

    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match List::deserialize(d)? {
            List::Many(items) => items.into_iter().map(Text::into_string).collect(),
            List::One(one) => one
                .into_string()
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_everything_and_flags_win_over_it() {
        let file = tempfile_with(
            r#"
            listen = "0.0.0.0:9000"
            database_url = "postgres://db/shiplog"
            [secrets]
            generic = "from-file"
            [mapping.environment_aliases]
            production = ["eu-prod"]
            "#,
        );
        let args = SettingsArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:1".into()),
            secrets: vec!["gitlab=from-flag".into()],
            ..SettingsArgs::default()
        };
        let settings = Settings::load(&args).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:1");
        assert_eq!(settings.database_url, "postgres://db/shiplog");
        assert_eq!(settings.pool_size(), 16);
        assert_eq!(
            settings.secrets.get("generic").map(String::as_str),
            Some("from-file")
        );
        assert_eq!(
            settings.secrets.get("gitlab").map(String::as_str),
            Some("from-flag")
        );
        assert_eq!(
            settings.mapping.environment_aliases["production"],
            vec!["eu-prod".to_string()]
        );
        let _ = std::fs::remove_file(file);
    }

    fn tempfile_with(text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("shiplog-config-{}.toml", crate::startup::random_token(6)));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_a_local_sqlite_file_on_port_8080() {
        let settings = Settings::from_toml("").unwrap();
        assert_eq!(settings.listen, "127.0.0.1:8080");
        assert_eq!(settings.database_url, "sqlite://shiplog.db");
        assert_eq!(settings.sqlite_synchronous, SqliteSynchronous::Full);
        assert_eq!(settings.retry.max_attempts, 25);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let error = Settings::from_toml("listn = \"x\"").unwrap_err().to_string();
        assert!(error.contains("listn"), "{error}");
        assert!(Settings::from_toml("[mapping]\nsystem_alias = {}").is_err());
        assert!(Settings::from_toml("[jenkins]\ndefault_environment = \"x\"").is_ok());
    }

    #[test]
    fn repositories_are_a_short_way_to_name_a_systems_repository() {
        let settings = Settings::from_toml(
            "[repositories]\nbilling = \"github:acme/billing\"\n[systems.web]\nteam = \"frontend\"\n\
             [repositories]\n",
        );
        assert!(settings.is_err(), "a table twice is a TOML error");
        let settings = Settings::from_toml(
            "[repositories]\nbilling = \"github:acme/billing\"\nweb = \"gitlab:acme/web\"\n\
             [systems.web]\nteam = \"frontend\"",
        )
        .unwrap();
        let catalog = &settings.checked_catalog;
        let repository = |name: &str| {
            catalog
                .system(name)
                .and_then(|s| s.repository.as_ref())
                .map(|r| r.key())
        };
        assert_eq!(repository("billing").as_deref(), Some("github:acme/billing"));
        assert_eq!(repository("web").as_deref(), Some("gitlab:acme/web"));
        assert_eq!(
            catalog.system("web").and_then(|s| s.team.as_deref()),
            Some("frontend")
        );
        let error = Settings::from_toml(
            "[repositories]\nweb = \"gitlab:acme/web\"\n[systems.web]\nrepository = \"github:acme/web\"",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("[repositories] web") && error.contains("[systems.web]"),
            "{error}"
        );
        let error = Settings::from_toml("[repositories]\nweb = \"acme/web\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("github:owner/name"), "{error}");
    }

    #[test]
    fn lists_and_secrets_read_as_people_type_them() {
        let settings = Settings::from_toml("api_tokens = \"a, b\"\n[secrets]\ngitlab = 12345").unwrap();
        assert_eq!(settings.api_tokens, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(settings.secrets["gitlab"], "12345");
    }
}
