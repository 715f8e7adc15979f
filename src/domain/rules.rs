//! The map step: declarative rules, the same for every source, that turn a tool's system and
//! environment words into shiplog's names. The raw words are stored beside the result, so a
//! rule change can be replayed over the journal.

use std::collections::{BTreeMap, HashMap};

/// The `[environments]` / `[systems]` tables of the TOML file.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// canonical environment name -> the names tools use for it (matched case-insensitively).
    #[serde(default)]
    pub environment_aliases: BTreeMap<String, Vec<String>>,
    /// Leave out shiplog's default environment aliases (prod, prd, stg, dev, ...).
    #[serde(default)]
    pub no_default_environment_aliases: bool,
    /// canonical system name -> the names tools use for it (matched case-insensitively).
    #[serde(default)]
    pub system_aliases: BTreeMap<String, Vec<String>>,
    /// The `[systems.<name>] aliases` of the catalog (filled from it, not read here).
    #[serde(skip)]
    pub catalog_aliases: BTreeMap<String, Vec<String>>,
}

/// The default environment aliases: the usual abbreviations of the usual stages.
const DEFAULT_ENVIRONMENT_ALIASES: &[(&str, &[&str])] = &[
    ("production", &["prod", "prd", "live", "production"]),
    ("staging", &["stage", "stg", "staging"]),
    ("development", &["dev", "develop", "development"]),
    ("test", &["test", "testing", "tst"]),
];

/// Compiled mapping rules.
#[derive(Clone, Debug, Default)]
pub struct MappingRules {
    /// alias (lower-cased) -> (canonical name, where the alias comes from)
    environments: HashMap<String, (String, &'static str)>,
    systems: HashMap<String, (String, &'static str)>,
}

const DEFAULT_ALIAS: &str = "shiplog's default environment aliases";
const ENVIRONMENT_ALIAS: &str = "[mapping] environment_aliases";
const SYSTEM_ALIAS: &str = "[mapping] system_aliases";
const CATALOG_ALIAS: &str = "the catalog's [systems] aliases";

impl MappingRules {
    /// Compiles the configured rules on top of the defaults; configured aliases win.
    pub fn new(config: &RulesConfig) -> Self {
        let mut environments = HashMap::new();
        if !config.no_default_environment_aliases {
            for (canonical, aliases) in DEFAULT_ENVIRONMENT_ALIASES {
                for alias in *aliases {
                    environments.insert(alias.to_lowercase(), (canonical.to_string(), DEFAULT_ALIAS));
                }
            }
        }
        for (canonical, aliases) in &config.environment_aliases {
            let named = (canonical.trim().to_string(), ENVIRONMENT_ALIAS);
            environments.insert(canonical.trim().to_lowercase(), named.clone());
            for alias in aliases {
                environments.insert(alias.trim().to_lowercase(), named.clone());
            }
        }
        let mut systems = HashMap::new();
        for (table, origin) in [
            (&config.system_aliases, SYSTEM_ALIAS),
            (&config.catalog_aliases, CATALOG_ALIAS),
        ] {
            for (canonical, aliases) in table {
                for alias in aliases {
                    systems.insert(
                        alias.trim().to_lowercase(),
                        (canonical.trim().to_string(), origin),
                    );
                }
            }
        }
        Self {
            environments,
            systems,
        }
    }

    /// Maps an observation's system and environment words to shiplog's names.
    pub fn map(&self, observation: super::Observation) -> super::MappedObservation {
        super::MappedObservation {
            system: self.system(&observation.system),
            environment: self.environment(&observation.environment),
            observation,
            discovered_by: super::Discovery::Webhook,
        }
    }

    /// The canonical environment name: an alias when one matches, else the name trimmed and
    /// lower-cased (`Production` and `production` are one environment).
    pub fn environment(&self, raw: &str) -> String {
        self.environment_naming(raw).value
    }

    /// The canonical environment name and the rule that gave it.
    pub fn environment_naming(&self, raw: &str) -> super::decision::Naming {
        let key = raw.trim().to_lowercase();
        let (value, by) = match self.environments.get(&key) {
            Some((canonical, origin)) => (canonical.clone(), format!("alias of `{canonical}` ({origin})")),
            None => (
                key,
                "as sent, trimmed and lower-cased (no alias matched)".to_string(),
            ),
        };
        super::decision::Naming {
            raw: raw.to_string(),
            value,
            by,
        }
    }

    /// The canonical system name: an alias when one matches, else the name trimmed (system
    /// names keep their case: `group/Project` paths are case-sensitive in some tools).
    pub fn system(&self, raw: &str) -> String {
        self.system_naming(raw).value
    }

    /// The canonical system name and the rule that gave it.
    pub fn system_naming(&self, raw: &str) -> super::decision::Naming {
        let trimmed = raw.trim();
        let (value, by) = match self.systems.get(&trimmed.to_lowercase()) {
            Some((canonical, origin)) => (canonical.clone(), format!("alias of `{canonical}` ({origin})")),
            None => (
                trimmed.to_string(),
                "as sent, trimmed (no alias matched)".to_string(),
            ),
        };
        super::decision::Naming {
            raw: raw.to_string(),
            value,
            by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_aliases_fold_the_usual_production_names() {
        let rules = MappingRules::new(&RulesConfig::default());
        for raw in ["prod", "PRD", "Production", " production "] {
            assert_eq!(rules.environment(raw), "production");
        }
        assert_eq!(rules.environment("stg"), "staging");
        assert_eq!(rules.environment("EU-West"), "eu-west");
    }

    #[test]
    fn configured_aliases_join_two_tools_names_for_one_system() {
        let mut config = RulesConfig::default();
        config.system_aliases.insert(
            "billing".into(),
            vec!["billing-api".into(), "acme/Billing".into()],
        );
        config
            .environment_aliases
            .insert("production".into(), vec!["eu-prod".into()]);
        let rules = MappingRules::new(&config);
        assert_eq!(rules.system("billing-api"), "billing");
        assert_eq!(rules.system("acme/billing"), "billing");
        assert_eq!(rules.system("acme/Other"), "acme/Other");
        assert_eq!(rules.environment("EU-Prod"), "production");
        assert_eq!(rules.environment("prod"), "production");
    }

    #[test]
    fn default_aliases_can_be_switched_off() {
        let config = RulesConfig {
            no_default_environment_aliases: true,
            ..RulesConfig::default()
        };
        assert_eq!(MappingRules::new(&config).environment("prod"), "prod");
    }
}
