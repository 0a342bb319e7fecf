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
        true,
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
        true,
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
        true,
    ),
    def(
        "min.compaction.lag.ms",
        "0",
        Kind::Long { min: 0 },
        Some("log.cleaner.min.compaction.lag.ms"),
        true,
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

/// Where a described config value comes from (Kafka's `ConfigSource` numbers).
pub mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's config value types, as DescribeConfigs v3+ reports them.
pub mod config_type {
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
    pub const PASSWORD: i8 = 9;
}

impl Kind {
    /// The Kafka config type of values of this kind.
    pub fn config_type(self) -> i8 {
        match self {
            Kind::Long { .. } => config_type::LONG,
            Kind::Int { .. } => config_type::INT,
            Kind::Ratio => config_type::DOUBLE,
            Kind::Boolean => config_type::BOOLEAN,
            Kind::OneOf(_) => config_type::STRING,
            // The replica throttle lists are Kafka LIST configs too.
            Kind::ListOf(_) | Kind::Text => config_type::LIST,
        }
    }

    /// Whether values are comma-separated lists, the only configs IncrementalAlterConfigs may
    /// APPEND to or SUBTRACT from.
    pub fn is_list(self) -> bool {
        self.config_type() == config_type::LIST
    }
}

/// One alternative source of a config's value, most specific first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
}

/// One described config: what DescribeConfigs and CreateTopics (v5+) report for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
    pub config_type: i8,
    pub doc: &'static str,
    /// The value's sources, the one in effect first (Kafka's order).
    pub synonyms: Vec<Synonym>,
}

impl ConfigEntry {
    /// Whether the value is the built-in default (DescribeConfigs v0's `is_default`).
    pub fn is_default(&self) -> bool {
        self.source == source::DEFAULT_CONFIG
    }
}

/// Describes every topic config of a topic with `overrides`: overridden keys as
/// DYNAMIC_TOPIC_CONFIG, the rest as DEFAULT_CONFIG, with the broker-level synonym that
/// supplies the default.
pub fn describe_topic_configs(
    overrides: &std::collections::BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let mut synonyms = Vec::with_capacity(2);
            let over = overrides.get(def.name);
            if let Some(v) = over {
                synonyms.push(Synonym {
                    name: def.name.to_string(),
                    value: Some(v.clone()),
                    source: source::DYNAMIC_TOPIC_CONFIG,
                });
            }
            if let Some(broker) = def.broker_synonym {
                synonyms.push(Synonym {
                    name: broker.to_string(),
                    value: Some(def.default.to_string()),
                    source: source::DEFAULT_CONFIG,
                });
            }
            ConfigEntry {
                name: def.name.to_string(),
                value: Some(over.map_or_else(|| def.default.to_string(), Clone::clone)),
                source: if over.is_some() {
                    source::DYNAMIC_TOPIC_CONFIG
                } else {
                    source::DEFAULT_CONFIG
                },
                read_only: false,
                sensitive: false,
                config_type: def.kind.config_type(),
                doc: doc(def.name),
                synonyms,
            }
        })
        .collect()
}

/// A one-sentence description of a topic config (DescribeConfigs `include_documentation`).
pub fn doc(name: &str) -> &'static str {
    match name {
        "cleanup.policy" => "How old log segments are discarded: 'delete' by time or size, 'compact' by keeping the latest value per key, or both.",
        "compression.type" => "The compression codec of stored batches; 'producer' keeps what the producer sent.",
        "compression.gzip.level" => "The gzip level used when compression.type is gzip.",
        "compression.lz4.level" => "The lz4 level used when compression.type is lz4.",
        "compression.zstd.level" => "The zstd level used when compression.type is zstd.",
        "delete.retention.ms" => "How long delete markers (tombstones) are kept on compacted topics.",
        "file.delete.delay.ms" => "How long to wait before deleting a file from the filesystem.",
        "flush.messages" => "Force an fsync after this many messages have been appended.",
        "flush.ms" => "Force an fsync when unsynced data is older than this.",
        "follower.replication.throttled.replicas" => "Replicas whose follower replication is throttled.",
        "index.interval.bytes" => "How many log bytes lie between two offset index entries.",
        "leader.replication.throttled.replicas" => "Replicas whose leader replication is throttled.",
        "local.retention.bytes" => "Local log size kept when tiered storage is enabled (-2: use retention.bytes).",
        "local.retention.ms" => "Local log age kept when tiered storage is enabled (-2: use retention.ms).",
        "max.compaction.lag.ms" => "The longest time a message stays ineligible for compaction.",
        "max.message.bytes" => "The largest record batch size the topic accepts.",
        "message.timestamp.after.max.ms" => "How far in the future a message timestamp may be.",
        "message.timestamp.before.max.ms" => "How far in the past a message timestamp may be.",
        "message.timestamp.type" => "Whether a message's timestamp is the producer's (CreateTime) or the broker's (LogAppendTime).",
        "min.cleanable.dirty.ratio" => "The share of the log that must be uncompacted before compaction runs.",
        "min.compaction.lag.ms" => "The shortest time a message stays uncompacted.",
        "min.insync.replicas" => "Replicas that must acknowledge a write with acks=all.",
        "preallocate" => "Whether segment files are preallocated on creation.",
        "remote.storage.enable" => "Whether tiered storage is enabled for the topic.",
        "retention.bytes" => "The largest size the log may reach before old segments are deleted (-1: no limit).",
        "retention.ms" => "How long a log segment is kept before it is deleted (-1: forever).",
        "segment.bytes" => "The size of one log segment file.",
        "segment.index.bytes" => "The size of one offset index file.",
        "segment.jitter.ms" => "Random jitter subtracted from segment.ms to avoid rolling all segments at once.",
        "segment.ms" => "How long before the active segment is rolled even if not full.",
        "unclean.leader.election.enable" => "Whether an out-of-sync replica may become leader.",
        _ => "",
    }
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
    fn every_config_is_documented() {
        for def in TOPIC_CONFIGS {
            assert!(
                !doc(def.name).is_empty(),
                "{} has no documentation",
                def.name
            );
        }
    }

    #[test]
    fn overrides_are_dynamic_and_the_rest_default() {
        let overrides = [("retention.ms".to_string(), "1000".to_string())].into();
        let entries = describe_topic_configs(&overrides);
        assert_eq!(entries.len(), TOPIC_CONFIGS.len());
        let retention = entries.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(retention.source, source::DYNAMIC_TOPIC_CONFIG);
        assert_eq!(
            retention
                .synonyms
                .iter()
                .map(|s| (s.name.as_str(), s.source))
                .collect::<Vec<_>>(),
            [
                ("retention.ms", source::DYNAMIC_TOPIC_CONFIG),
                ("log.retention.ms", source::DEFAULT_CONFIG)
            ]
        );
        let segment = entries.iter().find(|e| e.name == "segment.bytes").unwrap();
        assert_eq!(segment.value.as_deref(), Some("1073741824"));
        assert!(segment.is_default());
        assert_eq!(segment.config_type, config_type::INT);
        let cleanup = entries.iter().find(|e| e.name == "cleanup.policy").unwrap();
        assert_eq!(cleanup.config_type, config_type::LIST);
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
