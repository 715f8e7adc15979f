//! The store: the only place that speaks SQL. It owns the connection pool, runs migrations,
//! answers the reads GraphQL needs and, through [`ingest::Writer`], applies deliveries.
//!
//! Every query is built with SeaORM / sea-query, so SQLite and PostgreSQL run the same code.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use entity::{deployment_events, deployments, environments, settings, systems};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};

use crate::domain::DeploymentStatus;

pub mod amend;
pub mod analytics;
mod apply;
pub mod board;
pub mod bulk;
pub mod commits;
pub mod counts;
pub mod fanout;
pub mod follow;
pub mod history;
pub mod merge;
mod nodelay;
pub mod pending;
pub mod replay;
pub mod writer;

pub use apply::{NewDelivery, Outcome, Target, Work};

/// Why the store could not do something. Callers turn these into opaque 5xx answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("the ingest writer has stopped")]
    WriterGone,
    /// A transaction failed in a way that leaves its connection's state unknown.
    #[error("the transaction failed: {0}")]
    Broken(String),
    /// The delivery waited in the writer's queue past its sender's deadline; it was not written.
    #[error("the database did not take the delivery in time; it was not stored")]
    TimedOut,
    #[error("{0}")]
    Invalid(String),
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub url: String,
    pub max_connections: u32,
    /// SQLite `synchronous`: FULL keeps acknowledged deliveries across power loss.
    pub sqlite_synchronous_full: bool,
}

/// Which kind of named row: systems and environments are kept alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameKind {
    System,
    Environment,
}

/// A row that is an id and a name (systems, environments).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Named {
    pub id: i64,
    pub name: String,
}

impl From<systems::Model> for Named {
    fn from(model: systems::Model) -> Self {
        Self {
            id: model.id,
            name: model.name,
        }
    }
}

impl From<environments::Model> for Named {
    fn from(model: environments::Model) -> Self {
        Self {
            id: model.id,
            name: model.name,
        }
    }
}

/// Which deployments a list or subscription wants. Empty lists mean no filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeploymentFilter {
    pub systems: Vec<String>,
    pub environments: Vec<String>,
    pub statuses: Vec<DeploymentStatus>,
    pub sources: Vec<String>,
    /// Inclusive bounds on the deployment's own time (finished, else started, else first seen).
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub commit_sha: Option<String>,
    /// Only deployments a delivery decided by this rule touched (`jenkins.deployment_jobs`;
    /// `Delivery.decision.rule`). Lists and counts only: live events do not carry it.
    pub rule: Option<String>,
    /// Key:value tags a deployment must all carry.
    pub tags: Vec<(String, String)>,
}

/// A position in the deployments order: (deployed_at, id), newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub deployed_at: i64,
    pub id: i64,
}

impl From<&deployments::Model> for Position {
    fn from(model: &deployments::Model) -> Self {
        Self {
            deployed_at: model.deployed_at,
            id: model.id,
        }
    }
}

/// One page request in keyset form.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    /// Only rows older than this (forward paging).
    pub after: Option<Position>,
    /// Only rows newer than this (backward paging).
    pub before: Option<Position>,
    pub limit: u64,
    /// Take the page from the old end (Relay `last`).
    pub from_end: bool,
}

/// A page of deployments, newest first, and whether more lie beyond it in the paging direction.
#[derive(Clone, Debug)]
pub struct Page {
    pub rows: Vec<deployments::Model>,
    pub has_more: bool,
}

/// The database handle every part of shiplog shares.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    statements: Arc<AtomicU64>,
    /// Systems and environments read so far, by name and by id. Ids are never reused
    /// (AUTOINCREMENT on SQLite, a sequence on PostgreSQL) and rows never renamed, so an entry
    /// never goes stale: filters resolve names and list pages get names without a statement.
    names: Arc<std::sync::RwLock<KnownNames>>,
}

#[derive(Default)]
struct KnownNames {
    systems: Known,
    environments: Known,
}

impl KnownNames {
    fn kind(&self, kind: NameKind) -> &Known {
        match kind {
            NameKind::System => &self.systems,
            NameKind::Environment => &self.environments,
        }
    }

    fn kind_mut(&mut self, kind: NameKind) -> &mut Known {
        match kind {
            NameKind::System => &mut self.systems,
            NameKind::Environment => &mut self.environments,
        }
    }
}

