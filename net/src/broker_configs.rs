//! The broker's own settings as DescribeConfigs reports them for a BROKER resource.
//!
//! A broker resource lists what this broker runs with: the settings given on the command line
//! or in the config file (STATIC_BROKER_CONFIG when they differ from the embedded default,
//! DEFAULT_CONFIG otherwise), and the broker-level defaults of every topic config under its
//! Kafka broker name (`log.retention.ms`, `message.max.bytes` …). Sluice does not support
//! dynamic broker configs, so every entry is read-only and AlterConfigs on a broker resource is
//! refused with a message (see [`dynamic_broker_config_refusal`]). Pure data; runs on whichever
//! shard answers the request.

use crate::config::{
    BrokerConfig, CONNECTIONS_MAX_IDLE_MS_DEFAULT, LOG_CLEANER_BACKOFF_MS_DEFAULT,
    MAX_CONNECTIONS_DEFAULT, SOCKET_REQUEST_MAX_BYTES_DEFAULT,
    TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT, TRANSACTION_ABORT_INTERVAL_MS_DEFAULT,
    TRANSACTION_MAX_TIMEOUT_MS_DEFAULT, TRANSACTION_PARTITION_VERIFICATION_ENABLE_DEFAULT,
    TRANSACTION_REMOVE_EXPIRED_INTERVAL_MS_DEFAULT, TRANSACTION_STATE_LOG_NUM_PARTITIONS_DEFAULT,
    TRANSACTION_STATE_LOG_SEGMENT_BYTES_DEFAULT,
};
use crate::topic_configs::{config_type, source, ConfigEntry, Synonym, TOPIC_CONFIGS};

/// Default of `num.partitions` when no flag or file sets it (Kafka's default).
pub const NUM_PARTITIONS_DEFAULT: i32 = 1;
/// The only replication factor a single node can offer.
pub const DEFAULT_REPLICATION_FACTOR: i16 = 1;

