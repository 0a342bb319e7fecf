//! Command-line interface of `sluice-bench`: the modes and every load parameter.
//!
//! The flags here are an interface that scripts (`scripts/bench.sh`, the e2e smoke test) and
//! users rely on; `produce --bootstrap --topic --partitions --record-size --acks --duration
//! --json` in particular must keep working. The parsed `LoadArgs` is also written verbatim
//! into every JSON report, so a result always says how it was obtained. Parsed once on the
//! main thread before any executor starts.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use sluice_engine::compression::Codec;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-bench",
    version,
    about = "Kafka-protocol load generator with HDR-histogram latency for any Kafka-compatible broker"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Producers only: records/s, MB/s and acknowledgement latency.
    Produce(LoadArgs),
    /// Consumers only: reads what the topic holds (from `--from`) until caught up or done.
    Consume(LoadArgs),
    /// Producers and tailing consumers; records carry their send time and latency is measured
    /// at the consumer (use `--rate` for fixed-rate runs).
    E2e(LoadArgs),
    /// Producers and tailing consumers at full speed: both throughputs and both latencies.
    Mixed(LoadArgs),
    /// Renders one or more JSON reports into an SVG chart of latency percentiles and
    /// throughput.
    Plot(PlotArgs),
    /// Measures the machine limits results are compared with (O_DIRECT disk, loopback TCP).
    #[command(subcommand)]
    Limits(crate::limits::LimitsCommand),
}

/// Which workload a run executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Produce,
    Consume,
    E2e,
    Mixed,
}

impl Mode {
    pub fn produces(self) -> bool {
        self != Mode::Consume
    }

    pub fn consumes(self) -> bool {
        self != Mode::Produce
    }

    /// Whether produced records carry their intended send time for end-to-end latency.
    pub fn stamps_records(self) -> bool {
        matches!(self, Mode::E2e | Mode::Mixed)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
            Mode::Mixed => "mixed",
        }
    }
}

/// Where consumers start reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// Every parameter of a load run. Serialized into the report as `parameters`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct LoadArgs {
    /// Broker to connect to (host:port).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use; created if missing (CreateTopics, else Metadata auto-creation).
    #[arg(long, default_value = "sluice-bench")]
    pub topic: String,
    /// Number of partitions to spread the load over (the topic is created with this many).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replication factor used when the topic is created.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Value size of each record in bytes (keys are null).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per batch; defaults to as many as fit in `--batch-bytes`.
    #[arg(long)]
    pub batch_records: Option<usize>,
    /// Target uncompressed batch size in bytes when `--batch-records` is not given.
    #[arg(long, default_value_t = 16384)]
    pub batch_bytes: usize,
    /// With `--rate`: how long a producer lets records accumulate into one batch, in ms.
    /// 0 sends whatever is due as soon as a request slot is free, as Kafka clients do.
    #[arg(long, default_value_t = 0.0)]
    pub linger_ms: f64,
    /// Acknowledgements: 0, 1 or all (-1).
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Producer connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer connections.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Produce requests in flight per producer connection.
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// Partitions (one batch each) per produce request.
    #[arg(long, default_value_t = 16)]
    pub partitions_per_request: usize,
    /// Run time in seconds (producers stop sending then; consumers drain what was produced).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many records (produced, or consumed in `consume` mode).
    #[arg(long)]
    pub records: Option<u64>,
    /// Fixed aggregate produce rate in records/s; latency is then measured from each record's
    /// intended send time, so a stalled broker cannot hide its stalls.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds at the start whose results are not counted.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Where consumers start.
    #[arg(long, value_enum, default_value_t = StartFrom::Earliest)]
    pub from: StartFrom,
    /// Fetch: maximum bytes per response.
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    pub fetch_max_bytes: i32,
    /// Fetch: maximum bytes per partition.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub partition_max_bytes: i32,
    /// Fetch: how long the broker may hold a fetch that has no data, in ms.
    #[arg(long, default_value_t = 500)]
    pub fetch_max_wait_ms: i32,
    /// Load-generator threads (one glommio executor each; connections are spread over them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// CPUs to pin the threads to, e.g. `1` or `2,3` (round-robin); unpinned if absent.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Produce request timeout sent to the broker, in ms.
    #[arg(long, default_value_t = 30000)]
    pub request_timeout_ms: i32,
    /// A free-form label stored in the report (shown in charts).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Do not print the human-readable table.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// Checks the parameters and derives the values the run needs.
    pub fn validate(&self, mode: Mode) -> Result<Settings> {
        let acks = match self.acks.as_str() {
            "0" => 0,
            "1" => 1,
            "all" | "-1" => -1,
            other => bail!("--acks must be 0, 1 or all, not {other:?}"),
        };
        let Some(codec) = Codec::from_name(&self.compression) else {
            bail!(
                "--compression must be none, gzip, snappy, lz4 or zstd, not {:?}",
                self.compression
            );
        };
        if self.partitions == 0 {
            bail!("--partitions must be at least 1");
        }
        if mode.produces() && self.producers == 0 {
            bail!("{} needs at least one producer connection", mode.name());
        }
        if mode.consumes() && self.consumers == 0 {
            bail!("{} needs at least one consumer connection", mode.name());
        }
        if self.in_flight == 0 || self.threads == 0 || self.partitions_per_request == 0 {
            bail!("--in-flight, --threads and --partitions-per-request must be at least 1");
        }
        if !self.duration.is_finite()
            || self.duration <= 0.0
            || self.warmup < 0.0
            || self.warmup >= self.duration
        {
            bail!("--duration must be positive and larger than --warmup");
        }
        if let Some(rate) = self.rate {
            if !rate.is_finite() || rate <= 0.0 {
                bail!("--rate must be positive");
            }
        }
        if mode.stamps_records() && self.record_size < crate::payload::STAMP_BYTES {
            bail!(
                "{} needs --record-size of at least {} bytes to carry the send time",
                mode.name(),
                crate::payload::STAMP_BYTES
            );
        }
        let batch_records = match self.batch_records {
            Some(0) => bail!("--batch-records must be at least 1"),
            Some(n) => n,
            // About 8 bytes of per-record framing next to the value (null key, no headers).
            None => (self.batch_bytes / (self.record_size + 8)).max(1),
        };
        Ok(Settings {
            acks,
            codec,
            batch_records,
        })
    }
}

