//! Broker configuration: embedded defaults, an optional TOML file, then command-line flags.
//!
//! Every setting has a default that makes `sluice start` work on a fresh machine with no file:
//! data in `./data`, the Kafka listener on `127.0.0.1:9092`, the admin HTTP listener on
//! `127.0.0.1:9644` (`admin-listen = "off"` turns it off), one shard per core. A TOML file
//! (`--config`) uses the flag names as keys (`data-dir = "/var/lib/sluice"`), and flags win over
//! the file. The resolved config is plain data, built once on the main thread and cloned to
//! every shard.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default `socket.request.max.bytes` (Kafka's default, 100 MiB).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;
/// Default `connections.max.idle.ms` (Kafka's default, 10 minutes).
pub const CONNECTIONS_MAX_IDLE_MS_DEFAULT: u64 = 10 * 60 * 1000;
/// Default limit on open client connections per broker.
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;
/// Default `log.cleaner.backoff.ms` (Kafka's default, 15 seconds): the pause between rounds
/// of a shard's log cleaner.
pub const LOG_CLEANER_BACKOFF_MS_DEFAULT: u64 = 15_000;
/// The smallest key map a shard's cleaner may get from `log.cleaner.dedupe.buffer.size`
/// (about 43,000 keys per pass).
pub const LOG_CLEANER_KEY_MAP_BYTES_MIN: u64 = 1024 * 1024;
/// Default `log.retention.check.interval.ms` (Kafka's default, 5 minutes).
pub const LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// Default `offsets.topic.num.partitions` (Kafka's default).
pub const OFFSETS_TOPIC_NUM_PARTITIONS_DEFAULT: i32 = 50;
/// Default `group.initial.rebalance.delay.ms` (Kafka's default).
pub const GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT: u64 = 3000;
/// Default `group.min.session.timeout.ms` (Kafka's default).
pub const GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT: i32 = 6000;
/// Default `group.max.session.timeout.ms` (Kafka's default, 30 minutes).
pub const GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT: i32 = 30 * 60 * 1000;
/// Default `offsets.retention.minutes` (Kafka's default, 7 days).
pub const OFFSETS_RETENTION_MINUTES_DEFAULT: u64 = 7 * 24 * 60;
/// Default `offsets.retention.check.interval.ms` (Kafka's default, 10 minutes).
pub const OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 10 * 60 * 1000;
/// Default of `--io-workers-per-shard`: enough file writes and fdatasyncs in flight per shard
/// for thousands of partitions (10,000 partitions at acks=1: 160,000-178,000 records/s with
/// the kernel's default of 2, 277,000-374,000 with 64).
pub const IO_WORKERS_PER_SHARD_DEFAULT: u32 = 64;
/// Default `transaction.state.log.num.partitions` (Kafka's default).
pub const TRANSACTION_STATE_LOG_NUM_PARTITIONS_DEFAULT: i32 = 50;
/// Default `transaction.state.log.segment.bytes` (Kafka's default, 100 MiB): segments of
/// `__transaction_state` are small so the cleaner, which never touches the active segment,
/// keeps the log short.
pub const TRANSACTION_STATE_LOG_SEGMENT_BYTES_DEFAULT: u64 = 100 * 1024 * 1024;
/// Default `transaction.max.timeout.ms` (Kafka's default, 15 minutes).
pub const TRANSACTION_MAX_TIMEOUT_MS_DEFAULT: i32 = 15 * 60 * 1000;
/// Default `transaction.abort.timed.out.transaction.cleanup.interval.ms` (Kafka's default).
pub const TRANSACTION_ABORT_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Default `transactional.id.expiration.ms` (Kafka's default, 7 days).
pub const TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// Default `transaction.partition.verification.enable` (Kafka's default since 3.6).
pub const TRANSACTION_PARTITION_VERIFICATION_ENABLE_DEFAULT: bool = true;
/// Default `transaction.remove.expired.transaction.cleanup.interval.ms` (Kafka's default, 1 hour).
pub const TRANSACTION_REMOVE_EXPIRED_INTERVAL_MS_DEFAULT: u64 = 60 * 60 * 1000;
/// Default address of the admin HTTP listener (metrics, status).
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9644";
/// The `admin-listen` value that turns the admin listener off.
pub const ADMIN_LISTEN_OFF: &str = "off";
/// Requests of one connection that may be in flight (decoded, not yet answered) at once.
pub const CONNECTION_IN_FLIGHT_MAX: usize = 32;

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The settings a TOML file may give; every one optional. Flags have the same shape.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigLayer {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub advertised: Option<String>,
    pub shards: Option<u32>,
    pub node_id: Option<i32>,
    pub log_level: Option<String>,
    pub dev: Option<bool>,
    pub socket_request_max_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub connections_max_idle_ms: Option<u64>,
    pub auto_create_topics_enable: Option<bool>,
    pub num_partitions: Option<i32>,
    pub log_retention_check_interval_ms: Option<u64>,
    pub batch_cache_bytes: Option<u64>,
    pub io_workers_per_shard: Option<u32>,
    pub log_cleaner_backoff_ms: Option<u64>,
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    pub log_cleaner_pace_seconds: Option<u64>,
    pub log_cleaner_dedupe_buffer_size: Option<u64>,
    pub offsets_topic_num_partitions: Option<i32>,
    pub group_initial_rebalance_delay_ms: Option<u64>,
    pub group_min_session_timeout_ms: Option<i32>,
    pub group_max_session_timeout_ms: Option<i32>,
    pub group_max_size: Option<i32>,
    pub offsets_retention_minutes: Option<u64>,
    pub offsets_retention_check_interval_ms: Option<u64>,
    pub transaction_state_log_num_partitions: Option<i32>,
    pub transaction_state_log_segment_bytes: Option<u64>,
    pub transaction_max_timeout_ms: Option<i32>,
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<u64>,
    pub transactional_id_expiration_ms: Option<u64>,
    pub transaction_remove_expired_transaction_cleanup_interval_ms: Option<u64>,
    pub transaction_partition_verification_enable: Option<bool>,
}

impl ConfigLayer {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// `self` with every setting that `over` gives replaced by `over`'s.
    pub fn overridden_by(self, over: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            data_dir: over.data_dir.or(self.data_dir),
            listen: over.listen.or(self.listen),
            admin_listen: over.admin_listen.or(self.admin_listen),
            advertised: over.advertised.or(self.advertised),
            shards: over.shards.or(self.shards),
            node_id: over.node_id.or(self.node_id),
            log_level: over.log_level.or(self.log_level),
            dev: over.dev.or(self.dev),
            socket_request_max_bytes: over
                .socket_request_max_bytes
                .or(self.socket_request_max_bytes),
            max_connections: over.max_connections.or(self.max_connections),
            connections_max_idle_ms: over
                .connections_max_idle_ms
                .or(self.connections_max_idle_ms),
            auto_create_topics_enable: over
                .auto_create_topics_enable
                .or(self.auto_create_topics_enable),
            num_partitions: over.num_partitions.or(self.num_partitions),
            log_retention_check_interval_ms: over
                .log_retention_check_interval_ms
                .or(self.log_retention_check_interval_ms),
            batch_cache_bytes: over.batch_cache_bytes.or(self.batch_cache_bytes),
            io_workers_per_shard: over.io_workers_per_shard.or(self.io_workers_per_shard),
            log_cleaner_backoff_ms: over.log_cleaner_backoff_ms.or(self.log_cleaner_backoff_ms),
            log_cleaner_io_max_bytes_per_second: over
                .log_cleaner_io_max_bytes_per_second
                .or(self.log_cleaner_io_max_bytes_per_second),
            log_cleaner_pace_seconds: over
                .log_cleaner_pace_seconds
                .or(self.log_cleaner_pace_seconds),
            log_cleaner_dedupe_buffer_size: over
                .log_cleaner_dedupe_buffer_size
                .or(self.log_cleaner_dedupe_buffer_size),
            offsets_topic_num_partitions: over
                .offsets_topic_num_partitions
                .or(self.offsets_topic_num_partitions),
            group_initial_rebalance_delay_ms: over
                .group_initial_rebalance_delay_ms
                .or(self.group_initial_rebalance_delay_ms),
            group_min_session_timeout_ms: over
                .group_min_session_timeout_ms
                .or(self.group_min_session_timeout_ms),
            group_max_session_timeout_ms: over
                .group_max_session_timeout_ms
                .or(self.group_max_session_timeout_ms),
            group_max_size: over.group_max_size.or(self.group_max_size),
            offsets_retention_minutes: over
                .offsets_retention_minutes
                .or(self.offsets_retention_minutes),
            offsets_retention_check_interval_ms: over
                .offsets_retention_check_interval_ms
                .or(self.offsets_retention_check_interval_ms),
            transaction_state_log_num_partitions: over
                .transaction_state_log_num_partitions
                .or(self.transaction_state_log_num_partitions),
            transaction_state_log_segment_bytes: over
                .transaction_state_log_segment_bytes
                .or(self.transaction_state_log_segment_bytes),
            transaction_max_timeout_ms: over
                .transaction_max_timeout_ms
                .or(self.transaction_max_timeout_ms),
            transaction_abort_timed_out_transaction_cleanup_interval_ms: over
                .transaction_abort_timed_out_transaction_cleanup_interval_ms
                .or(self.transaction_abort_timed_out_transaction_cleanup_interval_ms),
            transactional_id_expiration_ms: over
                .transactional_id_expiration_ms
                .or(self.transactional_id_expiration_ms),
            transaction_remove_expired_transaction_cleanup_interval_ms: over
                .transaction_remove_expired_transaction_cleanup_interval_ms
                .or(self.transaction_remove_expired_transaction_cleanup_interval_ms),
            transaction_partition_verification_enable: over
                .transaction_partition_verification_enable
                .or(self.transaction_partition_verification_enable),
        }
    }
}

