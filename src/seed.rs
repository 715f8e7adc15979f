//! `shiplog seed`: fills a database with realistic deployments for benchmarks and demos:
//! systems across environments over a window of time, mostly successes with some failures,
//! cancellations and a few still running, every source represented. Deterministic for a
//! given `--seed`, so two runs give the same rows.

use crate::domain::{DeploymentStatus, Observation, now_millis};
use crate::store::bulk::BulkDeployment;
use crate::store::{NameKind, Store, StoreError};

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
    let now = now_millis();
    let systems: Vec<String> = (0..options.systems.max(1)).map(system_name).collect();
    let environments: Vec<String> = (0..options.environments.max(1)).map(environment_name).collect();
    let system_ids = store.ensure_names(NameKind::System, &systems, now).await?;
    let environment_ids = store
        .ensure_names(NameKind::Environment, &environments, now)
        .await?;
    // Every source shiplog has is in the mix.
    let sources: Vec<&str> = crate::sources::BUILT_IN.iter().map(|s| s.name).collect();
    let span = i64::from(options.days.max(1)) * 86_400_000;
    let mut make = Maker {
        random: Random(options.seed),
        start_of_run: now - span,
        span,
        run_tag: format!("{:x}", options.seed ^ (now as u64)),
        sources,
        system_ids,
        environment_ids,
    };
    let mut written = 0u64;
    while written < options.deployments {
        let in_transaction = ROWS_PER_TRANSACTION.min(options.deployments - written);
        let rows: Vec<BulkDeployment> = (0..in_transaction)
            .map(|row| make.deployment(written + row))
            .collect();
        store.insert_bulk(&rows).await?;
        written += in_transaction;
        tracing::info!(written, total = options.deployments, "seeding");
    }
    store.finish_bulk().await?;
    Ok(written)
}

/// What one seed run draws its deployments from.
struct Maker<'a> {
    random: Random,
    start_of_run: i64,
    span: i64,
    run_tag: String,
    sources: Vec<&'a str>,
    system_ids: Vec<i64>,
    environment_ids: Vec<i64>,
}

impl Maker<'_> {
    /// Deployment number `n` of the run.
    fn deployment(&mut self, n: u64) -> BulkDeployment {
        let random = &mut self.random;
        let system = random.below(self.system_ids.len() as u64) as usize;
        // Production and staging get most deployments, as in real life.
        let environment = match random.below(100) {
            0..=34 => 0,
            35..=64 => 1,
            _ => random.below(self.environment_ids.len() as u64) as usize,
        }
        .min(self.environment_ids.len() - 1);
        let started = self.start_of_run + random.below(self.span as u64) as i64;
        let duration = 30_000 + random.below(20 * 60_000) as i64;
        let (status, raw) = match random.below(100) {
            0..=84 => (DeploymentStatus::Succeeded, "success"),
            85..=94 => (DeploymentStatus::Failed, "failed"),
            95..=97 => (DeploymentStatus::Cancelled, "canceled"),
            _ => (DeploymentStatus::Running, "running"),
        };
        let source = self.sources[random.below(self.sources.len() as u64) as usize];
        let sha = format!(
            "{:016x}{:016x}{:08x}",
            random.next(),
            random.next(),
            random.next() as u32
        );
        let finished = (status != DeploymentStatus::Running).then_some(started + duration);
        BulkDeployment {
            source: source.to_string(),
            system_id: self.system_ids[system],
            environment_id: self.environment_ids[environment],
            observation: Observation {
                external_id: format!("seed-{}-{n}", self.run_tag),
                system: system_name(system as u32),
                environment: environment_name(environment as u32),
                environment_tier: None,
                status,
                raw_status: raw.to_string(),
                occurred_at: finished.unwrap_or(started),
                started_at: Some(started),
                finished_at: finished,
                commit_sha: Some(sha),
                git_ref: Some("main".to_string()),
                version: Some(format!("1.{}.{}", n / 1000, n % 1000)),
                url: Some(format!("https://ci.example.com/{source}/{n}")),
                actor: Some(ACTORS[random.below(ACTORS.len() as u64) as usize].to_string()),
                tenant: None,
                committed_at: None,
                origin: None,
                tags: Default::default(),
                note: None,
                environment_url: None,
                times_estimated: false,
            },
        }
    }
}
