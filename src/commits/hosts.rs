//! The Git hosts' compare APIs, as they document them: GitHub's
//! `GET /repos/{owner}/{repo}/compare/{base}...{head}` (commits oldest first, `total_commits`,
//! pages by `Link: rel="next"`, 250 commits without paging), and GitLab's
//! `GET /projects/:id/repository/compare?from=&to=` (commits oldest first, one answer).

use serde_json::Value;

use crate::domain::catalog::Repository;
use crate::enrich::ApiSettings;
use crate::import::api::{Api, ApiError, encode, next_link};

/// The most commits kept per range (the count is the host's, whatever is kept).
pub const MAX_COMMITS: usize = 1_000;

/// One commit, as shiplog keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    pub sha: String,
    /// The message's first line.
    pub title: String,
    pub author: Option<String>,
    pub authored_at: Option<i64>,
    pub committed_at: Option<i64>,
    pub url: Option<String>,
}

/// What a compare found.
#[derive(Debug, PartialEq, Eq)]
pub enum Compared {
    /// The commits in head that base lacks, newest first, how many the host counts, and how
    /// many base has that head lacks (where the host says: GitHub).
    Found {
        total: u64,
        behind: Option<u64>,
        commits: Vec<Commit>,
    },
    /// The host has no such repository or commit (a 404), with what it said.
    Missing(String),
}

/// Which hosts have a token (what the GraphQL API may queue reads for).
#[derive(Clone, Copy, Debug, Default)]
pub struct Served {
    pub github: bool,
    pub gitlab: bool,
}

/// A token that is set (a blank one is none).
fn token(setting: &Option<String>) -> Option<&str> {
    setting.as_deref().filter(|t| !t.trim().is_empty())
}

impl Served {
    pub fn of(settings: &ApiSettings) -> Self {
        Self {
            github: token(&settings.github_token).is_some(),
            gitlab: token(&settings.gitlab_token).is_some(),
        }
    }

    pub fn serves(&self, repository: &Repository) -> bool {
        match repository.host.as_str() {
            "github" => self.github,
            "gitlab" => self.gitlab,
            _ => false,
        }
    }
}

/// The Git hosts shiplog may ask, each with its token.
#[derive(Clone, Default)]
pub struct GitHosts {
    github: Option<(Api, String)>,
    gitlab: Option<(Api, String)>,
}

impl GitHosts {
    /// The hosts `[api]` gives a token for.
    pub fn configured(settings: &ApiSettings) -> Result<Self, ApiError> {
        let github = match token(&settings.github_token) {
            Some(token) => Some((
                crate::import::github::api(token)?,
                settings
                    .github_url
                    .clone()
                    .unwrap_or_else(|| crate::import::github::DEFAULT_API_URL.into()),
            )),
            None => None,
        };
        let gitlab = match token(&settings.gitlab_token) {
            Some(token) => Some((
                crate::import::gitlab::api(token)?,
                crate::import::gitlab::instance(
                    settings.gitlab_url.as_deref().unwrap_or("https://gitlab.com"),
                ),
            )),
            None => None,
        };
        Ok(Self { github, gitlab })
    }

    /// Whether any host has a token (else no range is ever read).
    pub fn any(&self) -> bool {
        self.github.is_some() || self.gitlab.is_some()
    }

    /// Whether a host for this repository is configured.
    pub fn serves(&self, repository: &Repository) -> bool {
        Served {
            github: self.github.is_some(),
            gitlab: self.gitlab.is_some(),
        }
        .serves(repository)
    }

