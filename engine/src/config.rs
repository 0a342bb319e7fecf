//! Per-topic log settings with Kafka's names and defaults, parsed from Kafka-style strings.
//!
//! A [`LogConfig`] is immutable once built and shared as `Arc<LogConfig>` by every partition of
//! a topic on every shard; changing a topic's config means building a new one.

use crate::error::{Error, Result};
use crate::limits::{
    DAY_MS, INDEX_INTERVAL_BYTES_DEFAULT, MAX_MESSAGE_BYTES_DEFAULT, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_INDEX_BYTES_DEFAULT, WEEK_MS,
};

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageTimestampType {
    CreateTime,
    LogAppendTime,
}

/// `cleanup.policy`: `delete` is time/size retention (`crate::retention`), `compact` the log
/// cleaner (`crate::cleaner`); `compact,delete` both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

/// Kafka's "off" value for `flush.ms` / `flush.messages`.
pub const FLUSH_OFF: i64 = i64::MAX;

/// The settings of one topic's logs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when the next batch would make it larger.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when its first batch is older than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete closed segments whose newest timestamp is older (-1: never).
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest closed segments while the log is larger (-1: never).
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: maximum size of one offset index file (rolls when full).
    pub segment_index_bytes: u32,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`.
    pub message_timestamp_type: MessageTimestampType,
    /// `flush.ms`: fdatasync at least this often when data is unsynced ([`FLUSH_OFF`]: never).
    pub flush_ms: i64,
    /// `flush.messages`: fdatasync after this many unsynced records ([`FLUSH_OFF`]: never).
    pub flush_messages: i64,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `min.cleanable.dirty.ratio`: the cleaner takes a log once this share of it is dirty.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty record is older is cleaned whatever
    /// its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone stays after the cleaner first saw it.
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: WEEK_MS,
            retention_ms: WEEK_MS,
            retention_bytes: -1,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            segment_index_bytes: SEGMENT_INDEX_BYTES_DEFAULT,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            message_timestamp_type: MessageTimestampType::CreateTime,
            flush_ms: FLUSH_OFF,
            flush_messages: FLUSH_OFF,
            cleanup_policy: CleanupPolicy::Delete,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: DAY_MS,
        }
    }
}

/// Every config name [`LogConfig::set`] understands.
pub const CONFIG_NAMES: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
    "index.interval.bytes",
    "segment.index.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "flush.ms",
    "flush.messages",
    "cleanup.policy",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
];

impl LogConfig {
    /// Builds a config from Kafka-style `name=value` pairs over the defaults.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut c = LogConfig::default();
        for (k, v) in pairs {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// Applies one Kafka-style setting, validating it. Unknown names are an error so typos are
    /// reported instead of ignored.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let v = value.trim();
        match name {
            "segment.bytes" => {
                let n = parse_i64("segment.bytes", v)?;
                self.segment_bytes = in_range(
                    "segment.bytes",
                    v,
                    n,
                    SEGMENT_BYTES_MIN as i64,
                    SEGMENT_BYTES_MAX as i64,
                )? as u64;
            }
            "segment.ms" => {
                self.segment_ms =
                    in_range("segment.ms", v, parse_i64("segment.ms", v)?, 1, i64::MAX)?
            }
            "retention.ms" => {
                self.retention_ms = in_range(
                    "retention.ms",
                    v,
                    parse_i64("retention.ms", v)?,
                    -1,
                    i64::MAX,
                )?
            }
            "retention.bytes" => {
                self.retention_bytes = in_range(
                    "retention.bytes",
                    v,
                    parse_i64("retention.bytes", v)?,
                    -1,
                    i64::MAX,
                )?
            }
            "index.interval.bytes" => {
                let n = parse_i64("index.interval.bytes", v)?;
                self.index_interval_bytes =
                    in_range("index.interval.bytes", v, n, 0, i64::from(i32::MAX))? as u32;
            }
            "segment.index.bytes" => {
                let n = parse_i64("segment.index.bytes", v)?;
                self.segment_index_bytes =
                    in_range("segment.index.bytes", v, n, 8, i64::from(i32::MAX))? as u32;
            }
            "max.message.bytes" => {
                let n = parse_i64("max.message.bytes", v)?;
                self.max_message_bytes =
                    in_range("max.message.bytes", v, n, 0, i64::from(i32::MAX))? as usize;
            }
            "message.timestamp.type" => {
                self.message_timestamp_type = match v {
                    "CreateTime" => MessageTimestampType::CreateTime,
                    "LogAppendTime" => MessageTimestampType::LogAppendTime,
                    _ => {
                        return Err(invalid(
                            "message.timestamp.type",
                            v,
                            "must be CreateTime or LogAppendTime",
                        ))
                    }
                }
            }
            "flush.ms" => {
                self.flush_ms = in_range("flush.ms", v, parse_i64("flush.ms", v)?, 0, i64::MAX)?
            }
            "flush.messages" => {
                self.flush_messages = in_range(
                    "flush.messages",
                    v,
                    parse_i64("flush.messages", v)?,
                    1,
                    i64::MAX,
                )?
            }
            "cleanup.policy" => {
                let mut parts: Vec<&str> = v.split(',').map(str::trim).collect();
                parts.sort_unstable();
                parts.dedup();
                self.cleanup_policy = match parts.as_slice() {
                    ["delete"] => CleanupPolicy::Delete,
                    ["compact"] => CleanupPolicy::Compact,
                    ["compact", "delete"] => CleanupPolicy::CompactDelete,
                    _ => {
                        return Err(invalid(
                            "cleanup.policy",
                            v,
                            "must be delete, compact or compact,delete",
                        ))
                    }
                }
            }
            "min.cleanable.dirty.ratio" => {
                let r = v.parse::<f64>().map_err(|e| {
                    invalid(
                        "min.cleanable.dirty.ratio",
                        v,
                        &format!("not a number ({e})"),
                    )
                })?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(invalid(
                        "min.cleanable.dirty.ratio",
                        v,
                        "must be between 0 and 1",
                    ));
                }
                self.min_cleanable_dirty_ratio = r;
            }
            "min.compaction.lag.ms" => {
                self.min_compaction_lag_ms = in_range(
                    "min.compaction.lag.ms",
                    v,
                    parse_i64("min.compaction.lag.ms", v)?,
                    0,
                    i64::MAX,
                )?
            }
            "max.compaction.lag.ms" => {
                self.max_compaction_lag_ms = in_range(
                    "max.compaction.lag.ms",
                    v,
                    parse_i64("max.compaction.lag.ms", v)?,
                    1,
                    i64::MAX,
                )?
            }
            "delete.retention.ms" => {
                self.delete_retention_ms = in_range(
                    "delete.retention.ms",
                    v,
                    parse_i64("delete.retention.ms", v)?,
                    0,
                    i64::MAX,
                )?
            }
            _ => {
                return Err(Error::InvalidConfig {
                    name: "(unknown)",
                    value: format!("{name}={value}"),
                    reason: "unknown topic config name".to_string(),
                })
            }
        }
        Ok(())
    }

    /// Whether the log cleaner compacts this topic.
    pub fn compacts(&self) -> bool {
        matches!(
            self.cleanup_policy,
            CleanupPolicy::Compact | CleanupPolicy::CompactDelete
        )
    }

    /// Whether time/size retention deletes segments of this topic.
    pub fn deletes(&self) -> bool {
        matches!(
            self.cleanup_policy,
            CleanupPolicy::Delete | CleanupPolicy::CompactDelete
        )
    }
}

fn invalid(name: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        name,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_i64(name: &'static str, v: &str) -> Result<i64> {
    v.parse::<i64>()
        .map_err(|e| invalid(name, v, &format!("not an integer ({e})")))
}

fn in_range(name: &'static str, v: &str, n: i64, min: i64, max: i64) -> Result<i64> {
    if n < min || n > max {
        return Err(invalid(
            name,
            v,
            &format!("must be between {min} and {max}"),
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(c.segment_ms, 604_800_000);
        assert_eq!(c.retention_ms, 604_800_000);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(c.index_interval_bytes, 4096);
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert_eq!(c.flush_ms, i64::MAX);
        assert_eq!(c.flush_messages, i64::MAX);
    }

    #[test]
    fn parses_and_rejects_with_clear_errors() {
        let c = LogConfig::from_pairs([
            ("segment.bytes", "1048576"),
            ("retention.ms", "-1"),
            ("message.timestamp.type", "LogAppendTime"),
            ("cleanup.policy", "delete,compact"),
            ("flush.messages", "1"),
        ])
        .unwrap();
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.retention_ms, -1);
        assert_eq!(
            c.message_timestamp_type,
            MessageTimestampType::LogAppendTime
        );
        assert_eq!(c.cleanup_policy, CleanupPolicy::CompactDelete);
        assert!(c.deletes());
        let e = LogConfig::from_pairs([("segment.bytes", "12")]).unwrap_err();
        assert_eq!(e.kafka_code(), 40);
        assert!(e.to_string().contains("segment.bytes"), "{e}");
        assert!(LogConfig::from_pairs([("retention.ms", "soon")]).is_err());
        assert!(LogConfig::from_pairs([("no.such", "1")]).is_err());
        assert!(LogConfig::from_pairs([("cleanup.policy", "keep")]).is_err());
    }
}
