//! The normalised deployment status, a closed set.

use std::fmt;

/// Where a deployment stands. Every tool's status word maps to one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Unknown,
}

impl DeploymentStatus {
    /// The word stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
        }
    }

    /// Reads a stored word back; anything unrecognised is `Unknown` rather than an error,
    /// so a row written by a newer shiplog still loads.
    pub fn from_stored(word: &str) -> Self {
        match word {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => Self::Unknown,
        }
    }

    /// Terminal statuses end a deployment: nothing non-terminal may replace them.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// How far along a deployment is; a later event only replaces the status when it is at
    /// least as far along, so a late "running" never overwrites "succeeded".
    pub fn progress(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Queued => 1,
            Self::Running => 2,
            Self::Succeeded | Self::Failed | Self::Cancelled => 3,
        }
    }

    /// Every status, in display order.
    pub const ALL: [DeploymentStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Unknown,
    ];
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_words_round_trip() {
        for status in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::from_stored(status.as_str()), status);
        }
    }

    #[test]
    fn terminal_statuses_are_furthest_along() {
        assert!(DeploymentStatus::Succeeded.progress() > DeploymentStatus::Running.progress());
        assert!(DeploymentStatus::Running.progress() > DeploymentStatus::Queued.progress());
        assert!(DeploymentStatus::Failed.is_terminal());
        assert!(!DeploymentStatus::Running.is_terminal());
    }
}
