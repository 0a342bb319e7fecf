//! Log cleaner throughput, and what cleaning costs the produce path of the same shard.
//!
//! A compacted partition is filled with `SLUICE_CLEANER_MB` (default 256) of records spread
//! over `SLUICE_CLEANER_KEYS` keys (default 100000) with `SLUICE_CLEANER_VALUE_BYTES`-byte
//! values (default 200) in batches of 100 records (codec `SLUICE_CLEANER_CODEC`: none, lz4,
//! zstd…; default lz4), in 64 MiB segments. Then, on one executor (one shard):
//! 1. produce latency alone: small batches (10 records of 100 bytes, `Durability::Written`)
//!    appended one at a time to another partition for `SLUICE_CLEANER_PROBE_S` seconds
//!    (default 5);
//! 2. the same produce loop while the cleaner cleans the first partition from a low-priority
//!    task queue with the shard runtime's background shares (as the broker runs it).
//!
//! While it cleans, the cleaner is paused and resumed every 250 ms, and each probe append is
//! counted as "cleaning" or "paused" by the state when it started (the first 25 ms after a
//! pause begins are skipped: the cleaner's last request may still be on the device); the probe
//! goes on for a second after the cleaner finished, counted as cleaning, while the replaced
//! segments' blocks are freed. The two
//! sets come from the same minute, so the device's drift over time (this virtual disk's
//! latency moves by several times from minute to minute) does not decide the comparison; the
//! ratio of their p99 is the figure the goal is about. The first measurement, alone before
//! cleaning, is printed too.
//!
//! It prints cleaning MiB/s (bytes of segments rewritten / wall time, pauses included;
//! building the key map reads the dirty part once more), the bytes written, and produce
//! p50/p99/p99.9/max alone, paused and while cleaning, plus a JSON line. Figures only: nothing
//! is asserted about speed.
//!
//! The cleaner runs as the broker's does by default: paced by its backlog
//! (`CleanerOptions::backlog_pace`; `SLUICE_CLEANER_PACE_S` sets the pace in seconds, 0 runs it
//! unpaced), with no fixed I/O limit (`SLUICE_CLEANER_IO_MBPS` sets one, in MiB/s).
//!
//! `cargo bench -p sluice-engine --bench cleaner` (`SLUICE_BENCH_DIR` picks the disk). Without
//! `--bench` it runs a tiny test mode.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{Latency, Shares};
use sluice_engine::builder::BatchBuilder;
use sluice_engine::cleaner::{Cleaner, CleanerOptions, CleanerStats, BACKLOG_PACE_DEFAULT};
use sluice_engine::compression::Codec;
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{now_ms, Partition, ShardContext};
use sluice_engine::types::TopicPartition;

#[derive(Debug, Clone)]
pub struct Params {
    pub log_bytes: u64,
    pub keys: u64,
    pub value_bytes: usize,
    pub codec: Codec,
    pub segment_bytes: u64,
    pub probe: Duration,
    /// The cleaner's I/O limit (`SLUICE_CLEANER_IO_MBPS`, MiB/s; unset: none).
    pub io_bytes_per_sec: Option<u64>,
    /// The cleaner's backlog pace (`SLUICE_CLEANER_PACE_S`, seconds; 0: unpaced; unset: the
    /// broker's default).
    pub pace: Option<Duration>,
}

