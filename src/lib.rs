//! shiplog: what was deployed, where, when and how, across every deployment tool.
//!
//! ```text
//! POST /webhooks/{source}
//!   -> verify, parse        sources/   (pure: bytes + headers -> observations)
//!   -> map                  domain/    (system / environment rules)
//!   -> journal + apply      store/     (one transaction, group commit)
//!   -> publish              events.rs  (after commit; across replicas via PostgreSQL)
//! GraphQL                   graphql/   (reads only through store/)
//! tools' APIs -> import/    (history and reconciliation, through the same ingest)
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod commits;
pub mod config;
pub mod domain;
pub mod enrich;
pub mod events;
pub mod graphql;
pub mod http;
pub mod import;
pub mod ingest;
pub mod seed;
pub mod sink;
pub mod sources;
pub mod startup;
pub mod store;
pub mod telemetry;
