//! Jenkins' remote API: a job's builds through `api/json?tree=allBuilds[...]{M,N}` (newest
//! first, 100 per range; `builds` alone stops at the newest 100), folders and multibranch
//! branches by their full name (`team/app/deploy` is `/job/team/job/app/job/deploy/`).

use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::api::{Api, ApiError};
use super::{Page, Waiting};
use crate::ingest::Record;

/// Builds per range.
const RANGE: u64 = 100;

/// What each build is asked for: enough for the `[jenkins]` rules (parameters), the commit
/// and branch, who started it.
const TREE: &str = "allBuilds[number,result,building,timestamp,duration,url,actions[parameters[name,value],lastBuiltRevision[SHA1,branch[name]],causes[userId]]]";

/// A client with the user and API token as Basic credentials.
pub fn api(user: &str, token: &str) -> Result<Api, ApiError> {
    use base64::Engine;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    Api::new(
        "Jenkins",
        "--user and --token (or SHIPLOG_JENKINS_USER, SHIPLOG_JENKINS_TOKEN)",
        vec![("authorization", format!("Basic {credentials}"))],
    )
}

/// The URL of builds `from..from+100` of a job.
pub fn range_url(base: &str, job: &str, from: u64) -> String {
    let tree = format!("{TREE}{{{from},{}}}", from + RANGE);
    format!(
        "{}/api/json?tree={}",
        job_url(base, job),
        percent_encoding::utf8_percent_encode(&tree, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// The jobs a full name stands for: the job itself, or every job under a folder or a
/// multibranch project (its branches), read through `tree=jobs[name]`, a few levels down.
pub async fn jobs_under(
    api: &Api,
    base: &str,
    name: &str,
    waiting: Waiting<'_>,
) -> Result<Vec<String>, ApiError> {
    let mut found = Vec::new();
    let mut pending = vec![(name.trim_matches('/').to_string(), 0)];
    while let Some((job, depth)) = pending.pop() {
        let url = format!("{}/api/json?tree=jobs%5Bname%5D", job_url(base, &job));
        let answer = api.get(&url, &format!("the job {job}"), waiting).await?;
        match answer.body.get("jobs").and_then(Value::as_array) {
            Some(children) if depth < 4 => pending.extend(
                children
                    .iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .map(|child| (format!("{job}/{child}"), depth + 1)),
            ),
            _ => found.push(job),
        }
    }
    found.sort();
    Ok(found)
}

/// A job's URL from its full name.
fn job_url(base: &str, job: &str) -> String {
    let path: Vec<String> = job
        .split('/')
        .map(|segment| percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!("{}/job/{}", base.trim_end_matches('/'), path.join("/job/"))
}

/// A job name's segment in a URL. A multibranch branch's name holds its own escapes
/// (`feature%2Ffoo` for `feature/foo`), which its URL escapes again (`feature%252Ffoo`).
pub const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// One range of a job's builds as records for the Jenkins source. With `since` (epoch ms), the
/// import ends at the first build started before it.
pub async fn page(
    api: &Api,
    base: &str,
    job: &str,
    url: &str,
    since: Option<i64>,
    waiting: Waiting<'_>,
) -> Result<Page, ApiError> {
    let answer = api.get(url, &format!("the builds of {job}"), waiting).await?;
    let builds = answer
        .body
        .get("allBuilds")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| {
            ApiError::Refused(format!(
                "Jenkins answered no `allBuilds` for {job}: is it a job (not a folder)?"
            ))
        })?;
    let full = builds.len() as u64 == RANGE;
    let before_since = |b: &Value| matches!((since, b.get("timestamp").and_then(Value::as_i64)), (Some(s), Some(t)) if t < s);
    let stop = builds.iter().any(before_since);
    let received_at = crate::domain::now_millis();
    let records = builds
        .into_iter()
        .filter(|b| !before_since(b))
        .map(|build| Record {
            source: "jenkins",
            key: format!(
                "api:{job}#{}:{}",
                build.get("number").map(Value::to_string).unwrap_or_default(),
                build.get("result").and_then(Value::as_str).unwrap_or("building")
            ),
            body: json!({ "job": job, "build": build }).to_string(),
            headers: HeaderMap::new(),
            received_at,
        })
        .collect();
    let from = url
        .rsplit_once("%7B")
        .and_then(|(_, rest)| rest.split("%2C").next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Page {
        records,
        next: (full && !stop).then(|| range_url(base, job, from + RANGE)),
        total: None,
        high_water: None,
        stop,
    })
}