    /// The commits in `head` that `base` lacks.
    pub async fn compare(
        &self,
        repository: &Repository,
        base: &str,
        head: &str,
    ) -> Result<Compared, ApiError> {
        let found = match repository.host.as_str() {
            "github" => match &self.github {
                Some((api, url)) => github(api, url, &repository.path, base, head).await,
                None => Err(ApiError::Refused("no [api] github_token is set".into())),
            },
            "gitlab" => match &self.gitlab {
                Some((api, url)) => gitlab(api, url, &repository.path, base, head).await,
                None => Err(ApiError::Refused("no [api] gitlab_token is set".into())),
            },
            other => Err(ApiError::Refused(format!("no Git host `{other}`"))),
        };
        match found {
            Err(ApiError::Missing(why)) => Ok(Compared::Missing(why)),
            other => other,
        }
    }
}

async fn github(api: &Api, api_url: &str, path: &str, base: &str, head: &str) -> Result<Compared, ApiError> {
    let mut url = format!(
        "{}/repos/{path}/compare/{}...{}?per_page=100",
        api_url.trim_end_matches('/'),
        encode(base),
        encode(head)
    );
    let what = format!("the commits of {path} between {base} and {head}");
    let mut commits = Vec::new();
    let (mut total, mut behind) = (None, None);
    loop {
        let answer = api.get(&url, &what, &|_| {}).await?;
        total = total.or_else(|| answer.body.get("total_commits").and_then(Value::as_u64));
        behind = behind.or_else(|| answer.body.get("behind_by").and_then(Value::as_u64));
        let page = answer
            .body
            .get("commits")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ApiError::Refused(format!("GitHub's compare answered without `commits` for {path}"))
            })?;
        commits.extend(page.iter().filter_map(github_commit));
        match next_link(&answer.headers) {
            Some(next) if commits.len() < MAX_COMMITS => url = next,
            _ => break,
        }
    }
    commits.reverse();
    commits.truncate(MAX_COMMITS);
    Ok(Compared::Found {
        total: total.unwrap_or(commits.len() as u64),
        behind,
        commits,
    })
}

fn github_commit(item: &Value) -> Option<Commit> {
    let text = |pointer: &str| item.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    let time = |pointer: &str| {
        item.pointer(pointer)
            .and_then(|t| crate::domain::parse_instant(t).ok())
    };
    Some(Commit {
        sha: text("/sha")?,
        title: first_line(&text("/commit/message").unwrap_or_default()),
        author: text("/commit/author/name").or_else(|| text("/author/login")),
        authored_at: time("/commit/author/date"),
        committed_at: time("/commit/committer/date"),
        url: text("/html_url"),
    })
}

async fn gitlab(api: &Api, instance: &str, path: &str, base: &str, head: &str) -> Result<Compared, ApiError> {
    let url = format!(
        "{instance}/api/v4/projects/{}/repository/compare?from={}&to={}",
        encode(path),
        encode(base),
        encode(head)
    );
    let what = format!("the commits of {path} between {base} and {head}");
    let answer = api.get(&url, &what, &|_| {}).await?;
    let items = answer
        .body
        .get("commits")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::Refused(format!("GitLab's compare answered without `commits` for {path}"))
        })?;
    let web = format!("{instance}/{path}");
    let mut commits: Vec<Commit> = items.iter().filter_map(|c| gitlab_commit(c, &web)).collect();
    let total = commits.len() as u64;
    commits.reverse();
    commits.truncate(MAX_COMMITS);
    Ok(Compared::Found {
        total,
        behind: None,
        commits,
    })
}

fn gitlab_commit(item: &Value, web: &str) -> Option<Commit> {
    let text = |field: &str| item.get(field).and_then(Value::as_str).map(str::to_string);
    let time = |field: &str| item.get(field).and_then(|t| crate::domain::parse_instant(t).ok());
    let sha = text("id")?;
    Some(Commit {
        title: text("title")
            .or_else(|| text("message").map(|m| first_line(&m)))
            .unwrap_or_default(),
        author: text("author_name"),
        authored_at: time("authored_date").or_else(|| time("created_at")),
        committed_at: time("committed_date").or_else(|| time("created_at")),
        url: text("web_url").or_else(|| Some(format!("{web}/-/commit/{sha}"))),
        sha,
    })
}

/// A commit message's first line.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_string()
}
