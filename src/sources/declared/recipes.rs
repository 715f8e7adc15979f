//! Recipes: declarations for tools shiplog has no built-in source for, written against each
//! tool's published webhook payloads (tests/fixtures/<tool>/) and shipped inside the binary.
//! `[sources.NAME] recipe = "buildkite"` starts from one; keys written beside it win (the
//! `statuses` table is merged word by word, `auth` is replaced whole). `shiplog recipes` lists
//! them and `shiplog recipes NAME` prints one to copy and adapt.

use super::DeclaredConfig;

/// Every recipe: its name and its TOML (one `[sources.<name>]` table and its sub-tables).
pub const RECIPES: &[(&str, &str, &str)] = &[
    (
        "aws-codedeploy",
        "AWS CodeDeploy deployment state changes, through an EventBridge API destination",
        include_str!("recipes/aws-codedeploy.toml"),
    ),
    (
        "azure-devops",
        "Azure DevOps classic release deployments (service hook, Web Hooks)",
        include_str!("recipes/azure-devops.toml"),
    ),
    (
        "azure-pipelines",
        "Azure Pipelines YAML stages (service hook, Web Hooks; stages named in ?stages=)",
        include_str!("recipes/azure-pipelines.toml"),
    ),
    (
        "buildkite",
        "Buildkite builds (webhook with a token)",
        include_str!("recipes/buildkite.toml"),
    ),
    (
        "flux",
        "Flux notification-controller generic-hmac Provider (Kustomizations and HelmReleases)",
        include_str!("recipes/flux.toml"),
    ),
    (
        "harness",
        "Harness pipeline and stage notifications (webhook)",
        include_str!("recipes/harness.toml"),
    ),
];

/// A recipe's TOML by name.
pub fn text(name: &str) -> Option<&'static str> {
    RECIPES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, toml)| *toml)
}

/// A recipe as a declaration.
pub fn config(name: &str) -> Result<DeclaredConfig, String> {
    let text = text(name).ok_or_else(|| {
        let names: Vec<&str> = RECIPES.iter().map(|(n, _, _)| *n).collect();
        format!("there is no recipe `{name}`; shiplog has {}", names.join(", "))
    })?;
    let table: toml::Table = toml::from_str(text).map_err(|e| format!("recipe {name}: {e}"))?;
    table
        .get("sources")
        .and_then(|sources| sources.get(name))
        .cloned()
        .ok_or_else(|| format!("recipe {name} has no [sources.{name}]"))?
        .try_into()
        .map_err(|e| format!("recipe {name}: {e}"))
}

/// The declaration with its recipe's keys under its own.
pub fn resolve(source: &str, config: DeclaredConfig) -> Result<DeclaredConfig, String> {
    let Some(recipe) = config.recipe.clone() else {
        return Ok(config);
    };
    let base = self::config(&recipe).map_err(|e| format!("[sources.{source}] recipe = \"{recipe}\": {e}"))?;
    let mut statuses = base.statuses;
    statuses.extend(config.statuses);
    Ok(DeclaredConfig {
        recipe: None,
        delivery_key: config.delivery_key.or(base.delivery_key),
        when: config.when.or(base.when),
        id: config.id.or(base.id),
        system: config.system.or(base.system),
        environment: config.environment.or(base.environment),
        status: config.status.or(base.status),
        started_at: config.started_at.or(base.started_at),
        finished_at: config.finished_at.or(base.finished_at),
        commit_sha: config.commit_sha.or(base.commit_sha),
        git_ref: config.git_ref.or(base.git_ref),
        version: config.version.or(base.version),
        url: config.url.or(base.url),
        actor: config.actor.or(base.actor),
        committed_at: config.committed_at.or(base.committed_at),
        tags: config.tags.or(base.tags),
        note: config.note.or(base.note),
        auth: config.auth.or(base.auth),
        statuses,
    })
}
