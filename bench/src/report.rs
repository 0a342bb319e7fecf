//! The result of a run as JSON and as a human table, with the facts that make it comparable:
//! git revision, machine (CPU model, cores, memory, kernel) and every parameter.
//!
//! Top-level `records_per_sec`, `bytes_per_sec` and `latency_us` are the run's headline, and
//! scripts rely on them: produced records and acknowledgement latency for `produce` and
//! `mixed`, consumed records and fetch round trips for `consume`, produced records and
//! end-to-end latency for `e2e`. `produce` and `consume` hold each side in full. Built on the
//! main thread after every executor has finished.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::cli::{LoadArgs, Mode};
use crate::client::Versions;
use crate::run::Outcome;
use crate::stats::{distribution, Latency, Side};

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub tool_version: &'static str,
    pub mode: Mode,
    pub label: Option<String>,
    pub git_revision: String,
    pub machine: Machine,
    pub parameters: Parameters,
    pub broker: Broker,
    pub started_at_unix_ms: u64,
    /// What `latency_us` measures: "produce_ack", "fetch_round_trip" or "end_to_end".
    pub latency_kind: &'static str,
    pub seconds: f64,
    pub records: u64,
    pub bytes: u64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub mb_per_sec: f64,
    /// Value bytes only (records × record size), per second.
    pub payload_mb_per_sec: f64,
    pub latency_us: Latency,
    pub produce: Option<SideReport>,
    pub consume: Option<SideReport>,
    /// End-to-end latency of stamped records (e2e and mixed runs).
    pub e2e_latency_us: Option<Latency>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// `(percentile, latency_us)` of the headline latency, for plotting.
    pub percentiles: Vec<(f64, u64)>,
}

#[derive(Debug, Serialize)]
pub struct Parameters {
    #[serde(flatten)]
    pub args: LoadArgs,
    pub acks_value: i16,
    pub batch_records_effective: usize,
}

#[derive(Debug, Serialize)]
pub struct Broker {
    pub address: String,
    pub versions: Versions,
    pub topic_created: bool,
    pub partitions: usize,
}

#[derive(Debug, Serialize)]
pub struct SideReport {
    pub records: u64,
    pub bytes: u64,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_us: Latency,
    /// Produce at acks 1 or all: per request, from its write to the socket to its response
    /// (`latency_us` is per record, from its intended send time, so it also holds the time
    /// records waited for a request slot).
    pub round_trip_us: Option<Latency>,
}

impl SideReport {
    fn of(side: &Side, seconds: f64) -> SideReport {
        let per_sec = |x: u64| {
            if seconds > 0.0 {
                x as f64 / seconds
            } else {
                0.0
            }
        };
        SideReport {
            records: side.records,
            bytes: side.bytes,
            requests: side.requests,
            errors: side.errors,
            seconds: round3(seconds),
            records_per_sec: per_sec(side.records).round(),
            bytes_per_sec: per_sec(side.bytes).round(),
            mb_per_sec: round3(per_sec(side.bytes) / 1e6),
            latency_us: Latency::of(&side.latency),
            round_trip_us: (!side.round_trip.is_empty()).then(|| Latency::of(&side.round_trip)),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub hostname: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
        }
    }
}

/// The revision of the code being measured: `$SLUICE_GIT_REV`, else `git` in the current
/// directory, else in the source tree this binary was built from; `-dirty` when uncommitted
/// changes to tracked files exist.
pub fn git_revision() -> String {
    if let Ok(rev) = std::env::var("SLUICE_GIT_REV") {
        return rev;
    }
    for dir in [".", env!("CARGO_MANIFEST_DIR")] {
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        if let Some(rev) = git(&["rev-parse", "HEAD"]) {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            return if dirty { format!("{rev}-dirty") } else { rev };
        }
    }
    "unknown".to_owned()
}