/// One kind of named row, both ways.
#[derive(Default)]
struct Known {
    by_name: HashMap<String, i64>,
    by_id: HashMap<i64, Named>,
}

impl Known {
    fn remember(&mut self, rows: &[Named]) {
        if self.by_id.len() + rows.len() > NAME_CACHE_LIMIT {
            *self = Self::default();
        }
        for named in rows {
            self.by_name.insert(named.name.clone(), named.id);
            self.by_id.insert(named.id, named.clone());
        }
    }
}

/// Rows in groups of at most `size`, for multi-row statements.
fn chunks<T>(rows: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        out.push(rows.by_ref().take(size).collect());
    }
    out
}

/// Entries the name cache holds per kind before it starts over (systems and environments
/// number in the hundreds; this only bounds a pathological install).
const NAME_CACHE_LIMIT: usize = 100_000;

/// A filter with names turned into ids, so queries use the (system_id, deployed_at) and
/// (environment_id, deployed_at) indexes directly.
#[derive(Clone, Debug, Default)]
struct Resolved {
    system_ids: Option<Vec<i64>>,
    environment_ids: Option<Vec<i64>>,
}

impl Store {
    /// Connects, setting SQLite up for a server: WAL, a busy timeout, foreign keys on, and a
    /// pool of several connections so readers never queue behind the writer.
    pub async fn connect(options: &DbOptions) -> Result<Self, StoreError> {
        let statements = Arc::new(AtomicU64::new(0));
        let db = Self::open(options, statements.clone()).await?;
        Ok(Self {
            db,
            statements,
            names: Arc::default(),
        })
    }

    /// Another handle on the same database with a pool of its own, opened on the runtime this
    /// is called on (so that runtime watches its sockets): the ingest writer's, on its thread.
    /// It shares this handle's statement count and name cache.
    pub async fn reopen(&self, options: &DbOptions) -> Result<Self, StoreError> {
        Ok(Self {
            db: Self::open(options, self.statements.clone()).await?,
            statements: self.statements.clone(),
            names: self.names.clone(),
        })
    }

    async fn open(options: &DbOptions, counter: Arc<AtomicU64>) -> Result<DatabaseConnection, StoreError> {
        let mut connect = ConnectOptions::new(options.url.clone());
        connect
            .max_connections(options.max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10))
            // sqlx pings every connection it hands out by default: a round trip before each
            // transaction and each query. Only connections idle for a while are checked now.
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            .sqlx_logging(false);
        if options.url.starts_with("postgres") {
            // On the pool, so every connection it opens gets it (sea-orm's own `after_connect`
            // runs once, after the pool's first connections).
            connect.map_sqlx_postgres_pool_opts(|pool| {
                pool.after_connect(|_, _| {
                    Box::pin(async {
                        nodelay::apply();
                        Ok(())
                    })
                })
            });
        }
        if options.url.starts_with("sqlite:") {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            let synchronous = if options.sqlite_synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            };
            connect.map_sqlx_sqlite_opts(move |opts| {
                opts.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        }
        let mut db = Database::connect(connect).await?;
        db.set_metric_callback(move |info| {
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(target: "shiplog::sql", elapsed = ?info.elapsed, statement = %info.statement.sql);
        });
        Ok(db)
    }

