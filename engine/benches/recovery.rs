//! Start-up (recovery) time after a crash for a small and a large store: the partition is
//! filled and flushed, then an unflushed tail is appended and the partition is dropped without a
//! clean close (as after SIGKILL), then reopened on a fresh executor and timed.
//!
//! `cargo bench -p sluice-engine --bench recovery` (env `SLUICE_RECOVERY_SMALL_MB` default 100,
//! `SLUICE_RECOVERY_LARGE_MB` default 2048 — set 10240 for the 10 GB figure,
//! `SLUICE_RECOVERY_SEGMENT_MB` default 1024, `SLUICE_RECOVERY_UNFLUSHED_MB` default 16,
//! `SLUICE_BENCH_DIR`). Without `--bench` it runs a
//! tiny test mode. Prints a line per store and a JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sluice_engine::batch::testing::{make_batch, TestBatch};
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::types::TopicPartition;

#[derive(Debug, Clone, Copy)]
pub struct StoreResult {
    pub store_bytes: u64,
    pub scanned_bytes: u64,
    pub segments: usize,
    pub last_segment_bytes: u64,
    pub open_ms: f64,
}

fn cfg(segment_bytes: u64) -> Arc<LogConfig> {
    Arc::new(
        LogConfig::from_pairs([("segment.bytes", segment_bytes.to_string().as_str())]).unwrap(),
    )
}

/// Fills a store of `bytes` plus `unflushed_bytes` in `root`, "crashes", and times the reopen.
pub fn measure(root: &Path, bytes: u64, unflushed_bytes: u64, segment_bytes: u64) -> StoreResult {
    let root = root.to_path_buf();
    let tp = TopicPartition::new("recovery", 0);
    let (r1, t1) = (root.clone(), tp.clone());
    glommio::LocalExecutor::default().run(async move {
        sluice_engine::io::prime_executor(&r1).await.unwrap();
        let p = Partition::open(&r1, t1, cfg(segment_bytes), ShardContext::default())
            .await
            .unwrap();
        let size = 256 * 1024;
        let batch = Bytes::from(make_batch(TestBatch {
            record_count: ((size - 61) / 100) as i32,
            payload_bytes: size - 61,
            ..TestBatch::default()
        }));
        let mut written = 0u64;
        while written < bytes {
            p.append(batch.clone(), Durability::Buffered).await.unwrap();
            written += size as u64;
        }
        p.flush().await.unwrap();
        // Then an unflushed tail, written but never synced, and the partition is dropped without
        // a close: the state SIGKILL leaves behind. Recovery scans exactly this tail.
        let mut tail = 0u64;
        while tail < unflushed_bytes {
            p.append(batch.clone(), Durability::Written).await.unwrap();
            tail += size as u64;
        }
    });
    let r2 = root.clone();
    let out = std::rc::Rc::new(std::cell::Cell::new(None));
    let o2 = out.clone();
    glommio::LocalExecutor::default().run(async move {
        sluice_engine::io::prime_executor(&r2).await.unwrap();
        let t0 = Instant::now();
        let p = Partition::open(&r2, tp, cfg(segment_bytes), ShardContext::default())
            .await
            .unwrap();
        let open_ms = t0.elapsed().as_secs_f64() * 1e3;
        let segments = p.segment_count();
        let store = p.size_bytes();
        let tail = p.open_report().tail;
        let last = tail.end.0;
        let scanned = tail.end.0 + tail.truncated_bytes - tail.scanned_from.0;
        o2.set(Some(StoreResult {
            store_bytes: store,
            scanned_bytes: scanned,
            segments,
            last_segment_bytes: last,
            open_ms,
        }));
        p.close().await.unwrap();
    });
    out.get().unwrap()
}

#[allow(dead_code)]
fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env_mb = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(d)
            << 20
    };
    let (small, large, seg, unflushed) = if full {
        (
            env_mb("SLUICE_RECOVERY_SMALL_MB", 100),
            env_mb("SLUICE_RECOVERY_LARGE_MB", 2048),
            env_mb("SLUICE_RECOVERY_SEGMENT_MB", 1024),
            env_mb("SLUICE_RECOVERY_UNFLUSHED_MB", 16),
        )
    } else {
        (1 << 20, 8 << 20, 1 << 20, 256 << 10)
    };
    let mut results = Vec::new();
    for bytes in [small, large] {
        let dir = match std::env::var("SLUICE_BENCH_DIR") {
            Ok(d) => tempfile::tempdir_in(d).unwrap(),
            Err(_) => tempfile::tempdir().unwrap(),
        };
        let r = measure(dir.path(), bytes, unflushed, seg);
        println!(
            "store {:>12} B in {:>4} segments (last {:>11} B, unflushed tail scanned {:>9} B): reopen after crash {:>9.2} ms",
            r.store_bytes, r.segments, r.last_segment_bytes, r.scanned_bytes, r.open_ms
        );
        results.push(r);
    }
    let cases: Vec<_> = results
        .iter()
        .map(|r| serde_json::json!({"store_bytes": r.store_bytes, "scanned_bytes": r.scanned_bytes, "segments": r.segments, "last_segment_bytes": r.last_segment_bytes, "open_ms": r.open_ms}))
        .collect();
    println!(
        "{}",
        serde_json::json!({"bench": "recovery", "segment_bytes": seg, "cases": cases})
    );
}
