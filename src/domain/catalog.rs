//! The catalog: who owns each system, what it is, where its code lives, and the names the
//! tools use for it. From the `[systems.<name>]` tables of the settings file.

use std::collections::BTreeMap;

/// One `[systems.<name>]` table as written in the file.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// The team that owns the system.
    pub team: Option<String>,
    pub description: Option<String>,
    /// Where its code lives: `github:owner/name` or `gitlab:group/project`.
    pub repository: Option<String>,
    /// Named links (runbook, dashboard, ...): name -> http(s) URL.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    /// key -> value.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The names tools use for this system (the same as `[mapping] system_aliases`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Where it was read, for messages (`[systems.billing]`, or a Backstage file); not a key.
    #[serde(skip)]
    pub origin: Option<String>,
}

impl CatalogEntry {
    /// This entry with `other`'s fields where it has none, and both's aliases (a TOML table
    /// over what a Backstage file says).
    pub fn over(mut self, other: CatalogEntry) -> Self {
        self.team = self.team.or(other.team);
        self.description = self.description.or(other.description);
        self.repository = self.repository.or(other.repository);
        for (key, value) in other.links {
            self.links.entry(key).or_insert(value);
        }
        for (key, value) in other.tags {
            self.tags.entry(key).or_insert(value);
        }
        self.aliases.extend(other.aliases);
        self.aliases.sort();
        self.aliases.dedup();
        self.origin = match (self.origin, other.origin) {
            (Some(a), Some(b)) => Some(format!("{a} and {b}")),
            (a, b) => a.or(b),
        };
        self
    }
}

/// The tag a deployment's repository travels in (`github:owner/name`): set by sources whose
/// payload names the repository, or sent in a generic webhook's or the write API's `tags`.
pub const REPOSITORY_TAG: &str = "repository";

/// A system's repository on a Git host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    /// `github` or `gitlab`.
    pub host: String,
    /// `owner/name`, or a GitLab project's full path.
    pub path: String,
}

impl Repository {
    /// As written in the settings and kept in the commit-range cache: `github:owner/name`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.host, self.path)
    }

    /// Reads `github:owner/name` or `gitlab:group/subgroup/project`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let problem =
            || format!("`{text}` is not a repository: write `github:owner/name` or `gitlab:group/project`");
        let (host, path) = text.trim().split_once(':').ok_or_else(problem)?;
        let path = path.trim_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        let well_formed = parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        match host {
            "github" if parts.len() == 2 && well_formed => {}
            "gitlab" if parts.len() >= 2 && well_formed => {}
            _ => return Err(problem()),
        }
        Ok(Self {
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The repository a clone URL names, on GitHub or GitLab (`https://github.com/o/r.git`,
    /// `git@gitlab.com:group/sub/project.git`, `ssh://git@github.com/o/r`); None for other
    /// hosts (a Helm chart repository, a self-hosted server: name those in the catalog).
    pub fn from_url(url: &str) -> Option<Self> {
        let url = url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .or_else(|| url.strip_prefix("ssh://"))
            .or_else(|| url.strip_prefix("git://"))
            .unwrap_or(url);
        // `git@host:`, `user@host/`: the user is not part of the repository.
        let rest = match rest.split_once('@') {
            Some((user, after)) if !user.contains('/') => after,
            _ => rest,
        };
        let (host, path) = rest.split_once([':', '/'])?;
        let host = match host.to_ascii_lowercase().trim_start_matches("www.") {
            "github.com" => "github",
            "gitlab.com" => "gitlab",
            _ => return None,
        };
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        Self::parse(&format!("{host}:{path}")).ok()
    }

    /// The repository's web page.
    pub fn url(&self) -> String {
        match self.host.as_str() {
            "github" => format!("https://github.com/{}", self.path),
            _ => format!("https://gitlab.com/{}", self.path),
        }
    }

    /// The page comparing two commits (`base...head`, what `head` adds).
    pub fn compare_url(&self, base: &str, head: &str) -> String {
        match self.host.as_str() {
            "github" => format!("{}/compare/{base}...{head}", self.url()),
            _ => format!("{}/-/compare/{base}...{head}", self.url()),
        }
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.path)
    }
}

/// One system as the catalog knows it, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CatalogSystem {
    pub name: String,
    pub team: Option<String>,
    pub description: Option<String>,
    pub repository: Option<Repository>,
    pub links: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub aliases: Vec<String>,
}