    /// Brings the schema up to date. On PostgreSQL an advisory lock makes replicas that start
    /// together migrate once, one after the other.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        if self.backend() == DatabaseBackend::Postgres {
            // A transaction-scoped advisory lock: released by the commit (or the rollback when
            // a migration fails), so a crashed replica never leaves it held.
            let txn = sea_orm::TransactionTrait::begin(&self.db).await?;
            txn.execute_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"),
            ))
            .await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await?;
        } else {
            Migrator::up(&self.db, None).await?;
        }
        Ok(())
    }

    /// The raw connection, for the ingest writer.
    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which database this is.
    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// How many SQL statements this process has run (for tests and metrics).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }

    /// A stored setting.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(settings::Entity::find_by_id(key.to_string())
            .one(&self.db)
            .await?
            .map(|row| row.value))
    }

    /// Refreshes the planner's statistics of the tables an import grows (PostgreSQL): while
    /// they still describe the table as it was (autovacuum runs a minute later at best, and
    /// some servers turn it off), PostgreSQL reads a source's whole index range for each batch
    /// (113 ms instead of 0.6 ms at 20,000 deployments). SQLite plans without them.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        if self.backend() == sea_orm::DatabaseBackend::Postgres {
            self.db
                .execute_unprepared("ANALYZE deployments, deliveries, deployment_events")
                .await?;
        }
        Ok(())
    }

    /// Stores a setting, replacing what was there.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let row = settings::ActiveModel {
            key: sea_orm::Set(key.to_string()),
            value: sea_orm::Set(value.to_string()),
        };
        settings::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(settings::Column::Key)
                    .update_column(settings::Column::Value)
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Removes a setting (nothing when there is none).
    pub async fn delete_setting(&self, key: &str) -> Result<(), StoreError> {
        settings::Entity::delete_by_id(key.to_string())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Every setting whose key starts with `prefix`, by key.
    pub async fn settings_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        use sea_orm::QueryOrder;
        Ok(settings::Entity::find()
            .filter(settings::Column::Key.starts_with(prefix))
            .order_by_asc(settings::Column::Key)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.key, row.value))
            .collect())
    }

    /// Takes (or renews) the lease `key` for `holder` until `until` (epoch ms) unless another
    /// holder's lease runs past `now`: whether `holder` has it. One statement each way, so two
    /// replicas asking at once never both get it.
    pub async fn take_lease(
        &self,
        key: &str,
        holder: &str,
        until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        // Zero-padded times compare as text, on every backend.
        let value = format!("{until:015}:{holder}");
        let row = settings::ActiveModel {
            key: sea_orm::Set(key.to_string()),
            value: sea_orm::Set(value.clone()),
        };
        let inserted = settings::Entity::insert(row)
            .on_conflict_do_nothing_on([settings::Column::Key])
            .exec_without_returning(&self.db)
            .await?;
        if matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
            return Ok(true);
        }
        let taken = settings::Entity::update_many()
            .col_expr(settings::Column::Value, sea_orm::sea_query::Expr::value(value))
            .filter(settings::Column::Key.eq(key))
            .filter(
                sea_orm::Condition::any()
                    .add(settings::Column::Value.lt(format!("{now:015}:")))
                    .add(settings::Column::Value.ends_with(format!(":{holder}"))),
            )
            .exec(&self.db)
            .await?;
        Ok(taken.rows_affected > 0)
    }

    /// How many deployments of a source shiplog first learned `by` one path.
    pub async fn deployments_discovered(
        &self,
        source: &str,
        by: crate::domain::Discovery,
    ) -> Result<u64, StoreError> {
        use sea_orm::PaginatorTrait;
        Ok(deployments::Entity::find()
            .filter(deployments::Column::Source.eq(source))
            .filter(deployments::Column::DiscoveredBy.eq(by))
            .count(&self.db)
            .await?)
    }

    /// The value of a journaled header in a source's oldest delivery that has it.
    pub async fn first_journaled_header(
        &self,
        source: &str,
        header: &str,
    ) -> Result<Option<String>, StoreError> {
        use sea_orm::{QueryOrder, QuerySelect};
        let row = entity::deliveries::Entity::find()
            .filter(entity::deliveries::Column::Source.eq(source))
            .filter(entity::deliveries::Column::Headers.contains(format!("\"{header}\"")))
            .order_by_asc(entity::deliveries::Column::Id)
            .limit(1)
            .one(self.connection())
            .await?;
        Ok(row.and_then(|row| {
            let headers: serde_json::Value = serde_json::from_str(&row.headers).ok()?;
            headers.get(header)?.as_str().map(str::to_string)
        }))
    }

    /// Stores a setting unless one is there already; returns the value that is stored (so two
    /// replicas generating a secret at once agree on one).
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let row = settings::ActiveModel {
            key: sea_orm::Set(key.to_string()),
            value: sea_orm::Set(value.to_string()),
        };
        settings::Entity::insert(row)
            .on_conflict_do_nothing_on([settings::Column::Key])
            .exec(&self.db)
            .await?;
        self.setting(key)
            .await?
            .ok_or_else(|| StoreError::Invalid(format!("setting {key} vanished")))
    }

    /// A write of about a delivery's size, rolled back by a delete in the same transaction and
    /// committed: whether the database can store deliveries (the ingest writer's probe after a
    /// failure, such as a full disk).
    pub async fn write_probe(&self) -> Result<(), StoreError> {
        const KEY: &str = "shiplog.write-probe";
        let txn = sea_orm::TransactionTrait::begin(&self.db).await?;
        let row = settings::ActiveModel {
            key: sea_orm::Set(KEY.to_string()),
            value: sea_orm::Set("x".repeat(16 * 1024)),
        };
        settings::Entity::insert(row)
            .on_conflict_do_nothing_on([settings::Column::Key])
            .exec(&txn)
            .await?;
        settings::Entity::delete_by_id(KEY.to_string()).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The SELECT for a filter; None when a named system or environment does not exist (so
    /// nothing can match).
    async fn select(
        &self,
        filter: &DeploymentFilter,
    ) -> Result<Option<sea_orm::Select<deployments::Entity>>, StoreError> {
        let resolved = Resolved {
            system_ids: self.resolve(NameKind::System, &filter.systems).await?,
            environment_ids: self.resolve(NameKind::Environment, &filter.environments).await?,
        };
        if resolved.system_ids.as_ref().is_some_and(Vec::is_empty)
            || resolved.environment_ids.as_ref().is_some_and(Vec::is_empty)
        {
            return Ok(None);
        }
        // Deployments people deleted are in no list or count (`Query.deployment` still reads them).
        let mut select = deployments::Entity::find().filter(deployments::Column::DeletedAt.is_null());
        if let Some(ids) = resolved.system_ids {
            select = select.filter(deployments::Column::SystemId.is_in(ids));
        }
        if let Some(ids) = resolved.environment_ids {
            select = select.filter(deployments::Column::EnvironmentId.is_in(ids));
        }
        if !filter.statuses.is_empty() {
            select = select.filter(
                deployments::Column::Status.is_in(filter.statuses.iter().map(|s| s.as_str().to_string())),
            );
        }
        if !filter.sources.is_empty() {
            select = select.filter(deployments::Column::Source.is_in(filter.sources.iter().cloned()));
        }
        if let Some(from) = filter.from {
            select = select.filter(deployments::Column::DeployedAt.gte(from));
        }
        if let Some(to) = filter.to {
            select = select.filter(deployments::Column::DeployedAt.lte(to));
        }
        if let Some(sha) = &filter.commit_sha {
            // A short sha matches the full one it abbreviates.
            let sha = sha.trim().to_lowercase();
            select = select.filter(deployments::Column::CommitSha.starts_with(sha));
        }
        if let Some(rule) = &filter.rule {
            select = select.filter(deployments::Column::Id.in_subquery(decided_by(rule)));
        }
        let backend = self.db.get_database_backend();
        for (key, value) in &filter.tags {
            select = select.filter(tag_condition(backend, key, value));
        }
        Ok(Some(select))
    }

    /// Ids of the named systems (or environments); None when no names were given.
    pub(crate) async fn resolve(
        &self,
        kind: NameKind,
        names: &[String],
    ) -> Result<Option<Vec<i64>>, StoreError> {
        if names.is_empty() {
            return Ok(None);
        }
        let mut ids = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        if let Ok(cache) = self.names.read() {
            let known = cache.kind(kind);
            for name in names.iter().filter(|n| *n != NO_SYSTEM) {
                match known.by_name.get(name) {
                    Some(id) => ids.push(*id),
                    None => missing.push(name.clone()),
                }
            }
        } else {
            missing = names.iter().filter(|n| *n != NO_SYSTEM).cloned().collect();
        }
        if !missing.is_empty() {
            let found = named_where(&self.db, kind, NamedBy::Names(missing)).await?;
            if let Ok(mut cache) = self.names.write() {
                cache.kind_mut(kind).remember(&found);
            }
            ids.extend(found.into_iter().map(|named| named.id));
        }
        Ok(Some(ids))
    }

    /// The database's plan for one deployments page (EXPLAIN on PostgreSQL, EXPLAIN QUERY PLAN
    /// on SQLite), for tests and operators checking that lists use the indexes.
    pub async fn explain_page(
        &self,
        filter: &DeploymentFilter,
        page: PageRequest,
    ) -> Result<String, StoreError> {
        let Some(select) = self.page_select(filter, page).await? else {
            return Ok(String::from("no rows can match"));
        };
        let statement = sea_orm::QueryTrait::build(&select, self.backend());
        let prefix = match self.backend() {
            DatabaseBackend::Postgres => "EXPLAIN ",
            _ => "EXPLAIN QUERY PLAN ",
        };
        let explain = Statement {
            sql: format!("{prefix}{}", statement.sql),
            ..statement
        };
        let rows = self.db.query_all_raw(explain).await?;
        let mut plan = Vec::new();
        for row in rows {
            let column = if self.backend() == DatabaseBackend::Postgres {
                "QUERY PLAN"
            } else {
                "detail"
            };
            plan.push(row.try_get::<String>("", column)?);
        }
        Ok(plan.join("\n"))
    }

    /// One page of deployments matching a filter, newest first.
    pub async fn deployments_page(
        &self,
        filter: &DeploymentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError> {
        let Some(select) = self.page_select(filter, page).await? else {
            return Ok(Page {
                rows: Vec::new(),
                has_more: false,
            });
        };
        let mut rows = select.all(&self.db).await?;
        let has_more = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        if page.from_end {
            rows.reverse();
        }
        Ok(Page { rows, has_more })
    }

    async fn page_select(
        &self,
        filter: &DeploymentFilter,
        page: PageRequest,
    ) -> Result<Option<sea_orm::Select<deployments::Entity>>, StoreError> {
        let position = |p: Position| Expr::tuple([Expr::val(p.deployed_at), Expr::val(p.id)]);
        let key = || {
            Expr::tuple([
                Expr::col((deployments::Entity, deployments::Column::DeployedAt)),
                Expr::col((deployments::Entity, deployments::Column::Id)),
            ])
        };
        let Some(mut select) = self.select(filter).await? else {
            return Ok(None);
        };
        if let Some(after) = page.after {
            select = select.filter(key().lt(position(after)));
        }
        if let Some(before) = page.before {
            select = select.filter(key().gt(position(before)));
        }
        let order = if page.from_end {
            sea_orm::Order::Asc
        } else {
            sea_orm::Order::Desc
        };
        Ok(Some(
            select
                .order_by(deployments::Column::DeployedAt, order.clone())
                .order_by(deployments::Column::Id, order)
                .limit(page.limit + 1),
        ))
    }

    /// One deployment by id.
    pub async fn deployment(&self, id: i64) -> Result<Option<deployments::Model>, StoreError> {
        Ok(deployments::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// One deployment by its source and its id in that source.
    pub async fn deployment_in(
        &self,
        source: &str,
        external_id: &str,
    ) -> Result<Option<deployments::Model>, StoreError> {
        Ok(deployments::Entity::find()
            .filter(deployments::Column::Source.eq(source))
            .filter(deployments::Column::ExternalId.eq(external_id))
            .one(&self.db)
            .await?)
    }

    /// The newest deployment of a system, optionally in one environment.
    pub async fn last_deployment(
        &self,
        system_id: i64,
        environment: Option<&str>,
    ) -> Result<Option<deployments::Model>, StoreError> {
        let filter = DeploymentFilter {
            environments: environment.map(|e| vec![e.to_string()]).unwrap_or_default(),
            ..DeploymentFilter::default()
        };
        let Some(select) = self.select(&filter).await? else {
            return Ok(None);
        };
        Ok(select
            .filter(deployments::Column::SystemId.eq(system_id))
            .order_by_desc(deployments::Column::DeployedAt)
            .order_by_desc(deployments::Column::Id)
            .one(&self.db)
            .await?)
    }

    /// Systems by id (for the DataLoader and list pages); cached, see `names`.
    pub async fn systems_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, Named>, StoreError> {
        self.named_by_ids(NameKind::System, ids).await
    }

    /// Environments by id (for the DataLoader and list pages); cached, see `names`.
    pub async fn environments_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, Named>, StoreError> {
        self.named_by_ids(NameKind::Environment, ids).await
    }

    async fn named_by_ids(&self, kind: NameKind, ids: &[i64]) -> Result<HashMap<i64, Named>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        if let Ok(cache) = self.names.read() {
            let known = cache.kind(kind);
            for id in ids {
                match known.by_id.get(id) {
                    Some(named) => {
                        found.insert(*id, named.clone());
                    }
                    None => missing.push(*id),
                }
            }
        } else {
            missing = ids.to_vec();
        }
        if missing.is_empty() {
            return Ok(found);
        }
        missing.sort_unstable();
        missing.dedup();
        let rows = named_where(&self.db, kind, NamedBy::Ids(missing)).await?;
        if let Ok(mut cache) = self.names.write() {
            cache.kind_mut(kind).remember(&rows);
        }
        found.extend(rows.into_iter().map(|named| (named.id, named)));
        Ok(found)
    }

    /// Status events of several deployments, oldest first (for the DataLoader).
    pub async fn events_of(
        &self,
        deployment_ids: &[i64],
    ) -> Result<HashMap<i64, Vec<deployment_events::Model>>, StoreError> {
        let rows = deployment_events::Entity::find()
            .filter(deployment_events::Column::DeploymentId.is_in(deployment_ids.iter().copied()))
            .order_by_asc(deployment_events::Column::OccurredAt)
            .order_by_asc(deployment_events::Column::Id)
            .all(&self.db)
            .await?;
        let mut grouped: HashMap<i64, Vec<deployment_events::Model>> = HashMap::new();
        for row in rows {
            grouped.entry(row.deployment_id).or_default().push(row);
        }
        Ok(grouped)
    }

    /// Every system, by name.
    pub async fn systems(&self) -> Result<Vec<Named>, StoreError> {
        Ok(systems::Entity::find()
            .order_by_asc(systems::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Named::from)
            .collect())
    }

    /// Every environment, by name.
    pub async fn environments(&self) -> Result<Vec<Named>, StoreError> {
        Ok(self
            .environments_with_stops()
            .await?
            .into_iter()
            .map(|(named, _)| named)
            .collect())
    }

    /// Every environment, by name, with when its tool last said it stopped it (one statement).
    pub async fn environments_with_stops(&self) -> Result<Vec<(Named, Option<i64>)>, StoreError> {
        Ok(environments::Entity::find()
            .order_by_asc(environments::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                let stopped_at = row.stopped_at;
                (Named::from(row), stopped_at)
            })
            .collect())
    }

    /// The named systems that have deployments, by name (a catalog's team, say).
    pub async fn systems_named(&self, names: &[String]) -> Result<Vec<Named>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        Ok(systems::Entity::find()
            .filter(systems::Column::Name.is_in(names.iter().cloned()))
            .order_by_asc(systems::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Named::from)
            .collect())
    }

    /// A system by name.
    pub async fn system(&self, name: &str) -> Result<Option<Named>, StoreError> {
        Ok(systems::Entity::find()
            .filter(systems::Column::Name.eq(name))
            .one(&self.db)
            .await?
            .map(Named::from))
    }

    /// An environment by name.
    pub async fn environment(&self, name: &str) -> Result<Option<Named>, StoreError> {
        Ok(environments::Entity::find()
            .filter(environments::Column::Name.eq(name))
            .one(&self.db)
            .await?
            .map(Named::from))
    }

    /// When a tool last said it stopped an environment, if one did.
    pub async fn environment_stopped_at(&self, id: i64) -> Result<Option<i64>, StoreError> {
        Ok(environments::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .and_then(|row| row.stopped_at))
    }

    /// The environments a system has been deployed to.
    pub async fn environments_of_system(&self, system_id: i64) -> Result<Vec<Named>, StoreError> {
        let ids = Query::select()
            .distinct()
            .column(deployments::Column::EnvironmentId)
            .from(deployments::Entity)
            .and_where(Expr::col(deployments::Column::SystemId).eq(system_id))
            .and_where(Expr::col(deployments::Column::DeletedAt).is_null())
            .to_owned();
        Ok(environments::Entity::find()
            .filter(environments::Column::Id.in_subquery(ids))
            .order_by_asc(environments::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Named::from)
            .collect())
    }

    /// The systems deployed to an environment.
    pub async fn systems_of_environment(&self, environment_id: i64) -> Result<Vec<Named>, StoreError> {
        let ids = Query::select()
            .distinct()
            .column(deployments::Column::SystemId)
            .from(deployments::Entity)
            .and_where(Expr::col(deployments::Column::EnvironmentId).eq(environment_id))
            .and_where(Expr::col(deployments::Column::DeletedAt).is_null())
            .to_owned();
        Ok(systems::Entity::find()
            .filter(systems::Column::Id.in_subquery(ids))
            .order_by_asc(systems::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Named::from)
            .collect())
    }
}

impl NameKind {
    /// Its table: systems and environments have the same columns (id, name, created_at).
    fn table(self) -> sea_orm::sea_query::DynIden {
        use sea_orm::sea_query::IntoIden;
        match self {
            NameKind::System => systems::Entity.into_iden(),
            NameKind::Environment => environments::Entity.into_iden(),
        }
    }

    /// Every kind.
    pub const ALL: [NameKind; 2] = [NameKind::System, NameKind::Environment];
}

/// The named tables' columns, by name (the same in both).
const ID: &str = "id";
const NAME: &str = "name";

/// Which rows of a named table to read.
enum NamedBy {
    Ids(Vec<i64>),
    Names(Vec<String>),
}

/// Systems (or environments) by id or by name.
async fn named_where<C: ConnectionTrait>(
    conn: &C,
    kind: NameKind,
    by: NamedBy,
) -> Result<Vec<Named>, StoreError> {
    use sea_orm::sea_query::Alias;
    let condition = match by {
        NamedBy::Ids(ids) => Expr::col(Alias::new(ID)).is_in(ids),
        NamedBy::Names(names) => Expr::col(Alias::new(NAME)).is_in(names),
    };
    let select = Query::select()
        .columns([Alias::new(ID), Alias::new(NAME)])
        .from(kind.table())
        .and_where(condition)
        .to_owned();
    let mut named = Vec::new();
    for row in conn.query_all(&select).await? {
        named.push(Named {
            id: row.try_get("", ID)?,
            name: row.try_get("", NAME)?,
        });
    }
    Ok(named)
}

/// One system or environment by id, inside a transaction.
pub(crate) async fn named_by_id<C: ConnectionTrait>(
    conn: &C,
    kind: NameKind,
    id: i64,
) -> Result<Named, StoreError> {
    named_where(conn, kind, NamedBy::Ids(vec![id]))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Invalid(format!("row {id} vanished")))
}

