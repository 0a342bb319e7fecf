//! Criterion benchmark of partition reads of 1 MiB: tailing reads served by the batch cache,
//! and cold reads served from the segment file (O_DIRECT), over 16 KiB batches.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Benchmark code: a failure should panic loudly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::LocalExecutor;
use sluice_engine::batch::testing::{make_batch, TestBatch};
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::types::{Offset, TopicPartition};

const BATCHES: i64 = 512;
const BATCH_BYTES: usize = 16 * 1024;
const READ_BYTES: usize = 1 << 20;

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ex = LocalExecutor::default();
    let root = dir.path().to_path_buf();
    let (hot, cold) = ex.run(async move {
        sluice_engine::io::prime_executor(&root).await.unwrap();
        let cfg = Arc::new(LogConfig::default());
        let tp = TopicPartition::new("read", 0);
        let writer = Partition::open(&root, tp.clone(), cfg.clone(), ShardContext::default())
            .await
            .unwrap();
        let batch = Bytes::from(make_batch(TestBatch {
            record_count: ((BATCH_BYTES - 61) / 100) as i32,
            payload_bytes: BATCH_BYTES - 61,
            ..TestBatch::default()
        }));
        for _ in 0..BATCHES {
            writer
                .append(batch.clone(), Durability::Written)
                .await
                .unwrap();
        }
        // A second handle on the same files with an empty cache reads from disk.
        let cold_root = root.join("cold");
        let cold = Partition::open(&cold_root, tp, cfg, ShardContext::default())
            .await
            .unwrap();
        for _ in 0..BATCHES {
            cold.append(batch.clone(), Durability::Written)
                .await
                .unwrap();
        }
        cold.close().await.unwrap();
        let cold = Partition::open(
            &cold_root,
            TopicPartition::new("read", 0),
            Arc::new(LogConfig::default()),
            ShardContext::default(),
        )
        .await
        .unwrap();
        (writer, cold)
    });
    let mut g = c.benchmark_group("partition_read_1mib");
    g.throughput(Throughput::Bytes(READ_BYTES as u64));
    for (name, p) in [("cache", hot), ("disk", cold)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let p = p.clone();
                ex.run(async move {
                    let start = Instant::now();
                    let mut off = 0i64;
                    for _ in 0..iters {
                        let r = p.read(Offset(off), READ_BYTES).await.unwrap();
                        assert!(!r.is_empty());
                        off = (off + 64 * 163) % (BATCHES * 163 - 64 * 163);
                    }
                    let d: Duration = start.elapsed();
                    d
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
