//! Memory of idle partitions: after one small append each, a partition holds no write buffer
//! (only its partial last sector), so thousands of partitions fit in little RSS. The default run
//! opens 500 partitions to keep the suite fast; `SLUICE_IDLE_PARTITIONS=10000` checks the
//! 10,000-partition target of the design (well under 1 GiB, aiming for < 64 KiB each).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failure should panic loudly.

mod common;

use std::sync::Arc;

use common::*;
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::types::TopicPartition;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn idle_partitions_cost_less_than_64_kib_each() {
    let n: usize = std::env::var("SLUICE_IDLE_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let cfg = Arc::new(LogConfig::default());
        let ctx = ShardContext::default();
        let before = rss_bytes();
        let mut parts = Vec::with_capacity(n);
        for i in 0..n {
            let p = Partition::open(
                &root,
                TopicPartition::new("idle", i as i32),
                cfg.clone(),
                ctx.clone(),
            )
            .await
            .unwrap();
            p.append(batch(1, 100, 1, i as u8), Durability::Written)
                .await
                .unwrap();
            assert!(p.write_buffer_bytes() <= 4096);
            parts.push(p);
        }
        let after = rss_bytes();
        let per = after.saturating_sub(before) / n as u64;
        eprintln!(
            "{n} idle partitions: RSS {} -> {} bytes, {per} bytes per partition",
            before, after
        );
        assert!(per < 64 * 1024, "{per} bytes per idle partition");
        assert!(after < 1 << 30);
    });
}