/// The checked catalog: systems by name, and each team's systems.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    systems: BTreeMap<String, CatalogSystem>,
    teams: BTreeMap<String, Vec<String>>,
}

impl Catalog {
    /// Checks the `[systems]` tables against each other and against `[mapping]
    /// system_aliases`: an error names the table and says what to change.
    pub fn new(
        entries: &BTreeMap<String, CatalogEntry>,
        mapping_aliases: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        let mut catalog = Self::default();
        // alias (lower-cased) -> who claims it, in the file's words.
        let mut claimed: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (canonical, aliases) in mapping_aliases {
            for alias in aliases {
                claimed.insert(
                    alias.trim().to_lowercase(),
                    (
                        canonical.trim().to_string(),
                        "[mapping] system_aliases".to_string(),
                    ),
                );
            }
        }
        for (name, entry) in entries {
            let system = checked_system(name, entry)?;
            for alias in &system.aliases {
                let key = alias.to_lowercase();
                if let Some((other, origin)) = claimed.get(&key)
                    && other != &system.name
                {
                    return Err(format!(
                        "{} aliases: `{alias}` is already an alias of `{other}` in {origin}; \
                         a tool's name can be one system's only",
                        table(name, entry)
                    ));
                }
                claimed.insert(key, (system.name.clone(), table(name, entry)));
            }
            if let Some(team) = &system.team {
                catalog
                    .teams
                    .entry(team.clone())
                    .or_default()
                    .push(system.name.clone());
            }
            catalog.systems.insert(system.name.clone(), system);
        }
        if let Some((alias, (other, origin))) = claimed.iter().find(|(alias, (owner, _))| {
            catalog
                .systems
                .keys()
                .any(|s| s.to_lowercase() == **alias && s != owner)
        }) {
            return Err(format!(
                "`{alias}` is a system of its own in [systems] and an alias of `{other}` in {origin}: \
                 remove one of the two"
            ));
        }
        Ok(catalog)
    }

    /// A deployment's repository: its system's in the catalog, else the one its payload named
    /// (the [`REPOSITORY_TAG`] tag: CircleCI's, Argo CD's and DevLake's repository URL, or one
    /// a generic webhook or the write API sent), else the repository a GitHub deployment names
    /// (its raw system is `owner/name`), else the project a GitLab one names (its raw system
    /// is the project's path).
    pub fn repository_for(
        &self,
        system: &str,
        deployment: &entity::deployments::Model,
    ) -> Option<Repository> {
        self.system(system)
            .and_then(|s| s.repository.clone())
            .or_else(|| {
                crate::store::merge::tags_of(deployment.tags.as_deref())
                    .get(REPOSITORY_TAG)
                    .and_then(|text| Repository::parse(text).ok())
            })
            .or_else(|| {
                let host = match deployment.source.as_str() {
                    "github" => "github",
                    "gitlab" => "gitlab",
                    _ => return None,
                };
                Repository::parse(&format!("{host}:{}", deployment.raw_system)).ok()
            })
    }

    /// A system's entry, if the catalog has one.
    pub fn system(&self, name: &str) -> Option<&CatalogSystem> {
        self.systems.get(name)
    }

    /// Every system the catalog lists, by name.
    pub fn systems(&self) -> impl Iterator<Item = &CatalogSystem> {
        self.systems.values()
    }

    /// Every team, by name, with its systems' names.
    pub fn teams(&self) -> &BTreeMap<String, Vec<String>> {
        &self.teams
    }

    /// The systems of the named teams (unknown teams own nothing), sorted and without repeats.
    pub fn systems_of_teams(&self, teams: &[String]) -> Vec<String> {
        let mut systems: Vec<String> = teams
            .iter()
            .filter_map(|team| self.teams.get(team.trim()))
            .flatten()
            .cloned()
            .collect();
        systems.sort();
        systems.dedup();
        systems
    }

