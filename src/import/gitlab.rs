//! GitLab's deployments API (`GET /projects/:id/deployments`), read in `updated_at` order so
//! that a page once read never moves back: a deployment that changes later moves to the end
//! and is read again there (GitLab requires `order_by=updated_at` with `updated_after`).
//! Pages follow `Link: rel="next"` (GitLab leaves out totals past 10,000 records).

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::api::{Api, ApiError, count, encode, next_link};
use super::{Page, Waiting};
use crate::ingest::Record;

/// The public GitLab.
pub const DEFAULT_API_URL: &str = "https://gitlab.com";

/// The instance's base URL as GitLab names itself in `X-Gitlab-Instance`
/// (`https://gitlab.example.com`), from an API URL given with or without `/api/v4`.
pub fn instance(api_url: &str) -> String {
    api_url
        .trim()
        .trim_end_matches('/')
        .trim_end_matches("/api/v4")
        .trim_end_matches('/')
        .to_string()
}

/// A client sending the token as GitLab documents (`PRIVATE-TOKEN`).
pub fn api(token: &str) -> Result<Api, ApiError> {
    Api::new(
        "GitLab",
        "--token (or SHIPLOG_GITLAB_TOKEN)",
        vec![("private-token", token.to_string())],
    )
}

/// The first page of a project's deployments updated after `after` (ISO 8601), oldest first.
pub fn first_url(instance: &str, project: &str, after: Option<&str>) -> String {
    let mut url = format!(
        "{instance}/api/v4/projects/{}/deployments?order_by=updated_at&sort=asc&per_page=100",
        encode(project)
    );
    if let Some(after) = after {
        url.push_str(&format!("&updated_after={}", encode(after)));
    }
    url
}

/// One page of deployments as records for the GitLab source.
pub async fn page(
    api: &Api,
    instance: &str,
    project: &str,
    url: &str,
    waiting: Waiting<'_>,
) -> Result<Page, ApiError> {
    let answer = api
        .get(url, &format!("the deployments of {project}"), waiting)
        .await?;
    let items = answer.body.as_array().cloned().ok_or_else(|| {
        ApiError::Refused(format!(
            "GitLab's API answered something else than a list of deployments for {project}"
        ))
    })?;
    let received_at = crate::domain::now_millis();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(instance) {
        headers.insert("x-gitlab-instance", value);
    }
    let items_updated: Vec<String> = items
        .iter()
        .filter_map(|d| d.get("updated_at").and_then(Value::as_str).map(str::to_string))
        .collect();
    let high_water = items_updated.last().cloned();
    let records = items
        .into_iter()
        .map(|deployment| {
            let updated = deployment
                .get("updated_at")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Record {
                source: "gitlab",
                key: format!(
                    "api:{instance}:{}:{}:{updated}",
                    deployment.get("id").map(Value::to_string).unwrap_or_default(),
                    deployment
                        .get("status")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
                body: json!({ "project": project, "deployment": deployment }).to_string(),
                headers: headers.clone(),
                received_at,
            }
        })
        .collect();
    let offset_next = next_link(&answer.headers).or_else(|| {
        // `Link` may be left out (GitLab.com, over 10,000 records); `X-Next-Page` is empty on
        // the last page.
        let next = answer
            .headers
            .get("x-next-page")?
            .to_str()
            .ok()?
            .trim()
            .to_string();
        (!next.is_empty()).then(|| with_page(url, &next))
    });
    // A GitLab that ignores `updated_after` (older versions) answers older deployments than
    // asked: read it by offset from here on (a URL without `updated_after`).
    let after = query_value(url, "updated_after").and_then(|a| crate::domain::parse_instant_str(&a).ok());
    let ignored = after.is_some_and(|after| {
        items_updated
            .iter()
            .any(|u| crate::domain::parse_instant_str(u).is_ok_and(|u| u <= after))
    });
    let next = match (offset_next, ignored) {
        (None, _) => None,
        (Some(_), true) => {
            let page = query_value(url, "page")
                .and_then(|p| p.parse::<u64>().ok())
                .unwrap_or(1);
            Some(with_page(
                &first_url(instance, project, None),
                &(page + 1).to_string(),
            ))
        }
        (Some(offset), false) if after.is_some() => {
            Some(keyset_next(instance, project, url, high_water.as_deref()).unwrap_or(offset))
        }
        (Some(offset), false) => Some(offset),
    };
    Ok(Page {
        next,
        records,
        total: count(&answer.headers, "x-total"),
        high_water,
        stop: false,
    })
}

/// The next page as "changed since the last one read" rather than "page N": an offset page
/// skips a row whenever a deployment on a page already read changes (it moves to the end and
/// the rest shift back), and an import resumed hours later would skip many. The last change
/// read, less a millisecond (ties come back as duplicates). None when that makes no progress
/// (a page of deployments all changed in the same millisecond): the offset page then.
fn keyset_next(instance: &str, project: &str, url: &str, last: Option<&str>) -> Option<String> {
    let last = crate::domain::parse_instant_str(last?).ok()?;
    let after = crate::domain::format_millis(last - 1);
    let progress = !url.contains(&format!("updated_after={}", encode(&after)));
    progress.then(|| first_url(instance, project, Some(&after)))
}

/// A query parameter of `url`, decoded.
fn query_value(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// `url` asking for page `page`.
fn with_page(url: &str, page: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page="))
        .map(str::to_string)
        .collect();
    parts.push(format!("page={}", encode(page)));
    format!("{base}?{}", parts.join("&"))
}

/// Every project of a group (and its subgroups), by path.
pub async fn projects_of(
    api: &Api,
    instance: &str,
    group: &str,
    waiting: Waiting<'_>,
) -> Result<Vec<String>, ApiError> {
    let mut url = Some(format!(
        "{instance}/api/v4/groups/{}/projects?include_subgroups=true&per_page=100&order_by=id&sort=asc",
        encode(group)
    ));
    let mut projects = Vec::new();
    while let Some(next) = url {
        let answer = api
            .get(&next, &format!("the projects of group {group}"), waiting)
            .await?;
        projects.extend(answer.body.as_array().into_iter().flatten().filter_map(|p| {
            p.get("path_with_namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
        }));
        url = next_link(&answer.headers);
    }
    Ok(projects)
}