/// Builds the report of a finished run.
pub fn build(mode: Mode, args: &LoadArgs, outcome: &Outcome) -> Report {
    let produce = outcome
        .produce
        .as_ref()
        .map(|s| SideReport::of(s, outcome.produce_seconds));
    let consume = outcome
        .consume
        .as_ref()
        .map(|s| SideReport::of(s, outcome.consume_seconds));
    let e2e_hist = outcome
        .consume
        .as_ref()
        .filter(|_| mode.stamps_records())
        .map(|s| &s.e2e);
    let (headline_side, seconds, hist, latency_kind) = match mode {
        Mode::Produce | Mode::Mixed => (
            outcome.produce.as_ref(),
            outcome.produce_seconds,
            outcome.produce.as_ref().map(|s| &s.latency),
            "produce_ack",
        ),
        Mode::Consume => (
            outcome.consume.as_ref(),
            outcome.consume_seconds,
            outcome.consume.as_ref().map(|s| &s.latency),
            "fetch_round_trip",
        ),
        Mode::E2e => (
            outcome.produce.as_ref(),
            outcome.produce_seconds,
            e2e_hist,
            "end_to_end",
        ),
    };
    let records = headline_side.map_or(0, |s| s.records);
    let bytes = headline_side.map_or(0, |s| s.bytes);
    let per_sec = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
    let errors = outcome.produce.as_ref().map_or(0, |s| s.errors)
        + outcome.consume.as_ref().map_or(0, |s| s.errors);
    let first_error = outcome
        .produce
        .as_ref()
        .and_then(|s| s.first_error.clone())
        .or_else(|| outcome.consume.as_ref().and_then(|s| s.first_error.clone()));
    Report {
        tool: "sluice-bench",
        tool_version: env!("CARGO_PKG_VERSION"),
        mode,
        label: args.label.clone(),
        git_revision: git_revision(),
        machine: Machine::probe(),
        parameters: Parameters {
            args: args.clone(),
            acks_value: outcome.settings.acks,
            batch_records_effective: outcome.settings.batch_records,
        },
        broker: Broker {
            address: outcome.setup.addr.clone(),
            versions: outcome.setup.versions,
            topic_created: outcome.setup.created,
            partitions: outcome.setup.partitions.len(),
        },
        started_at_unix_ms: outcome.started_at_unix_ms,
        latency_kind,
        seconds: round3(seconds),
        records,
        bytes,
        records_per_sec: per_sec(records as f64).round(),
        bytes_per_sec: per_sec(bytes as f64).round(),
        mb_per_sec: round3(per_sec(bytes as f64) / 1e6),
        payload_mb_per_sec: round3(per_sec((records * args.record_size as u64) as f64) / 1e6),
        latency_us: hist.map(Latency::of).unwrap_or_default(),
        produce,
        consume,
        e2e_latency_us: e2e_hist.map(Latency::of),
        errors,
        first_error,
        percentiles: hist.map(distribution).unwrap_or_default(),
    }
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// The human-readable summary printed after a run.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let p = &report.parameters.args;
    out.push_str(&format!(
        "sluice-bench {} · topic {} · {} partitions · {} B records · acks {} · {} · rev {}\n",
        report.mode.name(),
        p.topic,
        report.broker.partitions,
        p.record_size,
        p.acks,
        p.compression,
        report.git_revision
    ));
    out.push_str(&format!(
        "{:<9} {:>12} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "side", "records", "records/s", "MB/s", "p50 µs", "p90", "p99", "p99.9", "p99.99", "max"
    ));
    let mut row = |name: &str, s: &SideReport, l: &Latency| {
        out.push_str(&format!(
            "{:<9} {:>12} {:>12.0} {:>10.2} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            name,
            s.records,
            s.records_per_sec,
            s.mb_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.p9999,
            l.max
        ));
    };
    if let Some(s) = &report.produce {
        row("produce", s, &s.latency_us);
    }
    let round_trip = report
        .produce
        .as_ref()
        .and_then(|s| s.round_trip_us.as_ref());
    if let Some(s) = &report.consume {
        row("consume", s, &s.latency_us);
        if let Some(l) = &report.e2e_latency_us {
            row("e2e", s, l);
        }
    }
    if let Some(l) = round_trip {
        out.push_str(&format!(
            "produce requests, write to response: {} requests, p50 {} µs, p90 {}, p99 {}, \
             p99.9 {}, p99.99 {}, max {}\n",
            l.count, l.p50, l.p90, l.p99, l.p999, l.p9999, l.max
        ));
    }
    if report.errors > 0 {
        out.push_str(&format!(
            "errors: {} (first: {})\n",
            report.errors,
            report.first_error.as_deref().unwrap_or("?")
        ));
    }
    out
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
