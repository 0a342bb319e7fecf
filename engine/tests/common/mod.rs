//! Shared helpers of the engine's integration tests: an executor, test batches, partitions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sluice_engine::batch::testing::{make_batch, TestBatch};
use sluice_engine::config::LogConfig;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::types::TopicPartition;

/// Runs `f` inside a fresh glommio LocalExecutor, priming the DMA probe in `dir` first.
pub fn run<F, Fut>(dir: &Path, f: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = dir.to_path_buf();
    glommio::LocalExecutor::default().run(async move {
        sluice_engine::io::prime_executor(&dir).await.unwrap();
        f().await
    });
}

pub fn tp() -> TopicPartition {
    TopicPartition::new("t", 0)
}

/// One batch of `records` records and `payload` body bytes, filler seeded by `fill`.
pub fn batch(records: i32, payload: usize, ts: i64, fill: u8) -> Bytes {
    Bytes::from(make_batch(TestBatch {
        record_count: records,
        payload_bytes: payload,
        base_timestamp: ts,
        max_timestamp: ts,
        codec: 0,
        fill,
    }))
}

pub fn small_segments(segment_bytes: u64) -> Arc<LogConfig> {
    Arc::new(
        LogConfig::from_pairs([
            ("segment.bytes", segment_bytes.to_string().as_str()),
            ("index.interval.bytes", "256"),
        ])
        .unwrap(),
    )
}

pub async fn open(root: &Path, cfg: &Arc<LogConfig>, ctx: &ShardContext) -> Partition {
    Partition::open(root, tp(), cfg.clone(), ctx.clone())
        .await
        .unwrap()
}

/// Reads everything from `from` to the high watermark, batch by batch.
pub async fn read_all(p: &Partition, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = sluice_engine::types::Offset(from);
    loop {
        let r = p.read(off, 1 << 20).await.unwrap();
        if r.is_empty() {
            return out;
        }
        let bytes = r.to_vec();
        let mut it = sluice_engine::batch::BatchIter::new(&bytes);
        let mut last = off;
        for item in &mut it {
            let (_, v) = item.unwrap();
            last = v.next_offset();
        }
        out.extend_from_slice(&bytes);
        off = last;
    }
}
