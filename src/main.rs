//! The `sluice` binary: command-line interface and wiring of the engine and the server.
//!
//! `sluice start` runs the broker in the foreground. Settings come from embedded defaults, then
//! an optional TOML file (`--config`), then flags, which win. The process refuses to start on a
//! data directory another process holds, or on a file system without O_DIRECT unless `--dev`.
//! SIGTERM and SIGINT stop it cleanly: stop accepting, finish in-flight requests, flush, close.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sluice_net::config::{BrokerConfig, ConfigLayer};
use sluice_net::server::ListenerShared;

mod cli_common;
mod cli_consume;
mod cli_group;
mod cli_produce;
mod cli_topic;
mod cli_txn;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible, thread-per-core message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker in the foreground. Boxed: its many settings would make every variant
    /// as large.
    Start(Box<StartArgs>),
    /// Manage topics on a running broker.
    Topic(cli_topic::TopicArgs),
    /// Write lines from stdin as records to a topic.
    Produce(cli_produce::ProduceArgs),
    /// Print records of a topic as lines on stdout.
    Consume(cli_consume::ConsumeArgs),
    /// Inspect and manage consumer groups on a running broker.
    Group(cli_group::GroupArgs),
    /// Inspect transactions and producers on a running broker.
    Txn(cli_txn::TxnArgs),
}

#[derive(Args, Debug)]
struct StartArgs {
    /// TOML file with settings (keys are the flag names); flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the logs and metadata [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka listener address [default: 127.0.0.1:9092].
    #[arg(long)]
    listen: Option<String>,
    /// Admin HTTP listener for /metrics and /v1/status/*, HOST:PORT or `off`
    /// [default: 127.0.0.1:9644].
    #[arg(long)]
    admin_listen: Option<String>,
    /// HOST:PORT that clients are told to connect to [default: the listen address].
    #[arg(long)]
    advertised: Option<String>,
    /// Number of shards (cores) [default: all online cores].
    #[arg(long)]
    shards: Option<u32>,
    /// This broker's node id [default: 1].
    #[arg(long)]
    node_id: Option<i32>,
    /// Log filter, e.g. info, debug, sluice_net=debug [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// Allow a data directory without O_DIRECT support (development only).
    #[arg(long)]
    dev: bool,
    /// How often expired segments are deleted, in ms [default: 300000].
    #[arg(long)]
    log_retention_check_interval_ms: Option<u64>,
    /// Memory for recently written batches, which tailing consumers read without touching the
    /// disk, in bytes for the whole broker (split evenly over the shards)
    /// [default: 1/16 of physical memory, at least 64 MiB per shard].
    #[arg(long)]
    batch_cache_bytes: Option<u64>,
    /// Kernel workers that may run one shard's blocking file I/O (file-extending O_DIRECT
    /// writes, fdatasync) at once; 0 keeps the kernel's default [default: 64].
    #[arg(long)]
    io_workers_per_shard: Option<u32>,
    /// Pause between log cleaner (compaction) rounds of each shard, in ms [default: 15000].
    #[arg(long)]
    log_cleaner_backoff_ms: Option<u64>,
    /// Most bytes per second each shard's log cleaner reads and writes together [default: no
    /// limit].
    #[arg(long)]
    log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// Seconds each shard's log cleaner spreads a round's I/O over: it cleans as fast as its
    /// backlog needs (at least 8 MiB/s), not as fast as the disk allows, so produce writes keep
    /// their latency; 0 cleans at full speed, as Kafka does [default: 60].
    #[arg(long)]
    log_cleaner_pace_seconds: Option<u64>,
    /// Memory of the log cleaners' key maps, in bytes for the whole broker (split evenly over
    /// the shards, at least 1 MiB each) [default: 32 MiB per shard].
    #[arg(long)]
    log_cleaner_dedupe_buffer_size: Option<u64>,
    /// Partitions of __consumer_offsets when the broker creates it [default: 50].
    #[arg(long)]
    offsets_topic_num_partitions: Option<i32>,
    /// How long a new group waits for more members before its first rebalance, in ms
    /// [default: 3000].
    #[arg(long)]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// Smallest session timeout a consumer may ask for, in ms [default: 6000].
    #[arg(long)]
    group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout a consumer may ask for, in ms [default: 1800000].
    #[arg(long)]
    group_max_session_timeout_ms: Option<i32>,
    /// Most members one consumer group may have [default: unlimited].
    #[arg(long)]
    group_max_size: Option<i32>,
    /// How long offsets of a group without members are kept, in minutes [default: 10080].
    #[arg(long)]
    offsets_retention_minutes: Option<u64>,
    /// How often expired offsets are deleted, in ms [default: 600000].
    #[arg(long)]
    offsets_retention_check_interval_ms: Option<u64>,
    /// Partitions of __transaction_state when the broker creates it [default: 50].
    #[arg(long)]
    transaction_state_log_num_partitions: Option<i32>,
    /// Segment size of __transaction_state when the broker creates it, in bytes [default:
    /// 104857600].
    #[arg(long)]
    transaction_state_log_segment_bytes: Option<u64>,
    /// Longest transaction timeout a producer may ask for, in ms [default: 900000].
    #[arg(long)]
    transaction_max_timeout_ms: Option<i32>,
    /// How often transactions open past their timeout are aborted, in ms [default: 10000].
    #[arg(long)]
    transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<u64>,
    /// How long a transactional id without transactions is kept, in ms [default: 604800000].
    #[arg(long)]
    transactional_id_expiration_ms: Option<u64>,
    /// How often expired transactional ids are removed, in ms [default: 3600000].
    #[arg(long)]
    transaction_remove_expired_transaction_cleanup_interval_ms: Option<u64>,
    /// Whether a transactional batch's partition must be in the producer's ongoing
    /// transaction (checked with the coordinator before the append) [default: true].
    #[arg(long)]
    transaction_partition_verification_enable: Option<bool>,
}

