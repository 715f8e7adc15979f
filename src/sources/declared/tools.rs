//! The commands for writing a declared source: `shiplog try-source`, `shiplog check-config`,
//! `shiplog recipes`. No server and no database: what they print comes from the settings file
//! and the body given.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::recipes::RECIPES;
use crate::config::Settings;
use crate::sources::{Delivery, Registry, secret_setting};

/// `shiplog try-source NAME FILE [-H 'Name: value']... [--query Q]`: what the source would
/// store for this body, as JSON, or the error (with the expression that failed).
pub fn try_source(
    settings: &Settings,
    name: &str,
    body: &[u8],
    headers: &[String],
    query: Option<&str>,
) -> Result<String, String> {
    let registry = Registry::with_declared(&settings.sections, &settings.sources)?;
    let source = registry.get(name).ok_or_else(|| {
        let names: Vec<&str> = registry.names().collect();
        format!(
            "there is no source `{name}`; this settings file has {}",
            names.join(", ")
        )
    })?;
    let mut map = HeaderMap::new();
    for header in headers {
        let (key, value) = header
            .split_once(':')
            .ok_or_else(|| format!("-H '{header}': write a header as 'Name: value'"))?;
        let key = HeaderName::from_bytes(key.trim().as_bytes()).map_err(|e| format!("-H '{header}': {e}"))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("-H '{header}': {e}"))?;
        map.append(key, value);
    }
    let delivery = Delivery {
        headers: &map,
        query,
        body,
        received_at: crate::domain::now_millis(),
    };
    let accepted = source
        .accept(&delivery)
        .map_err(|e| format!("the delivery would be stored as failed: {e}"))?;
    let shown = serde_json::json!({
        "deliveryKey": accepted.key,
        "rule": accepted.rule,
        "parsed": accepted.parsed,
    });
    Ok(serde_json::to_string_pretty(&shown).unwrap_or_default())
}

/// `shiplog check-config`: one line per finding; `Err` when something must be fixed.
pub fn check_config(settings: &Settings) -> Result<Vec<String>, Vec<String>> {
    let registry = Registry::with_declared(&settings.sections, &settings.sources).map_err(|e| vec![e])?;
    let mut lines = vec![format!(
        "sources: {} built-in, {} declared ({})",
        crate::sources::BUILT_IN.len(),
        settings.sources.len(),
        settings.sources.keys().cloned().collect::<Vec<_>>().join(", ")
    )];
    let catalog = &settings.checked_catalog;
    lines.push(format!(
        "catalog: {} systems, {} teams ({})",
        catalog.systems().count(),
        catalog.teams().len(),
        catalog.teams().keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    let mut problems = Vec::new();
    for source in registry.iter() {
        let name = source.name();
        let set =
            settings.secrets.contains_key(name) || settings.secrets.contains_key(&name.replace('-', "_"));
        let declared = settings.sources.contains_key(name);
        match (set, declared, source.generates_secret()) {
            (true, _, _) => lines.push(format!("{name}: secret set")),
            (false, true, _) => problems.push(format!(
                "{name}: no secret: set {} or [secrets] {name}; until then it answers 401",
                secret_setting(name)
            )),
            (false, false, true) => lines.push(format!("{name}: secret generated on first start")),
            (false, false, false) => lines.push(format!("{name}: not in use (no secret)")),
        }
    }
    for entry in &settings.reconcile {
        match entry.scopes() {
            Ok((_, scopes)) => lines.push(format!(
                "reconcile {}: {} every {} s",
                entry.source,
                scopes.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
                entry.interval_seconds
            )),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(lines)
    } else {
        Err(problems)
    }
}

/// `shiplog recipes [NAME]`.
pub fn recipes(name: Option<&str>) -> Result<String, String> {
    match name {
        Some(name) => super::recipes::text(name).map(str::to_string).ok_or_else(|| {
            let names: BTreeMap<&str, &str> = RECIPES.iter().map(|(n, d, _)| (*n, *d)).collect();
            format!(
                "there is no recipe `{name}`; there are {}",
                names.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }),
        None => Ok(RECIPES
            .iter()
            .map(|(name, description, _)| format!("{name:<16} {description}\n"))
            .collect::<String>()
            + "\nEnable one with [sources.NAME] recipe = \"NAME\" (and its secret); `shiplog recipes NAME` prints it.\n"),
    }
}
