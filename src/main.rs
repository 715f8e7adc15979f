//! The `shiplog` binary: load settings, build the application, serve.

use anyhow::Context;
use clap::Parser;
use shiplog::config::{Cli, Command, Settings};
use shiplog::startup::{Application, generated_secret_key};
use shiplog::store::{DbOptions, Store};

/// mimalloc instead of glibc's malloc: GraphQL answers are many small allocations, which
/// glibc's allocator serves slowly under load (README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.settings)?;
    shiplog::telemetry::init(settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => Application::build(settings).await?.run_until_stopped().await?,
        Command::PrintSchema => print!("{}", shiplog::graphql::sdl()),
        Command::Seed(options) => {
            let store = open(&settings).await?;
            let started = std::time::Instant::now();
            let written = shiplog::seed::seed(&store, &options).await?;
            println!(
                "seeded {written} deployments in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Command::Replay => {
            use std::io::{IsTerminal, Write};
            let store = open(&settings).await?;
            let rules = shiplog::domain::MappingRules::new(&settings.mapping);
            let terminal = std::io::stderr().is_terminal();
            let summary = shiplog::ingest::replay::remap(&store, &rules, |done, total| {
                if terminal {
                    const WIDTH: u64 = 30;
                    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH) as usize;
                    let empty = WIDTH as usize - filled;
                    eprint!(
                        "\r[{}{}] {done}/{total} raw names",
                        "#".repeat(filled),
                        " ".repeat(empty)
                    );
                    let _ = std::io::stderr().flush();
                }
            })
            .await?;
            if terminal {
                eprintln!();
            }
            println!(
                "replayed {} raw system/environment names: {} deployments moved, {} systems and {} environments no longer used were removed",
                summary.raw_names,
                summary.deployments_moved,
                summary.systems_removed,
                summary.environments_removed
            );
        }
        Command::Reprocess { ids } => {
            let store = open(&settings).await?;
            let count = store.requeue_failed(&ids, shiplog::domain::now_millis()).await?;
            println!(
                "{count} failed deliveries are pending again; a running shiplog retries them within a second"
            );
        }
        Command::Secrets => {
            let store = open(&settings).await?;
            for source in shiplog::sources::BUILT_IN.iter().map(|s| s.name) {
                let configured = settings.secrets.contains_key(source);
                match store.setting(&generated_secret_key(source)).await? {
                    Some(secret) if !configured => {
                        println!("{source}\t{secret}\t(generated, stored in the database)")
                    }
                    _ if configured => println!(
                        "{source}\t(configured by {})",
                        shiplog::sources::secret_setting(source)
                    ),
                    _ => println!("{source}\t(not set)"),
                }
            }
        }
    }
    Ok(())
}

/// Opens and migrates the database for a one-off command.
async fn open(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(&DbOptions {
        max_connections: 2,
        ..shiplog::startup::db_options(settings)
    })
    .await
    .context("opening the database")?;
    store.migrate().await.context("migrating the database")?;
    Ok(store)
}