/// The id of a system or environment, created when new (safe against concurrent creators).
pub(crate) async fn ensure_named<C: ConnectionTrait>(
    conn: &C,
    kind: NameKind,
    name: &str,
    now: i64,
) -> Result<i64, StoreError> {
    use sea_orm::sea_query::{Alias, OnConflict};
    let insert = Query::insert()
        .into_table(kind.table())
        .columns([Alias::new(NAME), Alias::new("created_at")])
        .values_panic([name.into(), now.into()])
        .on_conflict(OnConflict::column(Alias::new(NAME)).do_nothing().to_owned())
        .to_owned();
    conn.execute(&insert).await?;
    named_where(conn, kind, NamedBy::Names(vec![name.to_string()]))
        .await?
        .into_iter()
        .next()
        .map(|named| named.id)
        .ok_or_else(|| StoreError::Invalid(format!("{name} vanished")))
}

/// The PostgreSQL advisory lock key that serialises migrations across replicas ("shiplog").
const MIGRATION_LOCK: i64 = 0x0073_6869_706c_6f67;

/// The system name a filter lists when it must match nothing (a team that owns no system): no
/// system has it (names are looked up, never this one), and no real name is a lone NUL.
pub const NO_SYSTEM: &str = "\u{0}";

/// The most names one filter list may hold: more is not a filter a person or a dashboard
/// writes, and each name is a bound parameter of one statement.
pub const MAX_FILTER_NAMES: usize = 1_000;

