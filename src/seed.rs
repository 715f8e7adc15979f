//! `shiplog seed`: fills a database with realistic deployments for benchmarks and demos:
//! systems across environments over a window of time, mostly successes with some failures,
//! cancellations and a few still running, every source represented. Deterministic for a
//! given `--seed`, so two runs give the same rows.

use entity::{deployment_events, deployments};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QuerySelect, TransactionTrait};

use crate::domain::now_millis;
use crate::store::{Store, StoreError, ensure_environment, ensure_system};

/// What to generate.
#[derive(Clone, Debug, clap::Args)]
pub struct SeedOptions {
    /// How many deployments to add.
    #[arg(long, default_value_t = 10_000)]
    pub deployments: u64,
    /// How many systems they spread over.
    #[arg(long, default_value_t = 50)]
    pub systems: u32,
    /// How many environments (production, staging, development, test, qa, sandbox, ...).
    #[arg(long, default_value_t = 6)]
    pub environments: u32,
    /// How many days back from now they spread over.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Random seed: the same seed gives the same deployments.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            deployments: 10_000,
            systems: 50,
            environments: 6,
            days: 365,
            seed: 42,
        }
    }
}

const ENVIRONMENTS: &[&str] = &["production", "staging", "development", "test", "qa", "sandbox"];
const SOURCES: &[&str] = &["generic", "gitlab", "jenkins", "heroku", "octopus"];
const ACTORS: &[&str] = &[
    "ada",
    "grace",
    "linus",
    "margaret",
    "ken",
    "barbara",
    "deploy-bot",
];
const WORDS: &[&str] = &[
    "billing",
    "search",
    "checkout",
    "accounts",
    "catalog",
    "payments",
    "inventory",
    "shipping",
    "auth",
    "notifications",
];
/// Rows per INSERT statement (20 columns each, well under both databases' parameter limits).
const ROWS_PER_STATEMENT: usize = 500;
/// Rows per transaction.
const ROWS_PER_TRANSACTION: u64 = 20_000;

/// A small, fast, deterministic generator (SplitMix64).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The name of system number `i`.
pub fn system_name(i: u32) -> String {
    let word = WORDS[i as usize % WORDS.len()];
    match i as usize / WORDS.len() {
        0 => word.to_string(),
        n => format!("{word}-{}", n + 1),
    }
}

/// The name of environment number `i`.
pub fn environment_name(i: u32) -> String {
    match ENVIRONMENTS.get(i as usize) {
        Some(name) => name.to_string(),
        None => format!("env-{i}"),
    }
}

