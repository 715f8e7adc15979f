//! Environments that come and go: which are ephemeral (review apps, previews: by name
//! pattern), and when one counts as stopped (nothing deployed to it for a while).

use super::DAY_MS;

/// The `[environments]` table of the settings file.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentsConfig {
    /// Name patterns of ephemeral environments (`*` matches anything, `/` included),
    /// case-insensitive.
    pub ephemeral: Vec<String>,
    /// An ephemeral environment nothing was deployed to for this many days is stopped.
    pub ephemeral_stopped_after_days: u32,
    /// Any other environment nothing was deployed to for this many days is stopped (0: never).
    pub stopped_after_days: u32,
}

impl Default for EnvironmentsConfig {
    fn default() -> Self {
        Self {
            ephemeral: vec!["review/*".into(), "preview/*".into()],
            ephemeral_stopped_after_days: 7,
            stopped_after_days: 0,
        }
    }
}

impl EnvironmentsConfig {
    /// Whether a name matches an ephemeral pattern.
    pub fn is_ephemeral(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.ephemeral
            .iter()
            .any(|pattern| matches(&pattern.to_lowercase(), &name))
    }

    /// Whether an environment last deployed to at `last` (epoch ms) is stopped at `now`.
    /// Whether an environment is stopped: its tool said so (`tool_stopped_at`) and nothing was
    /// deployed there since, or nothing was deployed there for longer than allowed.
    pub fn is_stopped(&self, name: &str, last: Option<i64>, tool_stopped_at: Option<i64>, now: i64) -> bool {
        if tool_stopped_at.is_some_and(|stopped| last.is_none_or(|last| stopped >= last)) {
            return true;
        }
        let days = if self.is_ephemeral(name) {
            self.ephemeral_stopped_after_days
        } else {
            self.stopped_after_days
        };
        days > 0 && last.is_some_and(|last| now - last > i64::from(days) * DAY_MS)
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return name.is_empty();
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (n, part) in parts.iter().enumerate() {
        if n == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_apps_are_ephemeral_and_stop_after_a_quiet_week() {
        let config = EnvironmentsConfig::default();
        assert!(config.is_ephemeral("review/feature-x"));
        assert!(config.is_ephemeral("Review/PR-12"));
        assert!(!config.is_ephemeral("production"));
        assert!(!config.is_ephemeral("reviews"));
        let now = 30 * DAY_MS;
        assert!(config.is_stopped("review/feature-x", Some(now - 8 * DAY_MS), None, now));
        assert!(!config.is_stopped("review/feature-x", Some(now - 6 * DAY_MS), None, now));
        assert!(
            !config.is_stopped("production", Some(0), None, now),
            "0 days: never"
        );
        // The tool's stop counts until something is deployed there again.
        assert!(config.is_stopped("review/feature-x", Some(now - DAY_MS), Some(now - 60_000), now));
        assert!(!config.is_stopped("review/feature-x", Some(now), Some(now - 60_000), now));
        assert!(config.is_stopped("staging", None, Some(now), now));
        assert!(matches("pr-*-app", "pr-12-app") && !matches("pr-*-app", "pr-12-api"));
        assert!(matches("*", "anything") && matches("exact", "exact") && !matches("exact", "exactly"));
    }
}
