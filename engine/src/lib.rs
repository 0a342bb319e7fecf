//! Sluice storage engine.
//!
//! Owns the on-disk Kafka log: record batches (magic v2), segments written with O_DIRECT through
//! glommio, sparse indexes, partitions, recovery, retention and the per-core shards that own them.

// Format and files (record batches, segments, indexes, recovery, partitions).
pub mod batch;
pub mod batch_cache;
pub mod cleaner;
pub mod config;
pub mod durability;
pub mod error;
pub mod histogram;
pub mod index;
pub mod io;
pub mod limits;
pub mod order;
pub mod partition;
pub mod producer_state;
pub mod recovery;
pub mod retention;
pub mod segment;
pub mod segment_reader;
pub mod segment_writer;
pub mod txn_index;
pub mod types;

// Records inside batches, compression codecs, and building batches.
pub mod builder;
pub mod compression;
pub mod records;

// Shards: executors pinned per core, the placement table and the cross-core mesh.
pub mod placement;
pub mod shard;
