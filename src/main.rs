//! The `shiplog` binary: load settings, build the application, serve.

use anyhow::Context;
use clap::Parser;
use shiplog::config::{Cli, Command, ImportTool, Settings};
use shiplog::import::reconcile::ReconcileConfig;
use shiplog::import::{Api, Importer, Scope, gitlab};
use shiplog::sources::declared::tools;
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
        Command::Serve => {
            let application = Application::build(settings).await?;
            let _rereading = shiplog::startup::reread_settings(cli.settings.clone(), application.reloader());
            application.run_until_stopped().await?
        }
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
        Command::Replay { dry_run } => replay(&settings, dry_run).await?,
        Command::Import { tool } => import(&settings, tool).await?,
        Command::Explain { id } => explain(&settings, id).await?,
        Command::TrySource {
            name,
            file,
            headers,
            query,
        } => {
            let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let shown = tools::try_source(&settings, &name, &body, &headers, query.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("{shown}");
        }
        Command::CheckConfig => match tools::check_config(&settings) {
            Ok(lines) => {
                lines.iter().for_each(|line| println!("{line}"));
                println!("ok");
            }
            Err(problems) => {
                problems.iter().for_each(|line| eprintln!("{line}"));
                eprintln!("{} problem(s) in the settings", problems.len());
                std::process::exit(1);
            }
        },
        Command::Recipes { name } => print!(
            "{}",
            tools::recipes(name.as_deref()).map_err(|e| anyhow::anyhow!(e))?
        ),
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

/// A progress line on a terminal (stderr), nothing elsewhere.
fn progress(line: &str) {
    use std::io::{IsTerminal, Write};
    if std::io::stderr().is_terminal() {
        eprint!("\r{line}");
        let _ = std::io::stderr().flush();
    }
}

/// `shiplog import TOOL ...`: each scope in turn, a progress line, a summary per scope; exits
/// 1 when one stopped (running it again resumes there).
async fn import(settings: &Settings, tool: ImportTool) -> anyhow::Result<()> {
    let store = open(settings).await?;
    let waiting = |message: &str| {
        progress("\n");
        eprintln!("{message}");
    };
    // Heroku's systems and environments are its apps' pipeline couplings, as for webhooks.
    let enrichers = match &tool {
        ImportTool::Heroku { api_url, api_key, .. } => shiplog::enrich::Enrichers::default().with(
            std::sync::Arc::new(shiplog::enrich::heroku::HerokuApi::new(
                api_url,
                api_key,
                std::time::Duration::from_secs(3600),
            )),
        ),
        _ => shiplog::enrich::Enrichers::default(),
    };
    let (ingest, writer) = shiplog::startup::pipeline(settings, &store, enrichers).await?;
    let (api, scopes, since) = import_scopes(tool, &waiting).await?;
    let since = since.as_deref().map(parse_since).transpose()?;
    let importer = Importer {
        ingest: &ingest,
        store: &store,
        api: &api,
        kind: shiplog::domain::Discovery::Import,
        since,
    };
    let mut stopped = 0;
    for scope in &scopes {
        let shown = |p: &shiplog::import::Progress<'_>| {
            let rate = p.read as f64 / p.elapsed.as_secs_f64().max(0.001);
            let of = p.total.map(|t| format!("/{t}")).unwrap_or_default();
            let eta = p
                .total
                .filter(|t| *t > p.read && rate > 0.0)
                .map(|t| format!(", about {:.0} s to go", (t - p.read) as f64 / rate))
                .unwrap_or_default();
            let line = format!(
                "{} {}: {}{of} records, {} pages ({rate:.0} records/s, {:.1} pages/s{eta})",
                scope.source(),
                p.scope,
                p.read,
                p.pages,
                p.pages as f64 / p.elapsed.as_secs_f64().max(0.001)
            );
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                progress(&format!("{line}    "));
            } else {
                eprintln!("{line}");
            }
        };
        let result = importer.run(scope, &shown, &waiting).await;
        progress("\n");
        match result {
            Ok(summary) => println!("{} {}: {summary}", scope.source(), scope.name()),
            Err(error) => {
                eprintln!("{} {}: stopped: {error}", scope.source(), scope.name());
                stopped += 1;
            }
        }
    }
    drop(ingest);
    let _ = writer.await;
    if stopped > 0 {
        anyhow::bail!(
            "{stopped} of {} imports stopped; run the same command again to resume them",
            scopes.len()
        );
    }
    Ok(())
}

