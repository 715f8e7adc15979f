//! Integration tests: the real server on a real port, real HTTP and WebSocket clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod board;
mod browser;
mod catalog;
mod changes;
mod clients;
mod connections;
mod contract;
mod costs;
mod counts;
mod crash;
mod dashboard;
mod declared;
mod enrichment;
mod explain;
mod faults;
mod fidelity;
mod fixtures;
mod fuzz;
mod grafana;
mod graphql;
mod import;
mod ingest;
mod pagination;
pub mod replay;
mod replicas;
mod scale;
mod schema;
mod security;
mod server;
mod sink;
mod sockets;
mod sources;
mod subscriptions;
mod tools;
mod websockets;
mod writes;
