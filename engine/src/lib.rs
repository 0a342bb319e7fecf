//! Sluice storage engine.
//!
//! Owns the on-disk Kafka log: record batches (magic v2), segments written with O_DIRECT through
//! glommio, sparse indexes, partitions, recovery, retention and the per-core shards that own them.