    /// The team that owns a system, if the catalog says.
    pub fn team_of(&self, system: &str) -> Option<&str> {
        self.systems.get(system).and_then(|s| s.team.as_deref())
    }

    /// Every alias the catalog declares, canonical name -> aliases (what the mapping rules add).
    pub fn aliases(&self) -> BTreeMap<String, Vec<String>> {
        self.systems
            .values()
            .filter(|s| !s.aliases.is_empty())
            .map(|s| (s.name.clone(), s.aliases.clone()))
            .collect()
    }
}

/// Where an entry came from, for messages.
fn table(name: &str, entry: &CatalogEntry) -> String {
    entry
        .origin
        .clone()
        .unwrap_or_else(|| format!("[systems.{name}]"))
}

/// One table, checked: names trimmed and within bounds, links that are URLs, a repository a
/// Git host can be asked about.
fn checked_system(name: &str, entry: &CatalogEntry) -> Result<CatalogSystem, String> {
    let at = |field: &str| format!("{} {field}", table(name, entry));
    let text = |field: &str, value: &Option<String>, max: usize| -> Result<Option<String>, String> {
        match value.as_deref().map(str::trim) {
            None => Ok(None),
            Some("") => Err(format!("{}: is empty; leave it out instead", at(field))),
            Some(v) if v.len() > max => Err(format!("{}: is longer than {max} bytes", at(field))),
            Some(v) => Ok(Some(v.to_string())),
        }
    };
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.len() > super::MAX_NAME_LEN {
        return Err(format!(
            "[systems.\"{name}\"]: a system's name is 1 to {} bytes",
            super::MAX_NAME_LEN
        ));
    }
    for (link, url) in &entry.links {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "{}: `{link}` is `{url}`; a link is an http:// or https:// URL",
                at("links")
            ));
        }
    }
    let repository = match &entry.repository {
        Some(text) => Some(Repository::parse(text).map_err(|e| format!("{}: {e}", at("repository")))?),
        None => None,
    };
    let aliases: Vec<String> = entry
        .aliases
        .iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    Ok(CatalogSystem {
        name: trimmed.to_string(),
        team: text("team", &entry.team, super::MAX_NAME_LEN)?,
        description: text("description", &entry.description, super::MAX_TEXT_LEN)?,
        repository,
        links: entry.links.clone(),
        tags: entry
            .tags
            .iter()
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
        aliases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(team: &str, aliases: &[&str]) -> CatalogEntry {
        CatalogEntry {
            team: Some(team.into()),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ..CatalogEntry::default()
        }
    }

    #[test]
    fn a_deployment_names_its_repository_where_the_catalog_does_not() {
        let deployment = |source: &str, raw_system: &str| {
            let observation = crate::domain::Observation {
                system: raw_system.into(),
                ..crate::domain::Observation::bare("1", crate::domain::DeploymentStatus::Succeeded, 0)
            };
            crate::store::merge::new_deployment(source, &observation, 1, 1, 0)
        };
        let catalog = Catalog::new(
            &BTreeMap::from([(
                "billing".to_string(),
                CatalogEntry {
                    repository: Some("gitlab:acme/billing".into()),
                    ..CatalogEntry::default()
                },
            )]),
            &BTreeMap::new(),
        )
        .unwrap();
        let key = |system: &str, source: &str, raw: &str| {
            catalog
                .repository_for(system, &deployment(source, raw))
                .map(|r| r.key())
        };
        assert_eq!(
            key("billing", "github", "acme/other").as_deref(),
            Some("gitlab:acme/billing"),
            "the catalog first"
        );
        assert_eq!(key("x", "github", "acme/app").as_deref(), Some("github:acme/app"));
        assert_eq!(
            key("x", "gitlab", "group/sub/app").as_deref(),
            Some("gitlab:group/sub/app")
        );
        assert_eq!(
            key("x", "jenkins", "acme/app"),
            None,
            "a job name is not a repository"
        );
        let mut tagged = deployment("circleci", "webhook-service");
        tagged.tags = Some(r#"{"repository":"github:circleci/webhook-service"}"#.into());
        assert_eq!(
            catalog
                .repository_for("webhook-service", &tagged)
                .map(|r| r.key())
                .as_deref(),
            Some("github:circleci/webhook-service"),
            "the payload's repository where the catalog names none"
        );
        assert_eq!(
            catalog
                .repository_for("billing", &tagged)
                .map(|r| r.key())
                .as_deref(),
            Some("gitlab:acme/billing"),
            "the catalog over the payload"
        );
    }

    #[test]
    fn clone_urls_name_repositories_on_github_and_gitlab_only() {
        let key = |url: &str| Repository::from_url(url).map(|r| r.key());
        for (url, expected) in [
            (
                "https://github.com/circleci/webhook-service",
                Some("github:circleci/webhook-service"),
            ),
            (
                "https://github.com/foo/manifests-velero.git",
                Some("github:foo/manifests-velero"),
            ),
            (
                "git@gitlab.com:circleci/hello-world.git",
                Some("gitlab:circleci/hello-world"),
            ),
            (
                "https://gitlab.com/group/sub/project/",
                Some("gitlab:group/sub/project"),
            ),
            ("ssh://git@github.com/acme/app.git", Some("github:acme/app")),
            ("https://user@GitHub.com/acme/app", Some("github:acme/app")),
            ("https://github.com/acme", None),
            ("https://github.com/acme/app/tree/main", None),
            ("https://prometheus-community.github.io/helm-charts", None),
            ("https://git.example.com/acme/app.git", None),
            ("", None),
        ] {
            assert_eq!(key(url).as_deref(), expected, "{url}");
        }
    }

    #[test]
    fn teams_gather_their_systems() {
        let entries = BTreeMap::from([
            ("billing".to_string(), entry("payments", &["billing-api"])),
            ("ledger".to_string(), entry("payments", &[])),
            ("web".to_string(), entry("frontend", &[])),
        ]);
        let catalog = Catalog::new(&entries, &BTreeMap::new()).unwrap();
        assert_eq!(
            catalog.systems_of_teams(&["payments".into(), "nobody".into()]),
            ["billing", "ledger"]
        );
        assert_eq!(catalog.team_of("web"), Some("frontend"));
        assert_eq!(catalog.aliases()["billing"], ["billing-api"]);
    }

    #[test]
    fn an_alias_claimed_twice_is_refused_naming_both() {
        let entries = BTreeMap::from([("billing".to_string(), entry("payments", &["Shared"]))]);
        let mapping = BTreeMap::from([("ledger".to_string(), vec!["shared".to_string()])]);
        let error = Catalog::new(&entries, &mapping).unwrap_err();
        assert!(
            error.contains("[systems.billing]") && error.contains("`ledger`"),
            "{error}"
        );
        let entries = BTreeMap::from([
            ("billing".to_string(), entry("payments", &["ledger"])),
            ("ledger".to_string(), entry("payments", &[])),
        ]);
        let error = Catalog::new(&entries, &BTreeMap::new()).unwrap_err();
        assert!(error.contains("system of its own"), "{error}");
    }

    #[test]
    fn repositories_and_links_say_what_to_write() {
        assert_eq!(
            Repository::parse("gitlab:group/sub/project").unwrap().url(),
            "https://gitlab.com/group/sub/project"
        );
        for bad in [
            "acme/billing",
            "github:acme",
            "bitbucket:acme/billing",
            "github:a/b/c",
        ] {
            assert!(
                Repository::parse(bad).unwrap_err().contains("github:owner/name"),
                "{bad}"
            );
        }
        let mut bad_link = entry("payments", &[]);
        bad_link.links.insert("runbook".into(), "wiki/billing".into());
        let error = Catalog::new(
            &BTreeMap::from([("billing".to_string(), bad_link)]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            error.contains("[systems.billing] links") && error.contains("https://"),
            "{error}"
        );
    }
}
