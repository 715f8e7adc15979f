//! Octopus Deploy's REST API: a space's deployments (`GET /api/{space}/deployments`, newest
//! first, `skip`/`take`, following `Links."Page.Next"` as OctopusClients' pager does), each
//! with its task (state and times), its release (version, commit) and the names of its
//! project, environment and tenant (asked once each per import). The key travels as
//! `X-Octopus-ApiKey`.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::api::{Api, ApiError, encode, optional};
use super::{Page, Waiting};
use crate::ingest::Record;

/// Deployments read at once, with their tasks and releases.
const CONCURRENT_READS: usize = 8;

/// A client sending the key as Octopus documents.
pub fn api(key: &str) -> Result<Api, ApiError> {
    Api::new(
        "Octopus",
        "--api-key (or SHIPLOG_OCTOPUS_API_KEY)",
        vec![("x-octopus-apikey", key.to_string())],
    )
}

/// The first page of a space's deployments (of one project, `Projects-N`, when given).
pub fn first_url(server: &str, space: &str, project: Option<&str>) -> String {
    let mut url = format!(
        "{}/api/{}/deployments?skip=0&take=30",
        server.trim_end_matches('/'),
        encode(space)
    );
    if let Some(project) = project {
        url.push_str(&format!("&projects={}", encode(project)));
    }
    url
}

/// The id of a project named `name` (or `name` itself when it is an id).
pub async fn project_id(
    api: &Api,
    server: &str,
    space: &str,
    name: &str,
    waiting: Waiting<'_>,
) -> Result<String, ApiError> {
    if name.starts_with("Projects-") {
        return Ok(name.to_string());
    }
    let url = format!(
        "{}/api/{}/projects?partialName={}&take=100",
        server.trim_end_matches('/'),
        encode(space),
        encode(name)
    );
    let answer = api.get(&url, &format!("the project {name}"), waiting).await?;
    answer
        .body
        .get("Items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("Name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("Id").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| ApiError::Refused(format!("Octopus has no project named {name} in {space}")))
}

/// Names of projects, environments and tenants by id, asked once per import.
#[derive(Default)]
pub struct Names(Mutex<HashMap<String, Option<String>>>);

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Names")
    }
}

/// A cache: two scopes are the same whatever their caches hold.
impl PartialEq for Names {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Names {}

impl Names {
    async fn of(
        &self,
        api: &Api,
        server: &str,
        path: String,
        waiting: Waiting<'_>,
    ) -> Result<Option<String>, ApiError> {
        if let Some(name) = self.0.lock().ok().and_then(|n| n.get(&path).cloned()) {
            return Ok(name);
        }
        let answer = optional(api.get(&format!("{server}{path}"), &path, waiting).await)?;
        let name = answer.and_then(|a| a.body.get("Name").and_then(Value::as_str).map(str::to_string));
        if let Ok(mut names) = self.0.lock() {
            names.insert(path, name.clone());
        }
        Ok(name)
    }
}

/// A link from an answer as a URL: Octopus's links are absolute paths on the server.
fn absolute(server: &str, link: &str) -> String {
    let origin_end = server.find("://").map_or(0, |i| i + 3);
    let path_start = server[origin_end..].find('/').map(|i| i + origin_end);
    match path_start {
        // A server under a path (`https://host/octopus`) names its links with that path.
        Some(at) if link.starts_with(&server[at..]) => format!("{}{link}", &server[..at]),
        _ => format!("{server}{link}"),
    }
}

/// One page of deployments as records for the Octopus source. With `since` (epoch ms), the
/// import ends at the first deployment created before it.
pub async fn page(
    api: &Api,
    server: &str,
    space: &str,
    url: &str,
    since: Option<i64>,
    names: &Names,
    waiting: Waiting<'_>,
) -> Result<Page, ApiError> {
    let answer = api
        .get(url, &format!("the deployments of {space}"), waiting)
        .await?;
    let items = answer
        .body
        .get("Items")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| {
            ApiError::Refused(format!(
                "Octopus answered no `Items` for the deployments of {space}"
            ))
        })?;
    let before_since = |d: &Value| {
        let created = d
            .get("Created")
            .and_then(|c| crate::domain::parse_instant(c).ok());
        matches!((since, created), (Some(s), Some(c)) if c < s)
    };
    let stop = items.iter().any(before_since);
    let received_at = crate::domain::now_millis();
    let records: Vec<Record> = futures_util::stream::iter(items.into_iter().filter(|d| !before_since(d)))
        .map(|deployment| record(api, server, space, deployment, names, received_at, waiting))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    let next = answer
        .body
        .pointer("/Links/Page.Next")
        .and_then(Value::as_str)
        .filter(|_| !stop && !records.is_empty())
        .map(|link| absolute(server, link));
    Ok(Page {
        records,
        next,
        total: answer.body.get("TotalResults").and_then(Value::as_u64),
        high_water: None,
        stop,
    })
}

/// A deployment with its task, release and names.
async fn record(
    api: &Api,
    server: &str,
    space: &str,
    deployment: Value,
    names: &Names,
    received_at: i64,
    waiting: Waiting<'_>,
) -> Result<Record, ApiError> {
    let id = |key: &str| deployment.get(key).and_then(Value::as_str).map(str::to_string);
    let task = match id("TaskId") {
        Some(task) => {
            let url = format!("{server}/api/tasks/{}", encode(&task));
            optional(api.get(&url, &task, waiting).await)?.map_or(Value::Null, |a| a.body)
        }
        None => Value::Null,
    };
    let release = match id("ReleaseId") {
        Some(release) => {
            let url = format!("{server}/api/{}/releases/{}", encode(space), encode(&release));
            optional(api.get(&url, &release, waiting).await)?.map_or(Value::Null, |a| a.body)
        }
        None => Value::Null,
    };
    let mut named = HashMap::new();
    for (key, kind) in [
        ("ProjectId", "projects"),
        ("EnvironmentId", "environments"),
        ("TenantId", "tenants"),
    ] {
        if let Some(of) = id(key) {
            let path = format!("/api/{}/{kind}/{}", encode(space), encode(&of));
            named.insert(kind, names.of(api, server, path, waiting).await?);
        }
    }
    let state = task
        .get("State")
        .and_then(Value::as_str)
        .unwrap_or("Queued")
        .to_string();
    Ok(Record {
        source: "octopus",
        key: format!("api:{space}/{}:{state}", id("Id").unwrap_or_default()),
        body: json!({
            "server": server,
            "space": space,
            "deployment": deployment,
            "task": task,
            "release": release,
            "project": named.get("projects"),
            "environment": named.get("environments"),
            "tenant": named.get("tenants"),
        })
        .to_string(),
        headers: HeaderMap::new(),
        received_at,
    })
}
