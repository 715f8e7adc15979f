//! The closed sets stored as words: a deployment's status and a delivery's journal state.
//! Both are columns of these types (SeaORM value types over the stored words, which are
//! unchanged). A word this version does not know reads back as `Unknown` (a status) or is an
//! error (a journal state is only ever written by shiplog), so a row written by a newer
//! shiplog still loads.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use sea_orm::DeriveValueType;

/// Where a deployment stands. Every tool's status word maps to one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, DeriveValueType)]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sea_orm(value_type = "String")]
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

    /// Reads a stored word back; anything unrecognised is `Unknown` rather than an error.
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

    /// Queued or running: on its way.
    pub fn in_progress(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
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

/// A status is part of the rollup's primary key; keys made of it are never auto-incremented.
impl sea_orm::TryFromU64 for DeploymentStatus {
    fn try_from_u64(_: u64) -> Result<Self, sea_orm::DbErr> {
        Err(sea_orm::DbErr::ConvertFromU64("DeploymentStatus"))
    }
}

impl FromStr for DeploymentStatus {
    type Err = Infallible;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        Ok(Self::from_stored(word))
    }
}

/// Where a journaled delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, DeriveValueType)]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[sea_orm(value_type = "String")]
pub enum DeliveryState {
    // Waiting for enrichment (an API call) before it can be applied.
    Pending,
    // Applied.
    Processed,
    // Describes no deployment (the reason is kept).
    Ignored,
    // Gave up after its last attempt (the error is kept); `shiplog reprocess` puts it back.
    Failed,
}

impl DeliveryState {
    /// The word stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = UnknownState;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        match word {
            "pending" => Ok(Self::Pending),
            "processed" => Ok(Self::Processed),
            "ignored" => Ok(Self::Ignored),
            "failed" => Ok(Self::Failed),
            other => Err(UnknownState(other.chars().take(32).collect())),
        }
    }
}

/// How shiplog first learned of a deployment: a tool's webhook, `shiplog import` (history),
/// the server's reconciliation against the tool's API (a deployment webhooks missed), or
/// shiplog's own write API (`recordDeployment`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, DeriveValueType)]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[sea_orm(value_type = "String")]
pub enum Discovery {
    #[default]
    Webhook,
    Import,
    Reconcile,
    Api,
}

impl Discovery {
    /// The word stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Import => "import",
            Self::Reconcile => "reconcile",
            Self::Api => "api",
        }
    }

    /// Reads a stored word back (a word this version does not know reads as a webhook).
    pub fn from_stored(word: &str) -> Self {
        match word {
            "import" => Self::Import,
            "reconcile" => Self::Reconcile,
            "api" => Self::Api,
            _ => Self::Webhook,
        }
    }
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Discovery {
    type Err = Infallible;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        Ok(Self::from_stored(word))
    }
}

/// A journal state word this version does not know.
#[derive(Debug)]
pub struct UnknownState(String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown delivery state `{}`", self.0)
    }
}

impl std::error::Error for UnknownState {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stored_words_round_trip() {
        for status in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::from_stored(status.as_str()), status);
        }
        assert_eq!(DeploymentStatus::from_stored("paused"), DeploymentStatus::Unknown);
        for state in [
            DeliveryState::Pending,
            DeliveryState::Processed,
            DeliveryState::Ignored,
            DeliveryState::Failed,
        ] {
            assert_eq!(state.as_str().parse::<DeliveryState>().unwrap(), state);
        }
        assert!("parked".parse::<DeliveryState>().is_err());
    }

    #[test]
    fn terminal_statuses_are_furthest_along() {
        assert!(DeploymentStatus::Succeeded.progress() > DeploymentStatus::Running.progress());
        assert!(DeploymentStatus::Running.progress() > DeploymentStatus::Queued.progress());
        assert!(DeploymentStatus::Failed.is_terminal());
        assert!(!DeploymentStatus::Running.is_terminal());
    }
}