/// The API client and the scopes an import command names (checked as a `[[reconcile]]`
/// entry naming the same would be), and its `--since`.
async fn import_scopes(
    tool: ImportTool,
    waiting: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(Api, Vec<Scope>, Option<String>)> {
    let (entry, since) = match tool {
        ImportTool::Gitlab {
            api_url,
            token,
            mut project,
            group,
            since,
        } => {
            if let Some(group) = group {
                let instance = gitlab::instance(&api_url);
                project.extend(gitlab::projects_of(&gitlab::api(&token)?, &instance, &group, waiting).await?);
            }
            let entry = ReconcileConfig {
                projects: project,
                ..ReconcileConfig::of("gitlab", api_url, token)
            };
            (entry, since)
        }
        ImportTool::Github {
            api_url,
            token,
            repo,
            since,
        } => (
            ReconcileConfig {
                repos: repo,
                ..ReconcileConfig::of("github", api_url, token)
            },
            since,
        ),
        ImportTool::Heroku {
            api_url,
            api_key,
            mut app,
            pipeline,
            since,
        } => {
            if let Some(pipeline) = pipeline {
                let api = shiplog::import::heroku::api(&api_key)?;
                app.extend(shiplog::import::heroku::apps_of(&api, &api_url, &pipeline, waiting).await?);
            }
            let entry = ReconcileConfig {
                apps: app,
                ..ReconcileConfig::of("heroku", api_url, api_key)
            };
            (entry, since)
        }
        ImportTool::Octopus {
            api_url,
            api_key,
            space,
            project,
            since,
        } => {
            let project = match project {
                Some(name) => {
                    let api = shiplog::import::octopus::api(&api_key)?;
                    vec![shiplog::import::octopus::project_id(&api, &api_url, &space, &name, waiting).await?]
                }
                None => Vec::new(),
            };
            let entry = ReconcileConfig {
                projects: project,
                space: Some(space),
                ..ReconcileConfig::of("octopus", api_url, api_key)
            };
            (entry, since)
        }
        ImportTool::Jenkins {
            url,
            user,
            token,
            job,
            since,
        } => {
            // A folder or a multibranch project stands for every job under it.
            let api = shiplog::import::jenkins::api(&user, &token)?;
            let mut jobs = Vec::new();
            for name in job {
                jobs.extend(shiplog::import::jenkins::jobs_under(&api, &url, &name, waiting).await?);
            }
            let entry = ReconcileConfig {
                jobs,
                user: Some(user),
                ..ReconcileConfig::of("jenkins", url, token)
            };
            (entry, since)
        }
    };
    let named = [&entry.projects, &entry.repos, &entry.apps, &entry.jobs];
    anyhow::ensure!(
        entry.source == "octopus" || named.iter().any(|list| !list.is_empty()),
        "name what to import: --project or --group (gitlab), --repo (github), --app (heroku), --job (jenkins)"
    );
    let (api, scopes) = entry
        .scopes()
        .map_err(|e| anyhow::anyhow!("{}", e.replace("[[reconcile]] ", "import: ")))?;
    Ok((api, scopes, since))
}

/// `--since`: an instant, or a date (midnight UTC).
fn parse_since(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    shiplog::domain::parse_instant_str(&full)
        .map_err(|e| anyhow::anyhow!("--since {text}: {e} (write 2025-01-01 or 2025-01-01T12:00:00Z)"))
}

/// `shiplog replay [--dry-run]`.
async fn replay(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let store = open(settings).await?;
    let rules = shiplog::domain::MappingRules::new(&settings.mapping);
    let sections = shiplog::startup::with_gitlab_home(&store, &settings.sections)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sources = shiplog::sources::Registry::with_declared(&sections, &settings.sources)
        .map_err(|e| anyhow::anyhow!(e))?;
    let preview = shiplog::ingest::replay::preview(&store, &sources, &rules, |read| {
        progress(&format!("read {read} journaled deliveries"))
    })
    .await?;
    progress("\n");
    let examples = |list: &[String]| {
        list.iter()
            .take(5)
            .map(|e| format!("\n    {e}"))
            .collect::<String>()
    };
    let verb = if dry_run { "would" } else { "will" };
    println!(
        "{} deliveries read again with the current rules\n  {} deployments {verb} move to other systems or environments{}\n  {} deployments {verb} appear (from deliveries ignored or not understood before){}\n  {} deployments no delivery makes any more (kept: shiplog never deletes what it stored){}",
        preview.deliveries_read,
        preview.moved,
        examples(&preview.moved_examples),
        preview.appear.len(),
        examples(
            &preview
                .appear
                .iter()
                .map(|(id, key)| format!("{key} (delivery {id})"))
                .collect::<Vec<_>>()
        ),
        preview.disappear.len(),
        examples(&preview.disappear),
    );
    if dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    let summary = shiplog::ingest::replay::remap(&store, &rules, |done, total| {
        progress(&format!("{done}/{total} raw names"))
    })
    .await?;
    progress("\n");
    let ids: Vec<i64> = preview.appear.iter().map(|(id, _)| *id).collect();
    let requeued = store.requeue(&ids, shiplog::domain::now_millis()).await?;
    println!(
        "replayed {} raw system/environment names: {} deployments moved, {} systems and {} environments no longer used were removed; {requeued} deliveries are pending again (a running shiplog with these settings applies them within a second)",
        summary.raw_names, summary.deployments_moved, summary.systems_removed, summary.environments_removed
    );
    Ok(())
}

/// `shiplog explain ID`.
async fn explain(settings: &Settings, id: i64) -> anyhow::Result<()> {
    let store = open(settings).await?;
    let delivery = store.delivery(id).await?.ok_or_else(|| {
        anyhow::anyhow!("there is no delivery {id}; `deliveryId` in a webhook's answer names one")
    })?;
    println!(
        "delivery {id}: {}, received {}, {}",
        delivery.source,
        shiplog::domain::format_millis(delivery.received_at),
        delivery.state.as_str()
    );
    match shiplog::domain::Decision::from_json(delivery.decision.as_deref()) {
        Some(decision) => decision.explain().iter().for_each(|line| println!("{line}")),
        None => println!(
            "no decision was kept (journaled before shiplog kept them){}",
            delivery
                .error
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        ),
    }
    let names = |list: Vec<shiplog::store::Named>| -> std::collections::HashMap<i64, String> {
        list.into_iter().map(|n| (n.id, n.name)).collect()
    };
    let (systems, environments) = (names(store.systems().await?), names(store.environments().await?));
    for deployment in store.deployments_of_delivery(id).await? {
        println!(
            "now: deployment {} ({}): {} in {}, {}",
            deployment.id,
            deployment.external_id,
            systems.get(&deployment.system_id).map_or("?", String::as_str),
            environments
                .get(&deployment.environment_id)
                .map_or("?", String::as_str),
            deployment.status.as_str().to_uppercase()
        );
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
