//! The Sluice broker server: listeners, connections, request dispatch, one handler per Kafka API.

pub mod admin;
pub mod broker;
pub mod broker_configs;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod data_dir;
pub mod errors;
pub mod fetch_sessions;
pub mod groups;
pub mod handlers;
pub mod metrics;
pub mod notify;
pub mod producer_ids;
pub mod server;
pub mod socket_writer;
pub mod topic_configs;
pub mod topics;
pub mod txn;
pub mod txn_markers;
