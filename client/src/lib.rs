//! sluice-client: a small, blocking Kafka-protocol client for Sluice's command-line tools.
//!
//! It speaks the wire protocol through `sluice-protocol` over one `std::net::TcpStream`:
//! connect with a timeout, negotiate versions with ApiVersions (the highest version both sides
//! support, per API), then one request at a time with checked correlation ids. It builds
//! record batches with `sluice_engine::builder::BatchBuilder` and reads them back with
//! `sluice_engine::records`. Errors carry the Kafka error code and the broker's message.
//!
//! Sluice is a single-node broker, so every request goes to the bootstrap broker; the client
//! does not follow partition leadership to other brokers. It is owned by one thread; the
//! load generator's asynchronous client is a separate piece.

pub mod admin;
pub mod connection;
pub mod error;
pub mod error_codes;
pub mod fetch;
pub mod groups;
pub mod partitioner;
pub mod produce;
pub mod transactions;

pub use admin::{
    AlterConfigOp, BrokerMetadata, ClusterMetadata, ConfigEntry, ConfigSource, NewTopic,
    PartitionMetadata, TopicMetadata,
};
pub use bytes::Bytes;
pub use connection::{Client, ClientConfig, CLIENT_VERSIONS, RESPONSE_BYTES_MAX};
pub use error::{ClientError, KafkaError};
pub use fetch::{ConsumedRecord, FetchOptions, FetchedPartition, OffsetSpec, TopicRef};
pub use groups::{
    Assignment, CommittedOffset, Coordinator, GroupDescription, GroupMember, ListedGroup,
    OffsetToCommit,
};
pub use produce::{Acks, Produced};
pub use sluice_engine::builder::BatchBuilder;
pub use sluice_engine::compression::Codec;
pub use sluice_engine::records::Header;
pub use transactions::{ActiveProducer, ListedTransaction, TransactionDescription};