/// Every broker config of this broker, sorted by name.
pub fn describe_broker_configs(config: &BrokerConfig) -> Vec<ConfigEntry> {
    let data_dir = std::fs::canonicalize(&config.data_dir)
        .unwrap_or_else(|_| config.data_dir.clone())
        .display()
        .to_string();
    let mut out = vec![
        entry(
            "broker.id",
            config.node_id.to_string(),
            source::STATIC_BROKER_CONFIG,
            config_type::INT,
            "The id of this broker.",
        ),
        entry(
            "node.id",
            config.node_id.to_string(),
            source::STATIC_BROKER_CONFIG,
            config_type::INT,
            "The id of this node in the cluster.",
        ),
        entry(
            "log.dirs",
            data_dir,
            source::STATIC_BROKER_CONFIG,
            config_type::STRING,
            "The directory that holds the log data.",
        ),
        entry(
            "listeners",
            format!("PLAINTEXT://{}", config.listen),
            source::STATIC_BROKER_CONFIG,
            config_type::STRING,
            "The address the Kafka listener binds.",
        ),
        entry(
            "advertised.listeners",
            format!(
                "PLAINTEXT://{}:{}",
                config.advertised_host, config.advertised_port
            ),
            source::STATIC_BROKER_CONFIG,
            config_type::STRING,
            "The address clients are told to connect to.",
        ),
        static_or_default(
            "auto.create.topics.enable",
            config.auto_create_topics_enable,
            true,
            config_type::BOOLEAN,
            "Whether a topic is created when a client asks for metadata of a topic that does not exist.",
        ),
        static_or_default(
            "num.partitions",
            config.num_partitions,
            NUM_PARTITIONS_DEFAULT,
            config_type::INT,
            "The default number of partitions of a new topic.",
        ),
        entry(
            "default.replication.factor",
            DEFAULT_REPLICATION_FACTOR.to_string(),
            source::DEFAULT_CONFIG,
            config_type::INT,
            "The replication factor of a new topic; a single node offers only 1.",
        ),
        entry(
            "delete.topic.enable",
            "true".to_string(),
            source::DEFAULT_CONFIG,
            config_type::BOOLEAN,
            "Whether topics may be deleted.",
        ),
        static_or_default(
            "socket.request.max.bytes",
            config.socket_request_max_bytes,
            SOCKET_REQUEST_MAX_BYTES_DEFAULT,
            config_type::INT,
            "The largest request the broker accepts.",
        ),
        static_or_default(
            "connections.max.idle.ms",
            config.connections_max_idle_ms,
            CONNECTIONS_MAX_IDLE_MS_DEFAULT,
            config_type::LONG,
            "Idle connections are closed after this long.",
        ),
        static_or_default(
            "max.connections",
            config.max_connections,
            MAX_CONNECTIONS_DEFAULT,
            config_type::INT,
            "The most client connections the broker accepts at once.",
        ),
    ];
    out.extend(transaction_configs(config));
    out.extend(cleaner_configs(config));
    for def in TOPIC_CONFIGS {
        let Some(name) = def.broker_synonym else {
            continue;
        };
        if out.iter().any(|e| e.name == name) {
            continue;
        }
        out.push(entry(
            name,
            def.default.to_string(),
            source::DEFAULT_CONFIG,
            def.kind.config_type(),
            crate::topic_configs::doc(def.name),
        ));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The transaction coordinator's settings, under their Kafka names.
fn transaction_configs(config: &BrokerConfig) -> Vec<ConfigEntry> {
    vec![
        static_or_default(
            "transaction.state.log.num.partitions",
            config.transaction_state_log_num_partitions,
            TRANSACTION_STATE_LOG_NUM_PARTITIONS_DEFAULT,
            config_type::INT,
            "The partitions of __transaction_state when the broker creates it.",
        ),
        static_or_default(
            "transaction.state.log.segment.bytes",
            config.transaction_state_log_segment_bytes,
            TRANSACTION_STATE_LOG_SEGMENT_BYTES_DEFAULT,
            config_type::INT,
            "The segment size of __transaction_state when the broker creates it.",
        ),
        static_or_default(
            "transaction.max.timeout.ms",
            config.transaction_max_timeout_ms,
            TRANSACTION_MAX_TIMEOUT_MS_DEFAULT,
            config_type::INT,
            "The longest transaction timeout a producer may ask for.",
        ),
        static_or_default(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
            TRANSACTION_ABORT_INTERVAL_MS_DEFAULT,
            config_type::INT,
            "How often transactions open past their timeout are aborted.",
        ),
        static_or_default(
            "transactional.id.expiration.ms",
            config.transactional_id_expiration_ms,
            TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT,
            config_type::INT,
            "How long a transactional id without transactions is kept.",
        ),
        static_or_default(
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            config.transaction_remove_expired_transaction_cleanup_interval_ms,
            TRANSACTION_REMOVE_EXPIRED_INTERVAL_MS_DEFAULT,
            config_type::INT,
            "How often expired transactional ids are removed.",
        ),
        static_or_default(
            "transaction.partition.verification.enable",
            config.transaction_partition_verification_enable,
            TRANSACTION_PARTITION_VERIFICATION_ENABLE_DEFAULT,
            config_type::BOOLEAN,
            "Whether a transactional batch's partition must be in the producer's ongoing transaction.",
        ),
    ]
}

/// Kafka's `log.cleaner.io.max.bytes.per.second` default: no limit, written as Java's
/// `Double.MAX_VALUE` prints.
const CLEANER_IO_UNLIMITED: &str = "1.7976931348623157E308";

/// The log cleaner's settings, under their Kafka names. Sluice runs one cleaner per shard, so
/// `log.cleaner.threads` is the shard count and `log.cleaner.dedupe.buffer.size` the key-map
/// memory of all of them together (Kafka's setting is the total over its cleaner threads).
/// The topic-level cleaning defaults (`log.cleaner.min.cleanable.ratio`,
/// `log.cleaner.delete.retention.ms`, `log.cleaner.min.compaction.lag.ms`,
/// `log.cleaner.max.compaction.lag.ms`) come with the other topic defaults.
fn cleaner_configs(config: &BrokerConfig) -> Vec<ConfigEntry> {
    use sluice_engine::cleaner::{key_map, KeyMap, KEY_MAP_BYTES_DEFAULT};
    let allocated = |per_shard: usize| {
        (KeyMap::slots_for_budget(per_shard) * key_map::SLOT_BYTES) as u64
            * u64::from(config.shards)
    };
    let io_limit = match config.log_cleaner_io_max_bytes_per_second {
        Some(limit) => entry(
            "log.cleaner.io.max.bytes.per.second",
            limit.to_string(),
            source::STATIC_BROKER_CONFIG,
            config_type::DOUBLE,
            CLEANER_IO_DOC,
        ),
        None => entry(
            "log.cleaner.io.max.bytes.per.second",
            CLEANER_IO_UNLIMITED.to_string(),
            source::DEFAULT_CONFIG,
            config_type::DOUBLE,
            CLEANER_IO_DOC,
        ),
    };
    vec![
        entry(
            "log.cleaner.enable",
            "true".to_string(),
            source::DEFAULT_CONFIG,
            config_type::BOOLEAN,
            "Whether the log cleaner runs; it always does (the internal topics are compacted).",
        ),
        static_or_default(
            "log.cleaner.backoff.ms",
            config.log_cleaner_backoff_ms,
            LOG_CLEANER_BACKOFF_MS_DEFAULT,
            config_type::LONG,
            "The pause between rounds of each shard's log cleaner.",
        ),
        io_limit,
        entry(
            "log.cleaner.threads",
            config.shards.to_string(),
            source::STATIC_BROKER_CONFIG,
            config_type::INT,
            "The log cleaners: one per shard, each cleaning its shard's partitions.",
        ),
        static_or_default(
            "log.cleaner.dedupe.buffer.size",
            allocated(config.log_cleaner_key_map_bytes_per_shard),
            allocated(KEY_MAP_BYTES_DEFAULT),
            config_type::LONG,
            "Memory of the cleaners' key maps, all shards together, as allocated (each shard \
             gets an even share, in whole 24-byte slots).",
        ),
        entry(
            "log.cleaner.io.buffer.load.factor",
            KeyMap::MAX_LOAD.to_string(),
            source::DEFAULT_CONFIG,
            config_type::DOUBLE,
            "How full a key map is filled before a cleaning pass stops mapping keys.",
        ),
    ]
}

const CLEANER_IO_DOC: &str = "The most segment bytes per second each shard's log cleaner reads.";

/// Why a broker resource cannot be altered: Sluice reads broker settings at start-up only.
pub fn dynamic_broker_config_refusal(resource_name: &str) -> String {
    format!(
        "broker '{resource_name}': sluice does not support dynamic broker configs; set them in \
         the broker's config file or flags and restart"
    )
}

/// Checks a BROKER resource name: this broker's id, or empty for the cluster-wide defaults.
/// Returns whether it names this broker (`false`: the cluster-wide default resource).
pub fn check_broker_resource(config: &BrokerConfig, resource_name: &str) -> Result<bool, String> {
    if resource_name.is_empty() {
        return Ok(false);
    }
    match resource_name.parse::<i32>() {
        Ok(id) if id == config.node_id => Ok(true),
        _ => Err(format!(
            "unexpected broker id '{resource_name}': this is broker {}, ask for '{}' or '' \
             (the cluster-wide defaults)",
            config.node_id, config.node_id
        )),
    }
}

fn entry(name: &str, value: String, src: i8, config_type: i8, doc: &'static str) -> ConfigEntry {
    ConfigEntry {
        name: name.to_string(),
        value: Some(value.clone()),
        source: src,
        // Nothing here can change while the broker runs.
        read_only: true,
        sensitive: false,
        config_type,
        doc,
        synonyms: vec![Synonym {
            name: name.to_string(),
            value: Some(value),
            source: src,
        }],
    }
}

fn static_or_default<T: PartialEq + ToString>(
    name: &str,
    value: T,
    default: T,
    config_type: i8,
    doc: &'static str,
) -> ConfigEntry {
    let src = if value == default {
        source::DEFAULT_CONFIG
    } else {
        source::STATIC_BROKER_CONFIG
    };
    entry(name, value.to_string(), src, config_type, doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLayer;

    fn config(layer: ConfigLayer) -> BrokerConfig {
        BrokerConfig::resolve(layer).unwrap()
    }

    #[test]
    fn given_settings_are_static_and_the_rest_default() {
        let c = config(ConfigLayer {
            num_partitions: Some(3),
            ..ConfigLayer::default()
        });
        let entries = describe_broker_configs(&c);
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get("num.partitions").value.as_deref(), Some("3"));
        assert_eq!(get("num.partitions").source, source::STATIC_BROKER_CONFIG);
        assert_eq!(
            get("auto.create.topics.enable").source,
            source::DEFAULT_CONFIG
        );
        assert_eq!(get("log.retention.ms").value.as_deref(), Some("604800000"));
        assert_eq!(get("message.max.bytes").value.as_deref(), Some("1048588"));
        assert_eq!(get("broker.id").value.as_deref(), Some("1"));
        assert_eq!(
            get("transaction.max.timeout.ms").value.as_deref(),
            Some("900000")
        );
        assert_eq!(
            get("transaction.state.log.num.partitions").source,
            source::DEFAULT_CONFIG
        );
        assert_eq!(
            get("log.cleaner.backoff.ms").value.as_deref(),
            Some("15000")
        );
        assert_eq!(get("log.cleaner.backoff.ms").source, source::DEFAULT_CONFIG);
        assert_eq!(get("log.cleaner.enable").value.as_deref(), Some("true"));
        assert_eq!(
            get("log.cleaner.threads").value.as_deref(),
            Some(c.shards.to_string().as_str())
        );
        assert_eq!(
            get("log.cleaner.io.max.bytes.per.second").value.as_deref(),
            Some("1.7976931348623157E308")
        );
        // 32 MiB per shard, rounded down to whole 24-byte slots.
        assert_eq!(
            get("log.cleaner.dedupe.buffer.size").value.as_deref(),
            Some((33_554_424 * u64::from(c.shards)).to_string().as_str())
        );
        assert_eq!(
            get("log.cleaner.min.cleanable.ratio").value.as_deref(),
            Some("0.5")
        );
        assert!(entries.iter().all(|e| e.read_only));
        let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let len = names.len();
        names.dedup();
        assert_eq!(names.len(), len, "duplicate broker config names");
    }

    #[test]
    fn cleaner_settings_given_at_start_are_static() {
        let c = config(ConfigLayer {
            log_cleaner_backoff_ms: Some(1234),
            log_cleaner_io_max_bytes_per_second: Some(1 << 20),
            log_cleaner_dedupe_buffer_size: Some(3 << 20),
            shards: Some(3),
            ..ConfigLayer::default()
        });
        let entries = describe_broker_configs(&c);
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get("log.cleaner.backoff.ms").value.as_deref(), Some("1234"));
        assert_eq!(
            get("log.cleaner.backoff.ms").source,
            source::STATIC_BROKER_CONFIG
        );
        assert_eq!(
            get("log.cleaner.io.max.bytes.per.second").value.as_deref(),
            Some("1048576")
        );
        assert_eq!(get("log.cleaner.threads").value.as_deref(), Some("3"));
        assert_eq!(
            get("log.cleaner.dedupe.buffer.size").value.as_deref(),
            Some((3 * (1_048_576 / 24) * 24).to_string().as_str())
        );
        assert_eq!(
            get("log.cleaner.dedupe.buffer.size").source,
            source::STATIC_BROKER_CONFIG
        );
    }

    #[test]
    fn broker_resource_names_are_this_broker_or_empty() {
        let c = config(ConfigLayer::default());
        assert_eq!(check_broker_resource(&c, "1"), Ok(true));
        assert_eq!(check_broker_resource(&c, ""), Ok(false));
        assert!(check_broker_resource(&c, "2").is_err());
        assert!(check_broker_resource(&c, "one").is_err());
    }
}
