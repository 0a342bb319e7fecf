//! Every topic-level config Kafka defines: name, default, and how a value is checked.
//!
//! The storage engine's `LogConfig` owns the settings it acts on (segment, retention, flush,
//! timestamps, cleanup); the rest are broker settings (compression, compaction tuning,
//! replication) that must still be accepted, validated, stored and described exactly as Kafka
//! does, because tools and clients set them. This table is the single list of both.

use crate::topics::TopicError;

/// How a config value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A 64-bit integer at least `min`.
    Long {
        min: i64,
    },
    /// A 32-bit integer in `min..=max`.
    Int {
        min: i32,
        max: i32,
    },
    /// A ratio in `0.0..=1.0`.
    Ratio,
    Boolean,
    /// One of the listed words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of words from the given set (cleanup.policy).
    ListOf(&'static [&'static str]),
    /// Free text (replica throttle lists and the like).
    Text,
}

/// One topic config.
#[derive(Clone, Copy, Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    /// The broker-level config that supplies the default (Kafka's synonym), if any.
    pub broker_synonym: Option<&'static str>,
    /// Whether the storage engine's `LogConfig` acts on it.
    pub log_setting: bool,
}

const LONG_MAX: &str = "9223372036854775807";

/// The topic configs, in Kafka's documentation order.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        "delete",
        Kind::ListOf(&["delete", "compact"]),
        Some("log.cleanup.policy"),
        true,
    ),
    def(
        "compression.type",
        "producer",
        Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        Some("compression.type"),
        false,
    ),
    def(
        "compression.gzip.level",
        "-1",
        Kind::Int { min: -1, max: 9 },
        Some("compression.gzip.level"),
        false,
    ),
    def(
        "compression.lz4.level",
        "9",
        Kind::Int { min: 1, max: 17 },
        Some("compression.lz4.level"),
        false,
    ),
    def(
        "compression.zstd.level",
        "3",
        Kind::Int {
            min: -131072,
            max: 22,
        },
        Some("compression.zstd.level"),
        false,
    ),
    def(
        "delete.retention.ms",
        "86400000",
        Kind::Long { min: 0 },
        Some("log.cleaner.delete.retention.ms"),
        false,
    ),
    def(
        "file.delete.delay.ms",
        "60000",
        Kind::Long { min: 0 },
        Some("log.segment.delete.delay.ms"),
        false,
    ),
    def(
        "flush.messages",
        LONG_MAX,
        Kind::Long { min: 1 },
        Some("log.flush.interval.messages"),
        true,
    ),
    def(
        "flush.ms",
        LONG_MAX,
        Kind::Long { min: 0 },
        Some("log.flush.interval.ms"),
        true,
    ),
    def(
        "follower.replication.throttled.replicas",
        "",
        Kind::Text,
        None,
        false,
    ),
    def(
        "index.interval.bytes",
        "4096",
        Kind::Int {
            min: 0,
            max: i32::MAX,
        },
        Some("log.index.interval.bytes"),
        true,
    ),
    def(
        "leader.replication.throttled.replicas",
        "",
        Kind::Text,
        None,
        false,
    ),
    def(
        "local.retention.bytes",
        "-2",
        Kind::Long { min: -2 },
        Some("log.local.retention.bytes"),
        false,
    ),
    def(
        "local.retention.ms",
        "-2",
        Kind::Long { min: -2 },
        Some("log.local.retention.ms"),
        false,
    ),
    def(
        "max.compaction.lag.ms",
        LONG_MAX,
        Kind::Long { min: 1 },
        Some("log.cleaner.max.compaction.lag.ms"),
        false,
    ),
    def(
        "max.message.bytes",
        "1048588",
        Kind::Int {
            min: 0,
            max: i32::MAX,
        },
        Some("message.max.bytes"),
        true,
    ),
    def(
        "message.timestamp.after.max.ms",
        "3600000",
        Kind::Long { min: 0 },
        Some("log.message.timestamp.after.max.ms"),
        false,
    ),
    def(
        "message.timestamp.before.max.ms",
        LONG_MAX,
        Kind::Long { min: 0 },
        Some("log.message.timestamp.before.max.ms"),
        false,
    ),
    def(
        "message.timestamp.type",
        "CreateTime",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        Some("log.message.timestamp.type"),
        true,
    ),
    def(
        "min.cleanable.dirty.ratio",
        "0.5",
        Kind::Ratio,
        Some("log.cleaner.min.cleanable.ratio"),
        false,
    ),
    def(
        "min.compaction.lag.ms",
        "0",
        Kind::Long { min: 0 },
        Some("log.cleaner.min.compaction.lag.ms"),
        false,
    ),
    def(
        "min.insync.replicas",
        "1",
        Kind::Int {
            min: 1,
            max: i32::MAX,
        },
        Some("min.insync.replicas"),
        false,
    ),
    def(
        "preallocate",
        "false",
        Kind::Boolean,
        Some("log.preallocate"),
        false,
    ),
    def("remote.storage.enable", "false", Kind::Boolean, None, false),
    def(
        "retention.bytes",
        "-1",
        Kind::Long { min: -1 },
        Some("log.retention.bytes"),
        true,
    ),
    def(
        "retention.ms",
        "604800000",
        Kind::Long { min: -1 },
        Some("log.retention.ms"),
        true,
    ),
    def(
        "segment.bytes",
        "1073741824",
        Kind::Int {
            min: 4096,
            max: i32::MAX,
        },
        Some("log.segment.bytes"),
        true,
    ),
    def(
        "segment.index.bytes",
        "10485760",
        Kind::Int {
            min: 8,
            max: i32::MAX,
        },
        Some("log.index.size.max.bytes"),
        true,
    ),
    def(
        "segment.jitter.ms",
        "0",
        Kind::Long { min: 0 },
        Some("log.roll.jitter.ms"),
        false,
    ),
    def(
        "segment.ms",
        "604800000",
        Kind::Long { min: 1 },
        Some("log.roll.ms"),
        true,
    ),
    def(
        "unclean.leader.election.enable",
        "false",
        Kind::Boolean,
        Some("unclean.leader.election.enable"),
        false,
    ),
];