impl StartArgs {
    fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            admin_listen: self.admin_listen.clone(),
            advertised: self.advertised.clone(),
            shards: self.shards,
            node_id: self.node_id,
            log_level: self.log_level.clone(),
            dev: self.dev.then_some(true),
            log_retention_check_interval_ms: self.log_retention_check_interval_ms,
            batch_cache_bytes: self.batch_cache_bytes,
            io_workers_per_shard: self.io_workers_per_shard,
            log_cleaner_backoff_ms: self.log_cleaner_backoff_ms,
            log_cleaner_io_max_bytes_per_second: self.log_cleaner_io_max_bytes_per_second,
            log_cleaner_pace_seconds: self.log_cleaner_pace_seconds,
            log_cleaner_dedupe_buffer_size: self.log_cleaner_dedupe_buffer_size,
            offsets_topic_num_partitions: self.offsets_topic_num_partitions,
            group_initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms: self.group_min_session_timeout_ms,
            group_max_session_timeout_ms: self.group_max_session_timeout_ms,
            group_max_size: self.group_max_size,
            offsets_retention_minutes: self.offsets_retention_minutes,
            offsets_retention_check_interval_ms: self.offsets_retention_check_interval_ms,
            transaction_state_log_num_partitions: self.transaction_state_log_num_partitions,
            transaction_state_log_segment_bytes: self.transaction_state_log_segment_bytes,
            transaction_max_timeout_ms: self.transaction_max_timeout_ms,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: self
                .transaction_abort_timed_out_transaction_cleanup_interval_ms,
            transactional_id_expiration_ms: self.transactional_id_expiration_ms,
            transaction_remove_expired_transaction_cleanup_interval_ms: self
                .transaction_remove_expired_transaction_cleanup_interval_ms,
            transaction_partition_verification_enable: self
                .transaction_partition_verification_enable,
            ..ConfigLayer::default()
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Start(args) => start(*args),
        Command::Topic(args) => cli_common::finish(cli_topic::run(args)),
        Command::Produce(args) => cli_common::finish(cli_produce::run(args)),
        Command::Consume(args) => cli_common::finish(cli_consume::run(args)),
        Command::Group(args) => cli_common::finish(cli_group::run(args)),
        Command::Txn(args) => cli_common::finish(cli_txn::run(args)),
    }
}

fn start(args: StartArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ConfigLayer::from_file(path)?,
        None => ConfigLayer::default(),
    };
    let config = BrokerConfig::resolve(file.overridden_by(args.layer()))?;
    init_logging(&config.log_level)?;

    let lock = sluice_net::data_dir::lock(&config.data_dir)?;
    if let Err(e) = sluice_net::data_dir::check_direct_io(&config.data_dir) {
        if config.dev {
            tracing::warn!(error = %e, "continuing without O_DIRECT because --dev was given");
        } else {
            return Err(e.into());
        }
    }

    let shared = Arc::new(ListenerShared::default());
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal, flag.clone())
            .context("cannot install signal handlers")?;
        let shared = shared.clone();
        // A small watcher thread turns the async-signal-safe flag into the broker's shutdown
        // flag; shards poll that one.
        std::thread::spawn(move || loop {
            if flag.load(Ordering::SeqCst) {
                shared.shutdown.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
    }

    sluice_net::broker::run(config, shared)?;
    drop(lock);
    Ok(())
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log-level {level:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
