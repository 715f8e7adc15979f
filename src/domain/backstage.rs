//! Backstage catalog files (`catalog-info.yaml`) as catalog entries: each `Component` entity is
//! a system, `spec.owner` its team, and the annotations the tools' plugins key on become the
//! aliases by which those tools name it. Other kinds (Group, API, System, ...) are skipped.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::catalog::CatalogEntry;

/// The annotations whose values are the names tools give the component, and what they are.
const ALIASING_ANNOTATIONS: &[&str] = &[
    // GitHub deployments and workflow runs name the repository `owner/name`.
    "github.com/project-slug",
    // GitLab names the project by its path.
    "gitlab.com/project-slug",
    // Argo CD names the application.
    "argocd/app-name",
    // Jenkins names the job by its full path (`instance:` prefix dropped).
    "jenkins.io/job-full-name",
];

/// Every `Component` in a file's YAML documents, by name: `(name, entry)`; an error names the
/// document and what is wrong with it.
pub fn components(text: &str) -> Result<Vec<(String, CatalogEntry)>, String> {
    let mut found = Vec::new();
    for (n, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| format!("document {}: {e}", n + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
        if !kind.eq_ignore_ascii_case("component") {
            continue;
        }
        let name = text_at(&value, "/metadata/name")
            .ok_or_else(|| format!("document {}: a Component needs metadata.name", n + 1))?;
        found.push((name.clone(), entry(&name, &value)));
    }
    Ok(found)
}

fn text_at(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// One Component as a catalog entry.
fn entry(name: &str, value: &Value) -> CatalogEntry {
    let annotation = |key: &str| {
        text_at(
            value,
            &format!("/metadata/annotations/{}", key.replace('/', "~1")),
        )
    };
    let mut aliases: Vec<String> = ALIASING_ANNOTATIONS
        .iter()
        .filter_map(|key| annotation(key))
        .map(|alias| match alias.split_once(':') {
            // `jenkins.io/job-full-name: instance:folder/job`
            Some((_, job)) if !job.is_empty() => job.to_string(),
            _ => alias,
        })
        .collect();
    let source = annotation("backstage.io/source-location").and_then(|l| repository_of_location(&l));
    if let Some((_, path)) = &source {
        aliases.push(path.clone());
    }
    aliases.sort();
    aliases.dedup();
    aliases.retain(|alias| alias != name);
    let repository = annotation("github.com/project-slug")
        .map(|slug| format!("github:{slug}"))
        .or_else(|| annotation("gitlab.com/project-slug").map(|slug| format!("gitlab:{slug}")))
        .or_else(|| source.map(|(host, path)| format!("{host}:{path}")));
    let tags: BTreeMap<String, String> = [
        ("lifecycle", "/spec/lifecycle"),
        ("type", "/spec/type"),
        ("system", "/spec/system"),
    ]
    .into_iter()
    .filter_map(|(key, pointer)| text_at(value, pointer).map(|v| (key.to_string(), v)))
    .collect();
    CatalogEntry {
        team: text_at(value, "/spec/owner").map(|owner| entity_name(&owner)),
        description: text_at(value, "/metadata/description"),
        repository,
        links: links(value),
        tags,
        aliases,
        origin: None,
    }
}

/// The name part of an entity reference: `group:default/payments` is `payments`.
fn entity_name(reference: &str) -> String {
    let without_kind = reference.split_once(':').map_or(reference, |(_, rest)| rest);
    without_kind
        .rsplit_once('/')
        .map_or(without_kind, |(_, name)| name)
        .to_string()
}

/// `metadata.links` with http(s) URLs, by title (the URL when untitled).
fn links(value: &Value) -> BTreeMap<String, String> {
    value
        .pointer("/metadata/links")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|link| {
            let url = text_at(link, "/url")?;
            let title = text_at(link, "/title").unwrap_or_else(|| url.clone());
            (url.starts_with("https://") || url.starts_with("http://")).then_some((title, url))
        })
        .collect()
}

/// `url:https://github.com/acme/billing/tree/main/` as (`github`, `acme/billing`).
fn repository_of_location(location: &str) -> Option<(String, String)> {
    let url = location.strip_prefix("url:").unwrap_or(location);
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    // A GitLab path ends where its `/-/` (tree, blob) part starts; GitHub's after owner/name.
    let (kind, path) = match host {
        "github.com" => ("github", path.split('/').take(2).collect::<Vec<_>>().join("/")),
        "gitlab.com" => (
            "gitlab",
            path.split("/-/").next()?.trim_end_matches('/').to_string(),
        ),
        _ => return None,
    };
    (path.split('/').count() >= 2).then(|| (kind.to_string(), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_locations_read_as_backstage_writes_them() {
        assert_eq!(entity_name("group:default/payments"), "payments");
        assert_eq!(entity_name("user:guest"), "guest");
        assert_eq!(entity_name("team-a"), "team-a");
        assert_eq!(
            repository_of_location("url:https://github.com/acme/billing/tree/main/"),
            Some(("github".into(), "acme/billing".into()))
        );
        assert_eq!(
            repository_of_location("url:https://gitlab.com/group/sub/project/-/tree/main"),
            Some(("gitlab".into(), "group/sub/project".into()))
        );
        assert_eq!(repository_of_location("url:https://example.com/x"), None);
    }
}
