//! SeaORM entities for shiplog's tables. Only `src/store/` uses them; GraphQL and the
//! sources see domain types. Times are epoch milliseconds (see the migration crate).

pub mod board_cells;
pub mod commit_ranges;
pub mod deliveries;
pub mod deployment_changes;
pub mod deployment_counts;
pub mod deployment_events;
pub mod deployments;
pub mod environments;
pub mod settings;
pub mod status;
pub mod systems;

pub use status::{DeliveryState, DeploymentStatus, Discovery};
