//! The one error type of the storage engine and its mapping to Kafka error codes.
//!
//! Every variant carries the context needed to act on it (which file, which position, which
//! limit) and maps to exactly one Kafka error code in [`Error::kafka_code`], so a client always
//! receives a precise code. Errors are plain values, usable on any core.

use std::io;
use std::path::PathBuf;

use crate::types::{FilePos, Offset, TopicPartition};

/// Kafka error codes the engine produces (from the Kafka protocol's error table).
pub mod kafka_codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const INVALID_TIMESTAMP: i16 = 32;
    pub const INVALID_CONFIG: i16 = 40;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const INVALID_RECORD: i16 = 87;
}

/// Why a record batch was rejected as corrupt (Kafka CORRUPT_MESSAGE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Fewer bytes than a batch header.
    TooShort,
    /// `batchLength` smaller than the header it must cover.
    LengthTooSmall,
    /// `batchLength` reaches past the bytes received.
    LengthPastEnd,
    /// The stored CRC-32C does not match the bytes.
    CrcMismatch { stored: u32, computed: u32 },
}

/// Why a batch was rejected as an invalid record (Kafka INVALID_RECORD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidRecord {
    /// The Produce request carried no batch at all.
    Empty,
    /// `recordCount` is zero or negative.
    NoRecords,
    /// `recordCount` does not equal `lastOffsetDelta + 1`.
    CountMismatch { count: i32, last_offset_delta: i32 },
    /// `lastOffsetDelta` is negative.
    NegativeLastOffsetDelta,
    /// A batch of an idempotent or transactional producer shares the request with other
    /// batches for the partition (Kafka allows exactly one batch per partition then).
    ProducerBatchNotAlone,
    /// A producer sent a control batch; only the broker writes transaction markers.
    ControlBatchFromClient,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("corrupt record batch at byte {pos} of the request: {reason:?}")]
    CorruptBatch { pos: usize, reason: Corruption },

    #[error("invalid record batch at byte {pos} of the request: {reason:?}")]
    InvalidRecord { pos: usize, reason: InvalidRecord },

    #[error("record batch magic {magic} at byte {pos} is not supported (only magic 2)")]
    UnsupportedMagic { pos: usize, magic: i8 },

    #[error("record batch at byte {pos} uses unknown compression codec id {codec}")]
    UnsupportedCompression { pos: usize, codec: u8 },

    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },

    #[error("record set of {size} bytes exceeds the limit of {max} bytes")]
    RecordListTooLarge { size: usize, max: usize },

    #[error("invalid timestamp {timestamp} in batch at byte {pos}")]
    InvalidTimestamp { pos: usize, timestamp: i64 },

    #[error("offset {offset} of {tp} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        tp: TopicPartition,
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },

    #[error("invalid config {name}={value}: {reason}")]
    InvalidConfig {
        name: &'static str,
        value: String,
        reason: String,
    },

    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("partition {tp} is poisoned after a failed {op}; it accepts no more writes: {detail}")]
    Poisoned {
        tp: TopicPartition,
        op: &'static str,
        detail: String,
    },

    #[error("corrupt log {} at position {pos}: {detail}; the partition is offline", segment.display())]
    CorruptLog {
        segment: PathBuf,
        pos: FilePos,
        detail: String,
    },

    #[error("partition {tp} is closed")]
    Closed { tp: TopicPartition },

    #[error("{tp}: {source}")]
    Producer {
        tp: TopicPartition,
        #[source]
        source: crate::producer_state::ProducerError,
    },

    /// A transaction marker's control batch could not be built (its one fixed-size record
    /// always fits; kept as an error rather than a panic on the write path).
    #[error("{tp}: transaction marker not built: {source}")]
    Marker {
        tp: TopicPartition,
        #[source]
        source: crate::builder::BuildError,
    },
}

impl Error {
    /// The Kafka error code a client receives for this error. Each variant maps to exactly one
    /// code; storage failures of any kind are KAFKA_STORAGE_ERROR so clients retry elsewhere.
    pub fn kafka_code(&self) -> i16 {
        use kafka_codes::*;
        match self {
            Error::CorruptBatch { .. } => CORRUPT_MESSAGE,
            Error::InvalidRecord { .. } => INVALID_RECORD,
            Error::UnsupportedMagic { .. } => UNSUPPORTED_FOR_MESSAGE_FORMAT,
            Error::UnsupportedCompression { .. } => UNSUPPORTED_COMPRESSION_TYPE,
            Error::MessageTooLarge { .. } => MESSAGE_TOO_LARGE,
            Error::RecordListTooLarge { .. } => RECORD_LIST_TOO_LARGE,
            Error::InvalidTimestamp { .. } => INVALID_TIMESTAMP,
            Error::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
            Error::InvalidConfig { .. } => INVALID_CONFIG,
            Error::Io { .. } => KAFKA_STORAGE_ERROR,
            Error::Poisoned { .. } => KAFKA_STORAGE_ERROR,
            Error::CorruptLog { .. } => KAFKA_STORAGE_ERROR,
            Error::Closed { .. } => KAFKA_STORAGE_ERROR,
            Error::Producer { source, .. } => source.kafka_code(),
            Error::Marker { source, .. } => source.kafka_code(),
        }
    }

    /// Wraps an I/O error with the operation and file it happened on.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_own_code() {
        let tp = TopicPartition::new("t", 0);
        let cases = [
            (
                Error::CorruptBatch {
                    pos: 0,
                    reason: Corruption::TooShort,
                },
                2,
            ),
            (
                Error::InvalidRecord {
                    pos: 0,
                    reason: InvalidRecord::Empty,
                },
                87,
            ),
            (Error::UnsupportedMagic { pos: 0, magic: 1 }, 43),
            (Error::UnsupportedCompression { pos: 0, codec: 7 }, 76),
            (Error::MessageTooLarge { size: 2, max: 1 }, 10),
            (Error::RecordListTooLarge { size: 2, max: 1 }, 18),
            (
                Error::InvalidTimestamp {
                    pos: 0,
                    timestamp: -5,
                },
                32,
            ),
            (
                Error::OffsetOutOfRange {
                    tp: tp.clone(),
                    offset: Offset(9),
                    log_start: Offset(0),
                    log_end: Offset(1),
                },
                1,
            ),
            (
                Error::Poisoned {
                    tp,
                    op: "fdatasync",
                    detail: String::new(),
                },
                56,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.kafka_code(), code, "{err}");
        }
    }
}