impl DeploymentFilter {
    /// Checks the filter is one the database can answer: lists of at most `MAX_FILTER_NAMES`
    /// names of at most `MAX_NAME_LEN` bytes, a commit sha of hex digits (at most 64).
    pub fn check(&self) -> Result<(), String> {
        for (field, names) in [
            ("systems", &self.systems),
            ("environments", &self.environments),
            ("sources", &self.sources),
        ] {
            if names.len() > MAX_FILTER_NAMES {
                return Err(format!(
                    "`{field}` lists {} names; a filter holds at most {MAX_FILTER_NAMES}",
                    names.len()
                ));
            }
            if let Some(long) = names.iter().find(|name| name.len() > crate::domain::MAX_NAME_LEN) {
                return Err(format!(
                    "a name in `{field}` is {} bytes; names are at most {} bytes",
                    long.len(),
                    crate::domain::MAX_NAME_LEN
                ));
            }
        }
        if self.tags.len() > crate::domain::tags::MAX_TAGS {
            return Err(format!(
                "`tags` lists {}; a filter holds at most {}",
                self.tags.len(),
                crate::domain::tags::MAX_TAGS
            ));
        }
        if self.rule.as_ref().is_some_and(|rule| rule.len() > 255) {
            return Err("`rule` is a rule's name (`jenkins.deployment_jobs`), at most 255 bytes".into());
        }
        if let Some(sha) = &self.commit_sha {
            let sha = sha.trim();
            if sha.len() > 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("`commitSha` is a commit sha or a prefix of one: up to 64 hex digits".into());
            }
        }
        Ok(())
    }

    /// Whether a deployment matches, in memory (for live events); the same rules as the SQL.
    pub fn matches(&self, deployment: &deployments::Model, system: &str, environment: &str) -> bool {
        let listed = |list: &[String], value: &str| {
            list.is_empty() || list.iter().any(|v| v == value && v != NO_SYSTEM)
        };
        listed(&self.systems, system)
            && listed(&self.environments, environment)
            && listed(&self.sources, &deployment.source)
            && (self.statuses.is_empty() || self.statuses.contains(&deployment.status))
            && self.from.is_none_or(|from| deployment.deployed_at >= from)
            && self.to.is_none_or(|to| deployment.deployed_at <= to)
            && (self.tags.is_empty() || {
                let tags = merge::tags_of(deployment.tags.as_deref());
                self.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
            })
            && self.commit_sha.as_ref().is_none_or(|sha| {
                deployment
                    .commit_sha
                    .as_deref()
                    .is_some_and(|have| have.starts_with(&sha.trim().to_lowercase()))
            })
    }
}

