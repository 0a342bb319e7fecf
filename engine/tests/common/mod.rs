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

/// A record read back from a partition: offset, key, value.
pub type StoredRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record from `from` to the high watermark, with every batch's CRC and records checked
/// and offsets checked to increase.
pub async fn records_from(p: &Partition, from: sluice_engine::types::Offset) -> Vec<StoredRecord> {
    let mut out: Vec<StoredRecord> = Vec::new();
    let mut at = from;
    let hw = p.high_watermark();
    while at < hw {
        let bytes = p.read(at, 64 * 1024).await.unwrap().to_vec();
        assert!(
            !bytes.is_empty(),
            "read at {at} below the high watermark {hw} returned nothing"
        );
        let mut next = at;
        for item in sluice_engine::batch::BatchIter::new(&bytes) {
            let (_, v) = item.unwrap();
            v.validate_stored(0, 1 << 26).unwrap();
            let d = sluice_engine::records::decode_records(
                v.attributes(),
                v.records(),
                v.record_count(),
                1 << 26,
            )
            .unwrap();
            for r in d.iter() {
                let r = r.unwrap();
                let off = v.base_offset().0 + i64::from(r.offset_delta);
                if off < at.0 {
                    continue;
                }
                if let Some((last, _, _)) = out.last() {
                    assert!(off > *last, "offsets not increasing: {last} then {off}");
                }
                out.push((off, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
            }
            next = v.next_offset();
        }
        assert!(next > at, "no progress at {at}");
        at = next;
    }
    out
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
