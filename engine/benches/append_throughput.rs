//! Append throughput of a partition as a ratio of the raw O_DIRECT sequential write bandwidth
//! of the same directory, measured in the same run: 100-byte records in 16 KiB and 256 KiB
//! batches, with Written (no fdatasync) and Synced (group-committed fdatasync) durability.
//!
//! `cargo bench -p sluice-engine --bench append_throughput` runs the real measurement (env:
//! `SLUICE_BENCH_DIR`, `SLUICE_BENCH_MB` per case, `SLUICE_BENCH_SECONDS` cap per case,
//! `SLUICE_BENCH_WRITERS`); without `--bench` (as under `cargo test`) it runs a tiny test mode so
//! the code never rots. Prints one human line per case and one JSON line for the whole run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::OpenOptions;
use sluice_engine::batch::testing::{make_batch, TestBatch};
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::types::TopicPartition;

pub struct Params {
    pub bytes_per_case: u64,
    pub max_seconds: f64,
    pub writers: usize,
    pub batch_sizes: Vec<usize>,
}

impl Params {
    pub fn from_env(test_mode: bool) -> Params {
        let env = |k: &str, d: f64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(d)
        };
        if test_mode {
            Params {
                bytes_per_case: 2 << 20,
                max_seconds: 2.0,
                writers: 2,
                batch_sizes: vec![16 * 1024, 256 * 1024],
            }
        } else {
            Params {
                bytes_per_case: (env("SLUICE_BENCH_MB", 512.0) * 1048576.0) as u64,
                max_seconds: env("SLUICE_BENCH_SECONDS", 8.0),
                writers: env("SLUICE_BENCH_WRITERS", 4.0) as usize,
                batch_sizes: vec![16 * 1024, 256 * 1024],
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub batch_bytes: usize,
    pub synced: bool,
    /// Raw sequential DMA writes, one at a time (queue depth 1).
    pub raw_bytes_per_sec: f64,
    /// Raw DMA writes with as many in flight as the engine has appenders.
    pub raw_qd_bytes_per_sec: f64,
    pub engine_bytes_per_sec: f64,
    /// Engine / raw queue depth 1.
    pub ratio: f64,
    /// Engine / raw at the appenders' queue depth.
    pub ratio_qd: f64,
    pub latency_us: [u64; 5],
}

/// Runs every case in `dir` and returns the results (also printed).
pub fn run_all(dir: &Path, p: &Params) -> Vec<CaseResult> {
    let dir = dir.to_path_buf();
    let results = Rc::new(RefCell::new(Vec::new()));
    let out = results.clone();
    let sizes = p.batch_sizes.clone();
    let (bytes, secs, writers) = (p.bytes_per_case, p.max_seconds, p.writers);
    glommio::LocalExecutor::default().run(async move {
        sluice_engine::io::prime_executor(&dir).await.unwrap();
        for &size in &sizes {
            for synced in [false, true] {
                let raw = raw_write(&dir, size, bytes, secs, synced, 1).await;
                let raw_qd = raw_write(&dir, size, bytes, secs, synced, writers).await;
                let (eng, lat) = engine_write(&dir, size, bytes, secs, synced, writers).await;
                let r = CaseResult {
                    batch_bytes: size,
                    synced,
                    raw_bytes_per_sec: raw,
                    raw_qd_bytes_per_sec: raw_qd,
                    engine_bytes_per_sec: eng,
                    ratio: eng / raw,
                    ratio_qd: eng / raw_qd,
                    latency_us: lat,
                };
                println!(
                    "batch {:>6} B  fdatasync {:<5}  raw qd1 {:>8.1} MB/s  raw qd{} {:>8.1} MB/s  engine {:>8.1} MB/s  ratio {:.3} (vs qd{}: {:.3})  append latency us p50 {} p90 {} p99 {} p99.9 {} max {}",
                    size, synced, raw / 1e6, writers, raw_qd / 1e6, eng / 1e6, r.ratio, writers, r.ratio_qd,
                    lat[0], lat[1], lat[2], lat[3], lat[4]
                );
                out.borrow_mut().push(r);
            }
        }
    });
    let v = results.borrow().clone();
    v
}

fn batch_of(size: usize) -> Bytes {
    Bytes::from(make_batch(TestBatch {
        record_count: ((size - 61) / 100) as i32,
        payload_bytes: size - 61,
        ..TestBatch::default()
    }))
}

/// Raw O_DIRECT sequential writes of `size` bytes from `writers` concurrent tasks (queue depth
/// `writers`), each followed by fdatasync when `synced`.
async fn raw_write(
    dir: &Path,
    size: usize,
    total: u64,
    secs: f64,
    synced: bool,
    writers: usize,
) -> f64 {
    let path = dir.join("raw-bandwidth.bin");
    let file = Rc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&path)
            .await
            .unwrap(),
    );
    let next = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (file, next) = (file.clone(), next.clone());
        tasks.push(glommio::spawn_local(async move {
            let mut buf = glommio::allocate_dma_buffer_global(size);
            buf.as_bytes_mut().fill(0x5a);
            let buf = Rc::new(buf);
            loop {
                let pos = next.get();
                if pos >= total || Instant::now() > deadline {
                    break;
                }
                next.set(pos + size as u64);
                file.write_rc_at(buf.clone(), pos).await.unwrap();
                if synced {
                    file.fdatasync().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = next.get().min(total);
    let _ = std::fs::remove_file(&path);
    done as f64 / elapsed
}

/// Engine appends of one `size`-byte batch each from `writers` concurrent tasks.
async fn engine_write(
    dir: &Path,
    size: usize,
    total: u64,
    secs: f64,
    synced: bool,
    writers: usize,
) -> (f64, [u64; 5]) {
    let root = dir.join(format!("engine-{size}-{synced}"));
    let cfg = Arc::new(LogConfig::default());
    let p = Partition::open(
        &root,
        TopicPartition::new("bench", 0),
        cfg,
        ShardContext::default(),
    )
    .await
    .unwrap();
    let batch = batch_of(size);
    let durability = if synced {
        Durability::Synced
    } else {
        Durability::Written
    };
    let sent = Rc::new(Cell::new(0u64));
    let lat = Rc::new(RefCell::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (p, sent, lat, batch) = (p.clone(), sent.clone(), lat.clone(), batch.clone());
        tasks.push(glommio::spawn_local(async move {
            loop {
                if sent.get() >= total || Instant::now() > deadline {
                    break;
                }
                sent.set(sent.get() + batch.len() as u64);
                let t0 = Instant::now();
                p.append(batch.clone(), durability).await.unwrap();
                lat.borrow_mut().push(t0.elapsed().as_micros() as u64);
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = sent.get().min(total);
    p.close().await.unwrap();
    drop(p);
    let _ = std::fs::remove_dir_all(&root);
    let mut l = lat.borrow().clone();
    l.sort_unstable();
    let pct = |q: f64| {
        l.get(((l.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    (
        done as f64 / elapsed,
        [
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(0.999),
            l.last().copied().unwrap_or(0),
        ],
    )
}

/// Machine and revision facts recorded with every result.
pub fn environment() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let mem_kb = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    serde_json::json!({
        "git_rev": rev,
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_bytes": mem_kb * 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

pub fn report_json(p: &Params, results: &[CaseResult]) -> String {
    let cases: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "batch_bytes": r.batch_bytes,
                "record_bytes": 100,
                "fdatasync": r.synced,
                "raw_qd1_bytes_per_sec": r.raw_bytes_per_sec,
                "raw_qd_bytes_per_sec": r.raw_qd_bytes_per_sec,
                "engine_bytes_per_sec": r.engine_bytes_per_sec,
                "ratio": r.ratio,
                "ratio_vs_qd": r.ratio_qd,
                "append_latency_us": {"p50": r.latency_us[0], "p90": r.latency_us[1], "p99": r.latency_us[2], "p99_9": r.latency_us[3], "max": r.latency_us[4]},
            })
        })
        .collect();
    serde_json::json!({
        "bench": "append_throughput",
        "env": environment(),
        "params": {"bytes_per_case": p.bytes_per_case, "max_seconds": p.max_seconds, "writers": p.writers},
        "cases": cases,
    })
    .to_string()
}

#[allow(dead_code)]
fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let p = Params::from_env(!full);
    let dir = match std::env::var("SLUICE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let results = run_all(dir.path(), &p);
    println!("{}", report_json(&p, &results));
}
