//! Why a delivery is (or is not) a deployment, kept with it in the journal: the source rule
//! that decided, and for each deployment the tool's words beside shiplog's names with the rule
//! that gave each. `shiplog explain` prints it, `Delivery.decision` serves it, and deployments
//! can be filtered to those one rule produced.

use serde::{Deserialize, Serialize};

use super::{MappedObservation, MappingRules};

/// The decision about one delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, async_graphql::SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// `processed`, `pending` (waiting for the tool's API), `ignored` or `failed`.
    pub outcome: String,
    /// The source rule that decided (`jenkins.deployment_jobs`, `gitlab.deployment_event`).
    pub rule: String,
    /// Why the delivery describes no deployment, or could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub deployments: Vec<Decided>,
}

/// One deployment a delivery described.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, async_graphql::SimpleObject)]
#[graphql(name = "DecidedDeployment")]
#[serde(rename_all = "camelCase")]
pub struct Decided {
    pub external_id: String,
    pub system: Naming,
    pub environment: Naming,
    pub status: Naming,
}

/// A tool's word and what shiplog made of it, with the rule that did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, async_graphql::SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct Naming {
    pub raw: String,
    pub value: String,
    pub by: String,
}

impl Decision {
    /// Deployments, each named by `rules` (outcome `processed`, or `pending` while the tool's
    /// API is still to be asked).
    pub fn of_deployments(
        outcome: &str,
        rule: &str,
        source: &str,
        mapped: &[MappedObservation],
        rules: &MappingRules,
    ) -> Self {
        let deployments = mapped
            .iter()
            .map(|m| Decided {
                external_id: m.observation.external_id.clone(),
                system: rules.system_naming(&m.observation.system),
                environment: rules.environment_naming(&m.observation.environment),
                status: Naming {
                    raw: m.observation.raw_status.clone(),
                    value: m.observation.status.as_str().to_uppercase(),
                    by: format!("the {source} status table (README)"),
                },
            })
            .collect();
        Self {
            outcome: outcome.into(),
            rule: rule.into(),
            reason: None,
            deployments,
        }
    }

    /// No deployment, and why.
    pub fn none(outcome: &str, rule: &str, reason: &str) -> Self {
        Self {
            outcome: outcome.into(),
            rule: rule.into(),
            reason: Some(reason.into()),
            deployments: Vec::new(),
        }
    }

    /// As stored in the journal.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From the journal (`None` for deliveries journaled before decisions were kept).
    pub fn from_json(json: Option<&str>) -> Option<Self> {
        serde_json::from_str(json?).ok()
    }

    /// The text `LIKE` looks for in a stored decision to find those `rule` made.
    pub fn rule_marker(rule: &str) -> String {
        format!("\"rule\":{}", serde_json::Value::String(rule.to_string()))
    }

    /// For a person: what was decided and why, a line each.
    pub fn explain(&self) -> Vec<String> {
        let mut lines = vec![
            format!("outcome: {}", self.outcome),
            format!("rule: {}", self.rule),
        ];
        if let Some(reason) = &self.reason {
            lines.push(format!("reason: {reason}"));
        }
        for decided in &self.deployments {
            lines.push(format!("deployment {}", decided.external_id));
            for (what, naming) in [
                ("system", &decided.system),
                ("environment", &decided.environment),
                ("status", &decided.status),
            ] {
                let arrow = if naming.raw == naming.value {
                    naming.value.clone()
                } else {
                    format!("{} -> {}", naming.raw, naming.value)
                };
                lines.push(format!("  {what:<12} {arrow:<40} {}", naming.by));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeploymentStatus, Observation, RulesConfig};

    #[test]
    fn a_decision_names_the_rule_behind_each_name_and_survives_the_journal() {
        let mut config = RulesConfig::default();
        config
            .system_aliases
            .insert("billing".into(), vec!["billing-deploy".into()]);
        let rules = MappingRules::new(&config);
        let observation = Observation {
            system: "billing-deploy".into(),
            environment: "prod".into(),
            raw_status: "SUCCESS".into(),
            ..Observation::bare("billing-deploy#7", DeploymentStatus::Succeeded, 1)
        };
        let mapped = vec![rules.map(observation)];
        let decision =
            Decision::of_deployments("processed", "jenkins.deployment_jobs", "jenkins", &mapped, &rules);
        let stored = Decision::from_json(Some(&decision.to_json())).unwrap();
        assert_eq!(stored, decision);
        let decided = &stored.deployments[0];
        assert_eq!(
            (decided.system.raw.as_str(), decided.system.value.as_str()),
            ("billing-deploy", "billing")
        );
        assert!(
            decided.system.by.contains("system_aliases"),
            "{}",
            decided.system.by
        );
        assert_eq!(decided.environment.value, "production");
        assert!(
            decided.environment.by.contains("default"),
            "{}",
            decided.environment.by
        );
        assert!(
            decision
                .to_json()
                .contains(&Decision::rule_marker("jenkins.deployment_jobs"))
        );
        let text = stored.explain().join("\n");
        assert!(text.contains("billing-deploy -> billing"), "{text}");
        assert!(text.contains("SUCCESS -> SUCCEEDED"), "{text}");
    }
}
