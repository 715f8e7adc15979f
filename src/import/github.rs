//! GitHub's deployments API: `GET /repos/{owner}/{repo}/deployments` (newest first, no
//! "updated since" filter), and each deployment's outcome from its statuses
//! (`statuses_url`, newest first). Pages follow `Link: rel="next"` as GitHub gives it (its
//! page-2 links name `/repositories/{id}`: never rebuilt here).

use axum::http::HeaderMap;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::api::{Api, ApiError, next_link, optional};
use super::{Page, Waiting};
use crate::ingest::Record;

/// The public GitHub API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Status requests in flight at once (GitHub's secondary limit starts at 100 concurrent).
const CONCURRENT_STATUS_READS: usize = 8;

/// A client sending the token and the API version as GitHub documents.
pub fn api(token: &str) -> Result<Api, ApiError> {
    Api::new(
        "GitHub",
        "--token (or SHIPLOG_GITHUB_TOKEN)",
        vec![
            ("authorization", format!("Bearer {token}")),
            ("accept", "application/vnd.github+json".into()),
            ("x-github-api-version", "2022-11-28".into()),
        ],
    )
}

/// The first page of a repository's deployments.
pub fn first_url(api_url: &str, repo: &str, per_page: u32) -> String {
    format!(
        "{}/repos/{repo}/deployments?per_page={per_page}",
        api_url.trim_end_matches('/')
    )
}

/// The repository's name as GitHub spells it (`repository_url`: `.../repos/Owner/App`), which
/// the webhooks' `repository.full_name` gives too; else the name the user typed.
fn canonical(deployment: &Value, typed: &str) -> String {
    deployment
        .get("repository_url")
        .and_then(Value::as_str)
        .and_then(|url| url.rsplit_once("/repos/"))
        .map(|(_, name)| name.trim_end_matches('/').to_string())
        .filter(|name| name.split('/').count() == 2)
        .unwrap_or_else(|| typed.to_string())
}

/// One page of deployments, each with its statuses, as records for the GitHub source. With
/// `since` (epoch ms), the page ends the import at the first deployment created before it.
pub async fn page(
    api: &Api,
    repo: &str,
    url: &str,
    since: Option<i64>,
    waiting: Waiting<'_>,
) -> Result<Page, ApiError> {
    let answer = api
        .get(url, &format!("the deployments of {repo}"), waiting)
        .await?;
    let items = answer.body.as_array().cloned().ok_or_else(|| {
        ApiError::Refused(format!(
            "GitHub's API answered something else than a list of deployments for {repo}"
        ))
    })?;
    let before_since = |d: &Value| {
        let created = d
            .get("created_at")
            .and_then(|c| crate::domain::parse_instant(c).ok());
        matches!((since, created), (Some(since), Some(created)) if created < since)
    };
    let stop = items.iter().any(before_since);
    let kept: Vec<Value> = items.into_iter().filter(|d| !before_since(d)).collect();
    let received_at = crate::domain::now_millis();
    let records = futures_util::stream::iter(kept)
        .map(|deployment| async move {
            let statuses = match deployment.get("statuses_url").and_then(Value::as_str) {
                Some(url) => {
                    let what = format!("the statuses of deployment {}", deployment["id"]);
                    let answer = optional(api.get(&format!("{url}?per_page=100"), &what, waiting).await)?;
                    answer.map_or(json!([]), |a| a.body)
                }
                None => json!([]),
            };
            let newest = statuses
                .get(0)
                .and_then(|s| s.get("id"))
                .map_or("created".into(), Value::to_string);
            Ok::<_, ApiError>(Record {
                source: "github",
                key: format!(
                    "api:{}:{newest}",
                    deployment.get("id").map(Value::to_string).unwrap_or_default()
                ),
                body: json!({ "repository": canonical(&deployment, repo), "deployment": deployment, "statuses": statuses })
                    .to_string(),
                headers: HeaderMap::new(),
                received_at,
            })
        })
        .buffered(CONCURRENT_STATUS_READS)
        .try_collect()
        .await?;
    Ok(Page {
        records,
        next: if stop { None } else { next_link(&answer.headers) },
        total: None,
        high_water: None,
        stop,
    })
}