/// The resolved broker configuration.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The admin HTTP listener (`/metrics`, `/v1/status/*`); `None` when turned off.
    pub admin_listen: Option<SocketAddr>,
    /// Host and port that Metadata responses tell clients to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    pub shards: u32,
    pub node_id: i32,
    pub log_level: String,
    /// Allows a data directory without O_DIRECT support (tmpfs, some containers).
    pub dev: bool,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    pub connections_max_idle_ms: u64,
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    /// How often each shard deletes segments past `retention.ms` / `retention.bytes`.
    pub log_retention_check_interval_ms: u64,
    /// Bytes of recently written batches each shard keeps in memory for tailing consumers
    /// (O_DIRECT bypasses the page cache, so this is the broker's read cache).
    pub batch_cache_bytes_per_shard: usize,
    /// Kernel workers that may run one shard's blocking file I/O at once (io_uring's bounded
    /// io-wq workers; 0 keeps the kernel's default). Every O_DIRECT write that extends a
    /// segment file on ext4, and every fdatasync, runs on one: with the kernel's default (two
    /// for a shard pinned to one core here) writes to many partitions wait for each other.
    pub io_workers_per_shard: u32,
    /// The pause between rounds of each shard's log cleaner (compaction).
    pub log_cleaner_backoff_ms: u64,
    /// The most bytes per second each shard's cleaner reads and writes together (`None`: no
    /// limit, Kafka's default), so that cleaning does not crowd produce writes off the device.
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// How long each shard's cleaner spreads a round's I/O over, so that it cleans as fast as
    /// its backlog needs rather than as fast as the device allows (`None`: unpaced, Kafka's
    /// behaviour). See `sluice_engine::cleaner::CleanerOptions::backlog_pace`.
    pub log_cleaner_pace: Option<Duration>,
    /// Memory of each shard's cleaner key map (Kafka's `log.cleaner.dedupe.buffer.size` is the
    /// total over all cleaner threads; it is split evenly over the shards).
    pub log_cleaner_key_map_bytes_per_shard: usize,
    /// Partitions of `__consumer_offsets` when the broker creates it (an existing topic keeps
    /// its count: groups are mapped by the count the topic has).
    pub offsets_topic_num_partitions: i32,
    /// How long a new (Empty) group waits for more members before its first rebalance.
    pub group_initial_rebalance_delay_ms: u64,
    /// Bounds on the session timeout a member may ask for (INVALID_SESSION_TIMEOUT outside).
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Most members one group may have (GROUP_MAX_SIZE_REACHED beyond).
    pub group_max_size: i32,
    /// How long committed offsets of a group without members are kept.
    pub offsets_retention_minutes: u64,
    /// How often each coordinator shard looks for expired offsets.
    pub offsets_retention_check_interval_ms: u64,
    /// Partitions of `__transaction_state` when the broker creates it (an existing topic keeps
    /// its count: transactional ids are mapped by the count the topic has).
    pub transaction_state_log_num_partitions: i32,
    /// `segment.bytes` of `__transaction_state` when the broker creates it (an existing topic
    /// keeps its config).
    pub transaction_state_log_segment_bytes: u64,
    /// Longest transaction timeout a producer may ask for (INVALID_TRANSACTION_TIMEOUT above).
    pub transaction_max_timeout_ms: i32,
    /// How often each coordinator shard aborts transactions open past their timeout.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// How long a transactional id without transactions is kept.
    pub transactional_id_expiration_ms: u64,
    /// How often each coordinator shard removes expired transactional ids.
    pub transaction_remove_expired_transaction_cleanup_interval_ms: u64,
    /// Whether Produce asks the transaction coordinator that a transactional batch's partition
    /// is in the producer's ongoing transaction before appending it (KIP-890 part 1).
    pub transaction_partition_verification_enable: bool,
}