/// Values derived from `LoadArgs` once they are known to be valid.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub acks: i16,
    pub codec: Codec,
    pub batch_records: usize,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// JSON reports written by `--json`.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Output SVG file.
    #[arg(long, short, default_value = "bench.svg")]
    pub out: PathBuf,
    /// Chart title.
    #[arg(long, default_value = "sluice-bench")]
    pub title: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("arguments parse")
    }

    #[test]
    fn documented_produce_invocation_parses() {
        let cli = parse(&[
            "sluice-bench",
            "produce",
            "--bootstrap",
            "127.0.0.1:9092",
            "--topic",
            "t",
            "--partitions",
            "1",
            "--record-size",
            "100",
            "--acks",
            "1",
            "--duration",
            "10",
            "--json",
            "out.json",
        ]);
        let Command::Produce(args) = cli.command else {
            panic!("expected produce");
        };
        assert_eq!(args.topic, "t");
        assert_eq!(args.json, Some(PathBuf::from("out.json")));
        let s = args.validate(Mode::Produce).expect("valid");
        assert_eq!(s.acks, 1);
        assert_eq!(s.codec, Codec::None);
        assert_eq!(s.batch_records, 16384 / 108);
    }

    #[test]
    fn acks_all_and_bad_values() {
        let cli = parse(&["sluice-bench", "e2e", "--acks", "all", "--cpus", "0,1"]);
        let Command::E2e(args) = cli.command else {
            panic!("expected e2e");
        };
        assert_eq!(args.cpus, vec![0, 1]);
        assert_eq!(args.validate(Mode::E2e).expect("valid").acks, -1);
        let cli = parse(&["sluice-bench", "produce", "--acks", "2"]);
        let Command::Produce(args) = cli.command else {
            panic!("expected produce");
        };
        assert!(args.validate(Mode::Produce).is_err());
    }

    #[test]
    fn stamped_modes_need_room_for_the_stamp() {
        let cli = parse(&["sluice-bench", "e2e", "--record-size", "8"]);
        let Command::E2e(args) = cli.command else {
            panic!("expected e2e");
        };
        assert!(args.validate(Mode::E2e).is_err());
    }
}