/// Adds the deployments; returns how many were written.
pub async fn seed(store: &Store, options: &SeedOptions) -> Result<u64, StoreError> {
    let db = store.connection();
    let now = now_millis();
    let mut system_ids = Vec::new();
    for i in 0..options.systems.max(1) {
        system_ids.push(ensure_system(db, &system_name(i), now).await?);
    }
    let mut environment_ids = Vec::new();
    for i in 0..options.environments.max(1) {
        environment_ids.push(ensure_environment(db, &environment_name(i), now).await?);
    }
    let span = i64::from(options.days.max(1)) * 86_400_000;
    let start_of_run = now - span;
    let mut random = Random(options.seed);
    let run_tag = format!("{:x}", options.seed ^ (now as u64));
    let mut written = 0u64;
    while written < options.deployments {
        let in_transaction = ROWS_PER_TRANSACTION.min(options.deployments - written);
        let txn = db.begin().await?;
        let before: i64 = deployments::Entity::find()
            .select_only()
            .column_as(deployments::Column::Id.max(), "max")
            .into_tuple::<Option<i64>>()
            .one(&txn)
            .await?
            .flatten()
            .unwrap_or(0);
        let mut done = 0u64;
        while done < in_transaction {
            let rows = (ROWS_PER_STATEMENT as u64).min(in_transaction - done);
            let mut insert = Query::insert()
                .into_table(deployments::Entity)
                .columns([
                    deployments::Column::Source,
                    deployments::Column::ExternalId,
                    deployments::Column::SystemId,
                    deployments::Column::EnvironmentId,
                    deployments::Column::Status,
                    deployments::Column::RawStatus,
                    deployments::Column::RawSystem,
                    deployments::Column::RawEnvironment,
                    deployments::Column::StatusAt,
                    deployments::Column::StartedAt,
                    deployments::Column::FinishedAt,
                    deployments::Column::DeployedAt,
                    deployments::Column::CommitSha,
                    deployments::Column::GitRef,
                    deployments::Column::Version,
                    deployments::Column::Url,
                    deployments::Column::Actor,
                    deployments::Column::FirstSeenAt,
                    deployments::Column::UpdatedAt,
                ])
                .to_owned();
            for row in 0..rows {
                let n = written + done + row;
                let system = random.below(system_ids.len() as u64) as usize;
                // Production and staging get most deployments, as in real life.
                let environment = match random.below(100) {
                    0..=34 => 0,
                    35..=64 => 1,
                    _ => random.below(environment_ids.len() as u64) as usize,
                }
                .min(environment_ids.len() - 1);
                let started = start_of_run + random.below(span as u64) as i64;
                let duration = 30_000 + random.below(20 * 60_000) as i64;
                let (status, raw) = match random.below(100) {
                    0..=84 => ("succeeded", "success"),
                    85..=94 => ("failed", "failed"),
                    95..=97 => ("cancelled", "canceled"),
                    _ => ("running", "running"),
                };
                let finished = (status != "running").then_some(started + duration);
                let deployed = finished.unwrap_or(started);
                let source = SOURCES[random.below(SOURCES.len() as u64) as usize];
                let sha = format!(
                    "{:016x}{:016x}{:08x}",
                    random.next(),
                    random.next(),
                    random.next() as u32
                );
                insert.values_panic([
                    source.into(),
                    format!("seed-{run_tag}-{n}").into(),
                    system_ids[system].into(),
                    environment_ids[environment].into(),
                    status.into(),
                    raw.into(),
                    system_name(system as u32).into(),
                    environment_name(environment as u32).into(),
                    deployed.into(),
                    Some(started).into(),
                    finished.into(),
                    deployed.into(),
                    Some(sha).into(),
                    Some("main".to_string()).into(),
                    Some(format!("1.{}.{}", n / 1000, n % 1000)).into(),
                    Some(format!("https://ci.example.com/{source}/{n}")).into(),
                    Some(ACTORS[random.below(ACTORS.len() as u64) as usize].to_string()).into(),
                    started.into(),
                    deployed.into(),
                ]);
            }
            txn.execute(&insert).await?;
            done += rows;
        }
        // One terminal (or running) event per deployment, from the rows just written.
        let events = Query::insert()
            .into_table(deployment_events::Entity)
            .columns([
                deployment_events::Column::DeploymentId,
                deployment_events::Column::Status,
                deployment_events::Column::RawStatus,
                deployment_events::Column::OccurredAt,
                deployment_events::Column::RecordedAt,
            ])
            .select_from(
                Query::select()
                    .columns([
                        deployments::Column::Id,
                        deployments::Column::Status,
                        deployments::Column::RawStatus,
                        deployments::Column::DeployedAt,
                        deployments::Column::UpdatedAt,
                    ])
                    .from(deployments::Entity)
                    .and_where(deployments::Column::Id.gt(before))
                    .to_owned(),
            )
            .map_err(|e| StoreError::Invalid(e.to_string()))?
            .to_owned();
        txn.execute(&events).await?;
        txn.commit().await?;
        written += in_transaction;
        tracing::info!(written, total = options.deployments, "seeding");
    }
    store.rebuild_board().await?;
    store.rebuild_counts().await?;
    if store.backend() == sea_orm::DatabaseBackend::Postgres {
        // VACUUM too: it sets the visibility map, without which the covering indexes' index-only
        // scans still visit every heap page (autovacuum does it in time; it may be off, or late).
        db.execute_unprepared(
            "VACUUM (ANALYZE) deployments, deployment_events, deployment_counts, board_cells",
        )
        .await?;
    } else {
        db.execute_unprepared("ANALYZE").await?;
    }
    Ok(written)
}