/// Deployments whose stored tags hold `"key":"value"` exactly as `merge::tags_json` writes it
/// (serde_json's quoting), found with a case-sensitive substring search on both backends
/// (SQLite's LIKE ignores ASCII case, PostgreSQL's does not).
fn tag_condition(
    backend: sea_orm::DatabaseBackend,
    key: &str,
    value: &str,
) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func};
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let fragment = format!("{}:{}", quoted(key), quoted(value));
    let function = match backend {
        sea_orm::DatabaseBackend::Postgres => "strpos",
        _ => "instr",
    };
    Expr::expr(
        Func::cust(Alias::new(function))
            .arg(Expr::col((deployments::Entity, deployments::Column::Tags)))
            .arg(fragment),
    )
    .gt(0)
}

/// The ids of deployments an event of which came from a delivery `rule` decided.
fn decided_by(rule: &str) -> sea_orm::sea_query::SelectStatement {
    use entity::{deliveries, deployment_events};
    use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr, Query};
    let marker = crate::domain::Decision::rule_marker(rule)
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Query::select()
        .column((deployment_events::Entity, deployment_events::Column::DeploymentId))
        .from(deployment_events::Entity)
        .inner_join(
            deliveries::Entity,
            Expr::col((deliveries::Entity, deliveries::Column::Id))
                .equals((deployment_events::Entity, deployment_events::Column::DeliveryId)),
        )
        .and_where(
            Expr::col((deliveries::Entity, deliveries::Column::Decision))
                .like(LikeExpr::new(format!("%{marker}%")).escape('\\')),
        )
        .to_owned()
}

/// A lease a worker holds between rounds ([`Store::take_lease`] under it): taken when free,
/// renewed only once half its length has passed, so a worker's rounds do not each write to
/// the database.
#[derive(Debug)]
pub struct Lease {
    key: &'static str,
    holder: String,
    length_ms: i64,
    /// Until when it is this holder's, as far as it knows (epoch ms; 0: it is not).
    until: i64,
}

impl Lease {
    pub fn new(key: &'static str, holder: &str, length: Duration) -> Self {
        Self {
            key,
            holder: holder.to_string(),
            length_ms: length.as_millis() as i64,
            until: 0,
        }
    }

    /// Whether this holder has the lease now (taking or renewing it when due).
    pub async fn hold(&mut self, store: &Store) -> Result<bool, StoreError> {
        let now = crate::domain::now_millis();
        if self.until - now > self.length_ms / 2 {
            return Ok(true);
        }
        let until = now + self.length_ms;
        let held = store.take_lease(self.key, &self.holder, until, now).await?;
        self.until = if held { until } else { 0 };
        Ok(held)
    }
}