const fn def(
    name: &'static str,
    default: &'static str,
    kind: Kind,
    broker_synonym: Option<&'static str>,
    log_setting: bool,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        default,
        kind,
        broker_synonym,
        log_setting,
    }
}

/// The definition of a topic config by name.
pub fn find(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks a value of a config the storage engine does not act on (it checks its own).
pub fn validate_non_log_config(name: &str, value: &str) -> Result<(), TopicError> {
    let def = find(name)
        .ok_or_else(|| TopicError::InvalidConfig(format!("unknown topic config '{name}'")))?;
    check_value(def, value)
}

/// Checks `value` against `def`'s kind.
pub fn check_value(def: &TopicConfigDef, value: &str) -> Result<(), TopicError> {
    let v = value.trim();
    let bad = |why: String| {
        Err(TopicError::InvalidConfig(format!(
            "invalid value '{value}' for config '{}': {why}",
            def.name
        )))
    };
    match def.kind {
        Kind::Long { min } => match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(()),
            Ok(_) => bad(format!("must be at least {min}")),
            Err(_) => bad("not a 64-bit integer".into()),
        },
        Kind::Int { min, max } => match v.parse::<i32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(()),
            Ok(_) => bad(format!("must be between {min} and {max}")),
            Err(_) => bad("not a 32-bit integer".into()),
        },
        Kind::Ratio => match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
            _ => bad("must be a number between 0 and 1".into()),
        },
        Kind::Boolean => match v.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => bad("must be true or false".into()),
        },
        Kind::OneOf(words) => {
            if words.contains(&v) {
                Ok(())
            } else {
                bad(format!("must be one of {}", words.join(", ")))
            }
        }
        Kind::ListOf(words) => {
            let parts: Vec<&str> = v.split(',').map(str::trim).collect();
            if !parts.is_empty() && parts.iter().all(|p| words.contains(p)) {
                Ok(())
            } else {
                bad(format!("must be a list of {}", words.join(", ")))
            }
        }
        Kind::Text => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_check() {
        for def in TOPIC_CONFIGS {
            check_value(def, def.default).unwrap_or_else(|e| panic!("{}: {e}", def.name));
        }
    }

    #[test]
    fn log_settings_are_exactly_the_engines() {
        let mut ours: Vec<&str> = TOPIC_CONFIGS
            .iter()
            .filter(|d| d.log_setting)
            .map(|d| d.name)
            .collect();
        let mut engine = sluice_engine::config::CONFIG_NAMES.to_vec();
        ours.sort_unstable();
        engine.sort_unstable();
        assert_eq!(ours, engine);
    }

    #[test]
    fn bad_values_are_refused_with_the_config_named() {
        for (k, v) in [
            ("compression.type", "brotli"),
            ("min.insync.replicas", "0"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("preallocate", "maybe"),
            ("delete.retention.ms", "-5"),
        ] {
            let err = validate_non_log_config(k, v).unwrap_err();
            assert_eq!(err.kafka_code(), 40);
            assert!(err.to_string().contains(k), "{err}");
        }
        assert!(validate_non_log_config("compression.type", "zstd").is_ok());
        assert!(validate_non_log_config("nope", "1").is_err());
    }
}