impl Params {
    pub fn from_env(test_mode: bool) -> Params {
        let get = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        if test_mode {
            return Params {
                log_bytes: 2 << 20,
                keys: 1000,
                value_bytes: 100,
                codec: Codec::Lz4,
                segment_bytes: 256 << 10,
                probe: Duration::from_millis(200),
                io_bytes_per_sec: None,
                pace: Some(BACKLOG_PACE_DEFAULT),
            };
        }
        Params {
            log_bytes: get("SLUICE_CLEANER_MB", 256) << 20,
            keys: get("SLUICE_CLEANER_KEYS", 100_000),
            value_bytes: get("SLUICE_CLEANER_VALUE_BYTES", 200) as usize,
            codec: std::env::var("SLUICE_CLEANER_CODEC")
                .ok()
                .and_then(|c| Codec::from_name(&c))
                .unwrap_or(Codec::Lz4),
            segment_bytes: 64 << 20,
            probe: Duration::from_secs(get("SLUICE_CLEANER_PROBE_S", 5)),
            io_bytes_per_sec: std::env::var("SLUICE_CLEANER_IO_MBPS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(|m| m << 20),
            pace: match get("SLUICE_CLEANER_PACE_S", BACKLOG_PACE_DEFAULT.as_secs()) {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
        }
    }
}

/// Produce latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct CleanResult {
    pub stats: CleanerStats,
    /// The I/O rate the cleaner chose (`None`: unpaced).
    pub io_rate: Option<u64>,
    pub clean_secs: f64,
    pub read_mb_per_sec: f64,
    pub alone: Latencies,
    /// Appends that started while the cleaner was paused, during the cleaning run.
    pub paused: Latencies,
    /// Appends that started while the cleaner was working.
    pub while_cleaning: Latencies,
}

/// How long the cleaner works, then rests, while the probe runs.
const TOGGLE_EVERY: Duration = Duration::from_millis(250);
/// How long the probe goes on after the cleaner finished.
const AFTERMATH: Duration = Duration::from_secs(1);
/// Appends starting this soon after a pause began count for neither set.
const SETTLE: Duration = Duration::from_millis(25);

fn latencies(mut v: Vec<Duration>) -> Latencies {
    v.sort();
    let at = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Latencies {
        count: v.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: v.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    }
}

/// How a probe append waits: `Durability::Written` (the default: the device write, as acks=1),
/// or only for its place in the write buffer with `SLUICE_CLEANER_PROBE=buffered` (separates
/// the CPU share of the slowdown from the device's).
fn probe_durability() -> Durability {
    match std::env::var("SLUICE_CLEANER_PROBE").as_deref() {
        Ok("buffered") => Durability::Buffered,
        _ => Durability::Written,
    }
}

/// Appends small batches to `p` until `stop` is set or `limit` passes; returns latencies.
async fn probe(p: &Partition, limit: Duration, stop: Option<Rc<Cell<bool>>>) -> Vec<Duration> {
    let mut b = BatchBuilder::new(Codec::None);
    for _ in 0..10 {
        b.append(now_ms(), Some(b"probe"), Some(&[7u8; 100]), &[])
            .unwrap();
    }
    let batch = b.build().unwrap();
    let mut out = Vec::new();
    let started = Instant::now();
    while started.elapsed() < limit && !stop.as_ref().is_some_and(|s| s.get()) {
        let t = Instant::now();
        p.append(batch.clone(), probe_durability()).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

/// Appends small batches to `p` until [`AFTERMATH`] after `stop` is set, sorting each latency
/// by whether the cleaner was paused (`gate` set) when the append started; returns (paused,
/// cleaning). The aftermath counts as cleaning: the replaced segments' files are freed then.
async fn probe_tagged(
    p: &Partition,
    stop: Rc<Cell<bool>>,
    gate: Rc<Cell<bool>>,
    toggled: Rc<Cell<Instant>>,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut b = BatchBuilder::new(Codec::None);
    for _ in 0..10 {
        b.append(now_ms(), Some(b"probe"), Some(&[7u8; 100]), &[])
            .unwrap();
    }
    let batch = b.build().unwrap();
    let (mut paused, mut cleaning) = (Vec::new(), Vec::new());
    let mut stopped: Option<Instant> = None;
    while stopped.is_none_or(|s| s.elapsed() < AFTERMATH) {
        if stop.get() {
            stopped.get_or_insert_with(Instant::now);
        }
        let t = Instant::now();
        let was_paused = gate.get();
        let settled = t.duration_since(toggled.get()) >= SETTLE;
        p.append(batch.clone(), probe_durability()).await.unwrap();
        match (was_paused, settled) {
            (true, true) => paused.push(t.elapsed()),
            (false, _) => cleaning.push(t.elapsed()),
            (true, false) => {}
        }
    }
    (paused, cleaning)
}

pub fn measure(root: &Path, params: &Params) -> CleanResult {
    let root = root.to_path_buf();
    let params = params.clone();
    glommio::LocalExecutor::default().run(async move {
        sluice_engine::io::prime_executor(&root).await.unwrap();
        let cfg = Arc::new(
            LogConfig::from_pairs([
                ("segment.bytes", params.segment_bytes.to_string().as_str()),
                ("cleanup.policy", "compact"),
                ("min.cleanable.dirty.ratio", "0"),
            ])
            .unwrap(),
        );
        let ctx = ShardContext::default();
        let p = Partition::open(
            &root,
            TopicPartition::new("compacted", 0),
            cfg.clone(),
            ctx.clone(),
        )
        .await
        .unwrap();
        let other = Partition::open(&root, TopicPartition::new("other", 0), cfg, ctx)
            .await
            .unwrap();
        let mut written = 0u64;
        let mut n = 0u64;
        // Values of pseudo-random letters: compressible like text, not like a run of one byte.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut value = vec![0u8; params.value_bytes];
        while written < params.log_bytes {
            let mut b = BatchBuilder::new(params.codec);
            for _ in 0..100 {
                // A cheap spread over the keys (multiplicative hash of a counter).
                let k = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % params.keys;
                for b in value.iter_mut() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    *b = b'a' + (seed % 16) as u8;
                }
                b.append(
                    now_ms(),
                    Some(format!("key-{k:010}").as_bytes()),
                    Some(&value),
                    &[],
                )
                .unwrap();
                n += 1;
            }
            let batch = b.build().unwrap();
            written += batch.len() as u64;
            p.append(batch, Durability::Buffered).await.unwrap();
        }
        p.flush().await.unwrap();

        let alone = latencies(probe(&other, params.probe, None).await);

        let tq = glommio::executor().create_task_queue(
            Shares::Static(sluice_engine::shard::BACKGROUND_SHARES),
            Latency::NotImportant,
            "cleaner",
        );
        let done = Rc::new(Cell::new(false));
        let gate = Rc::new(Cell::new(false));
        let toggled = Rc::new(Cell::new(Instant::now()));
        let (p2, done2, gate2) = (p.clone(), done.clone(), gate.clone());
        let io_bytes_per_sec = params.io_bytes_per_sec;
        let backlog_pace = params.pace;
        let cleaning = glommio::spawn_local_into(
            async move {
                let mut cleaner = Cleaner::new(CleanerOptions {
                    io_bytes_per_sec,
                    backlog_pace,
                    pause: Some(gate2),
                    ..CleanerOptions::default()
                });
                let t = Instant::now();
                let stats = cleaner.clean(&p2, now_ms()).await.unwrap();
                done2.set(true);
                (stats, t.elapsed(), cleaner.io_rate())
            },
            tq,
        )
        .unwrap();
        let toggler = {
            let (done, gate, toggled) = (done.clone(), gate.clone(), toggled.clone());
            glommio::spawn_local(async move {
                while !done.get() {
                    glommio::timer::sleep(TOGGLE_EVERY).await;
                    gate.set(!gate.get());
                    toggled.set(Instant::now());
                }
                gate.set(false);
            })
        };
        // Produce for as long as the cleaner runs.
        let (paused, lat) = probe_tagged(&other, done.clone(), gate, toggled).await;
        let (stats, took, io_rate) = cleaning.await;
        toggler.await;
        p.close().await.unwrap();
        other.close().await.unwrap();
        let clean_secs = took.as_secs_f64();
        CleanResult {
            stats,
            io_rate,
            clean_secs,
            read_mb_per_sec: stats.bytes_read as f64 / clean_secs / (1 << 20) as f64,
            alone,
            paused: latencies(paused),
            while_cleaning: latencies(lat),
        }
    })
}

pub fn report_json(params: &Params, r: &CleanResult) -> String {
    format!(
        concat!(
            "{{\"bench\":\"cleaner\",\"log_bytes\":{},\"keys\":{},\"value_bytes\":{},",
            "\"codec\":\"{}\",\"io_limit_bytes_per_sec\":{},\"pace_secs\":{},\"io_rate_bytes_per_sec\":{},\"bytes_read\":{},\"bytes_written\":{},\"passes\":{},",
            "\"clean_secs\":{:.3},\"read_mb_per_sec\":{:.1},",
            "\"produce_alone_p99_us\":{:.0},\"produce_paused_p99_us\":{:.0},",
            "\"produce_cleaning_p99_us\":{:.0},\"p99_ratio\":{:.2}}}"
        ),
        params.log_bytes,
        params.keys,
        params.value_bytes,
        params.codec.name(),
        params.io_bytes_per_sec.map_or(-1, |b| b as i64),
        params.pace.map_or(0, |p| p.as_secs()),
        r.io_rate.map_or(-1, |b| b as i64),
        r.stats.bytes_read,
        r.stats.bytes_written,
        r.stats.passes,
        r.clean_secs,
        r.read_mb_per_sec,
        r.alone.p99_us,
        r.paused.p99_us,
        r.while_cleaning.p99_us,
        r.while_cleaning.p99_us / r.paused.p99_us.max(1.0),
    )
}

#[allow(dead_code)]
fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let params = Params::from_env(!bench);
    let dir = match std::env::var("SLUICE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let r = measure(dir.path(), &params);
    println!(
        "cleaner I/O rate: {}",
        r.io_rate.map_or("unpaced".to_string(), |b| format!(
            "{:.1} MiB/s (reads and writes)",
            b as f64 / (1 << 20) as f64
        ))
    );
    println!(
        "cleaner: {} MiB cleaned ({} MiB read for the key map), {} MiB written in {} pass(es), {:.2} s: {:.1} MiB/s of log",
        r.stats.bytes_read >> 20,
        r.stats.map_bytes_read >> 20,
        r.stats.bytes_written >> 20,
        r.stats.passes,
        r.clean_secs,
        r.read_mb_per_sec
    );
    for (name, l) in [
        ("alone, before cleaning", r.alone),
        ("while the cleaner is paused", r.paused),
        ("while cleaning", r.while_cleaning),
    ] {
        println!(
            "produce {name}: n={} p50={:.0}us p99={:.0}us p99.9={:.0}us max={:.0}us",
            l.count, l.p50_us, l.p99_us, l.p999_us, l.max_us
        );
    }
    println!(
        "p99 while cleaning / while paused: {:.2}",
        r.while_cleaning.p99_us / r.paused.p99_us.max(1.0)
    );
    println!("{}", report_json(&params, &r));
}