impl BrokerConfig {
    /// Resolves a layer (file overridden by flags) against the embedded defaults.
    pub fn resolve(layer: ConfigLayer) -> Result<BrokerConfig, ConfigError> {
        let listen_text = layer.listen.unwrap_or_else(|| "127.0.0.1:9092".into());
        let listen = resolve_addr("listen", &listen_text)?;
        let admin_listen = match layer.admin_listen.as_deref() {
            Some(ADMIN_LISTEN_OFF) => None,
            Some(text) => Some(resolve_addr("admin-listen", text)?),
            None => Some(resolve_addr("admin-listen", ADMIN_LISTEN_DEFAULT)?),
        };
        let (advertised_host, advertised_port) = match layer.advertised {
            Some(text) => split_host_port("advertised", &text)?,
            None if listen.ip().is_unspecified() => (local_hostname(), listen.port()),
            None => (listen.ip().to_string(), listen.port()),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let shards = layer.shards.unwrap_or(cores);
        if shards == 0 || shards > sluice_engine::shard::SHARDS_MAX {
            return Err(ConfigError::Invalid {
                key: "shards",
                message: format!(
                    "{shards} is outside 1..={}",
                    sluice_engine::shard::SHARDS_MAX
                ),
            });
        }
        let num_partitions = layer.num_partitions.unwrap_or(1);
        if num_partitions < 1 {
            return Err(ConfigError::Invalid {
                key: "num-partitions",
                message: format!("{num_partitions} must be at least 1"),
            });
        }
        let socket_request_max_bytes = layer
            .socket_request_max_bytes
            .unwrap_or(SOCKET_REQUEST_MAX_BYTES_DEFAULT);
        if socket_request_max_bytes < 1024 || socket_request_max_bytes > i32::MAX as usize {
            return Err(ConfigError::Invalid {
                key: "socket-request-max-bytes",
                message: format!("{socket_request_max_bytes} is outside 1024..=2147483647"),
            });
        }
        let batch_cache_bytes_per_shard = match layer.batch_cache_bytes {
            Some(total) => usize::try_from(total / u64::from(shards)).unwrap_or(usize::MAX),
            None => default_batch_cache_bytes_per_shard(shards),
        };
        let log_cleaner_key_map_bytes_per_shard = match layer.log_cleaner_dedupe_buffer_size {
            None => sluice_engine::cleaner::KEY_MAP_BYTES_DEFAULT,
            Some(total) => {
                let share = total / u64::from(shards);
                if !(LOG_CLEANER_KEY_MAP_BYTES_MIN..=i32::MAX as u64).contains(&share) {
                    return Err(ConfigError::Invalid {
                        key: "log-cleaner-dedupe-buffer-size",
                        message: format!(
                            "{total} over {shards} shards is {share} bytes per shard's cleaner, \
                             outside {LOG_CLEANER_KEY_MAP_BYTES_MIN}..={}",
                            i32::MAX
                        ),
                    });
                }
                share as usize
            }
        };
        let offsets_topic_num_partitions = layer
            .offsets_topic_num_partitions
            .unwrap_or(OFFSETS_TOPIC_NUM_PARTITIONS_DEFAULT);
        if let Err(e) = crate::topics::check_partition_count(offsets_topic_num_partitions) {
            return Err(ConfigError::Invalid {
                key: "offsets-topic-num-partitions",
                message: e.to_string(),
            });
        }
        let group_min_session_timeout_ms = layer
            .group_min_session_timeout_ms
            .unwrap_or(GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT);
        let group_max_session_timeout_ms = layer
            .group_max_session_timeout_ms
            .unwrap_or(GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT);
        if group_min_session_timeout_ms < 1
            || group_max_session_timeout_ms < group_min_session_timeout_ms
        {
            return Err(ConfigError::Invalid {
                key: "group-min-session-timeout-ms",
                message: format!(
                    "{group_min_session_timeout_ms} must be at least 1 and at most \
                     group-max-session-timeout-ms ({group_max_session_timeout_ms})"
                ),
            });
        }
        let group_max_size = layer.group_max_size.unwrap_or(i32::MAX);
        if group_max_size < 1 {
            return Err(ConfigError::Invalid {
                key: "group-max-size",
                message: format!("{group_max_size} must be at least 1"),
            });
        }
        let offsets_retention_minutes = layer
            .offsets_retention_minutes
            .unwrap_or(OFFSETS_RETENTION_MINUTES_DEFAULT);
        if offsets_retention_minutes < 1 {
            return Err(ConfigError::Invalid {
                key: "offsets-retention-minutes",
                message: format!("{offsets_retention_minutes} must be at least 1"),
            });
        }
        let transaction_state_log_num_partitions = layer
            .transaction_state_log_num_partitions
            .unwrap_or(TRANSACTION_STATE_LOG_NUM_PARTITIONS_DEFAULT);
        if let Err(e) = crate::topics::check_partition_count(transaction_state_log_num_partitions) {
            return Err(ConfigError::Invalid {
                key: "transaction-state-log-num-partitions",
                message: e.to_string(),
            });
        }
        let transaction_state_log_segment_bytes = layer
            .transaction_state_log_segment_bytes
            .unwrap_or(TRANSACTION_STATE_LOG_SEGMENT_BYTES_DEFAULT);
        // The topic's segment.bytes, so it takes the same bounds.
        let segment_bytes = transaction_state_log_segment_bytes.to_string();
        if let Err(e) = sluice_engine::config::LogConfig::from_pairs([(
            "segment.bytes",
            segment_bytes.as_str(),
        )]) {
            return Err(ConfigError::Invalid {
                key: "transaction-state-log-segment-bytes",
                message: e.to_string(),
            });
        }
        let transaction_max_timeout_ms = layer
            .transaction_max_timeout_ms
            .unwrap_or(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        if transaction_max_timeout_ms < 1 {
            return Err(ConfigError::Invalid {
                key: "transaction-max-timeout-ms",
                message: format!("{transaction_max_timeout_ms} must be at least 1"),
            });
        }
        let transactional_id_expiration_ms = layer
            .transactional_id_expiration_ms
            .unwrap_or(TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT);
        if transactional_id_expiration_ms < 1 || transactional_id_expiration_ms > i64::MAX as u64 {
            return Err(ConfigError::Invalid {
                key: "transactional-id-expiration-ms",
                message: format!("{transactional_id_expiration_ms} must be at least 1"),
            });
        }
        Ok(BrokerConfig {
            data_dir: layer.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            listen,
            admin_listen,
            advertised_host,
            advertised_port,
            shards,
            node_id: layer.node_id.unwrap_or(1),
            log_level: layer.log_level.unwrap_or_else(|| "info".into()),
            dev: layer.dev.unwrap_or(false),
            socket_request_max_bytes,
            max_connections: layer.max_connections.unwrap_or(MAX_CONNECTIONS_DEFAULT),
            connections_max_idle_ms: layer
                .connections_max_idle_ms
                .unwrap_or(CONNECTIONS_MAX_IDLE_MS_DEFAULT),
            auto_create_topics_enable: layer.auto_create_topics_enable.unwrap_or(true),
            num_partitions,
            log_retention_check_interval_ms: layer
                .log_retention_check_interval_ms
                .unwrap_or(LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT)
                .max(1),
            batch_cache_bytes_per_shard,
            io_workers_per_shard: layer
                .io_workers_per_shard
                .unwrap_or(IO_WORKERS_PER_SHARD_DEFAULT),
            log_cleaner_backoff_ms: layer
                .log_cleaner_backoff_ms
                .unwrap_or(LOG_CLEANER_BACKOFF_MS_DEFAULT)
                .max(1),
            log_cleaner_io_max_bytes_per_second: layer
                .log_cleaner_io_max_bytes_per_second
                .filter(|b| *b > 0),
            log_cleaner_pace: match layer.log_cleaner_pace_seconds {
                None => Some(sluice_engine::cleaner::BACKLOG_PACE_DEFAULT),
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
            },
            log_cleaner_key_map_bytes_per_shard,
            offsets_topic_num_partitions,
            group_initial_rebalance_delay_ms: layer
                .group_initial_rebalance_delay_ms
                .unwrap_or(GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT),
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_max_size,
            offsets_retention_minutes,
            offsets_retention_check_interval_ms: layer
                .offsets_retention_check_interval_ms
                .unwrap_or(OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT)
                .max(1),
            transaction_state_log_num_partitions,
            transaction_state_log_segment_bytes,
            transaction_max_timeout_ms,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: layer
                .transaction_abort_timed_out_transaction_cleanup_interval_ms
                .unwrap_or(TRANSACTION_ABORT_INTERVAL_MS_DEFAULT)
                .max(1),
            transactional_id_expiration_ms,
            transaction_remove_expired_transaction_cleanup_interval_ms: layer
                .transaction_remove_expired_transaction_cleanup_interval_ms
                .unwrap_or(TRANSACTION_REMOVE_EXPIRED_INTERVAL_MS_DEFAULT)
                .max(1),
            transaction_partition_verification_enable: layer
                .transaction_partition_verification_enable
                .unwrap_or(TRANSACTION_PARTITION_VERIFICATION_ENABLE_DEFAULT),
        })
    }
}

fn resolve_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { key, message };
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| invalid(format!("{text:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(format!("{text:?} resolves to no address")))
}

fn split_host_port(key: &'static str, text: &str) -> Result<(String, u16), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { key, message };
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| invalid(format!("{text:?} is not HOST:PORT")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(format!("{text:?} has no valid port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(format!("{text:?} has no host")));
    }
    Ok((host.to_string(), port))
}

/// The default batch cache of one shard: a sixteenth of physical memory for the whole broker,
/// and never less than the engine's 64 MiB per shard. Kafka leaves all free memory to the page
/// cache; with O_DIRECT the broker keeps its own, and a cache far smaller than the data written
/// in a second at disk speed would send a consumer that lags by a moment to the disk.
fn default_batch_cache_bytes_per_shard(shards: u32) -> usize {
    let floor = sluice_engine::limits::BATCH_CACHE_BYTES_DEFAULT;
    let physical = physical_memory_bytes().unwrap_or(0);
    usize::try_from(physical / 16 / u64::from(shards.max(1)))
        .unwrap_or(usize::MAX)
        .max(floor)
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn physical_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_with_nothing_given() {
        let c = BrokerConfig::resolve(ConfigLayer::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert!(c.shards >= 1);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.socket_request_max_bytes, 100 * 1024 * 1024);
        assert!(c.batch_cache_bytes_per_shard >= sluice_engine::limits::BATCH_CACHE_BYTES_DEFAULT);
        assert_eq!(c.io_workers_per_shard, IO_WORKERS_PER_SHARD_DEFAULT);
        assert_eq!(c.admin_listen, Some("127.0.0.1:9644".parse().unwrap()));
    }

    #[test]
    fn the_admin_listener_can_move_or_be_turned_off() {
        let file: ConfigLayer = toml::from_str("admin-listen = \"127.0.0.1:0\"").unwrap();
        let c = BrokerConfig::resolve(file.clone()).unwrap();
        assert_eq!(c.admin_listen, Some("127.0.0.1:0".parse().unwrap()));
        let flags = ConfigLayer {
            admin_listen: Some("off".into()),
            ..ConfigLayer::default()
        };
        let c = BrokerConfig::resolve(file.overridden_by(flags)).unwrap();
        assert_eq!(c.admin_listen, None);
        let bad = ConfigLayer {
            admin_listen: Some("nowhere".into()),
            ..ConfigLayer::default()
        };
        assert!(matches!(
            BrokerConfig::resolve(bad),
            Err(ConfigError::Invalid {
                key: "admin-listen",
                ..
            })
        ));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: ConfigLayer =
            toml::from_str("data-dir = \"/srv/a\"\nlisten = \"127.0.0.1:1000\"\nshards = 3")
                .unwrap();
        let flags = ConfigLayer {
            listen: Some("127.0.0.1:2000".into()),
            ..ConfigLayer::default()
        };
        let c = BrokerConfig::resolve(file.overridden_by(flags)).unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.data_dir, PathBuf::from("/srv/a"));
        assert_eq!(c.shards, 3);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ConfigLayer>("data_directory = \"x\"").is_err());
        let bad = ConfigLayer {
            shards: Some(0),
            ..ConfigLayer::default()
        };
        assert!(matches!(
            BrokerConfig::resolve(bad),
            Err(ConfigError::Invalid { key: "shards", .. })
        ));
        let bad = ConfigLayer {
            advertised: Some("nohostport".into()),
            ..ConfigLayer::default()
        };
        assert!(BrokerConfig::resolve(bad).is_err());
    }

    #[test]
    fn the_cleaner_key_map_memory_is_split_over_the_shards() {
        let c = BrokerConfig::resolve(ConfigLayer {
            shards: Some(2),
            ..ConfigLayer::default()
        })
        .unwrap();
        assert_eq!(
            c.log_cleaner_key_map_bytes_per_shard,
            sluice_engine::cleaner::KEY_MAP_BYTES_DEFAULT
        );
        let file: ConfigLayer =
            toml::from_str("shards = 2\nlog-cleaner-dedupe-buffer-size = 134217728").unwrap();
        let c = BrokerConfig::resolve(file).unwrap();
        assert_eq!(c.log_cleaner_key_map_bytes_per_shard, 64 << 20);
        for total in [(1 << 20) - 1, 1 << 40] {
            let bad = ConfigLayer {
                log_cleaner_dedupe_buffer_size: Some(total),
                shards: Some(1),
                ..ConfigLayer::default()
            };
            assert!(matches!(
                BrokerConfig::resolve(bad),
                Err(ConfigError::Invalid {
                    key: "log-cleaner-dedupe-buffer-size",
                    ..
                })
            ));
        }
    }

    #[test]
    fn transaction_settings_default_to_kafkas_and_bad_values_are_refused() {
        let c = BrokerConfig::resolve(ConfigLayer::default()).unwrap();
        assert_eq!(c.transaction_state_log_num_partitions, 50);
        assert_eq!(c.transaction_max_timeout_ms, 900_000);
        assert_eq!(
            c.transaction_abort_timed_out_transaction_cleanup_interval_ms,
            10_000
        );
        assert_eq!(c.transactional_id_expiration_ms, 604_800_000);
        assert!(c.transaction_partition_verification_enable);
        let file: ConfigLayer = toml::from_str(
            "transaction-abort-timed-out-transaction-cleanup-interval-ms = 500\n\
             transaction-max-timeout-ms = 60000",
        )
        .unwrap();
        let c = BrokerConfig::resolve(file).unwrap();
        assert_eq!(
            c.transaction_abort_timed_out_transaction_cleanup_interval_ms,
            500
        );
        assert_eq!(c.transaction_max_timeout_ms, 60_000);
        for bad in [
            ConfigLayer {
                transaction_state_log_num_partitions: Some(0),
                ..ConfigLayer::default()
            },
            ConfigLayer {
                transaction_max_timeout_ms: Some(0),
                ..ConfigLayer::default()
            },
            ConfigLayer {
                transactional_id_expiration_ms: Some(0),
                ..ConfigLayer::default()
            },
        ] {
            assert!(matches!(
                BrokerConfig::resolve(bad),
                Err(ConfigError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn advertised_defaults_to_the_hostname_on_a_wildcard_listener() {
        let layer = ConfigLayer {
            listen: Some("0.0.0.0:9093".into()),
            ..ConfigLayer::default()
        };
        let c = BrokerConfig::resolve(layer).unwrap();
        assert_eq!(c.advertised_port, 9093);
        assert_ne!(c.advertised_host, "0.0.0.0");
    }
}
