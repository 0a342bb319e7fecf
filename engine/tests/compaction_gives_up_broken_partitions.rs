//! A partition the cleaner cannot clean (a corrupt batch in a closed segment, a read error) is
//! marked uncleanable and skipped by later rounds, while the shard's other partitions go on
//! being cleaned; reads and appends of the uncleanable partition go on where the data allows,
//! and the mark does not survive a reopen (a broker restart).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failure should panic loudly.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use common::run;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::cleaner::{Cleaner, CleanerOptions};
use sluice_engine::compression::Codec;
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::io::{FaultPlan, IoBackend};
use sluice_engine::partition::{now_ms, Partition, ShardContext};
use sluice_engine::types::{Offset, TopicPartition};

fn compacted() -> Arc<LogConfig> {
    Arc::new(
        LogConfig::from_pairs([
            ("segment.bytes", "4096"),
            ("index.interval.bytes", "256"),
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0"),
        ])
        .unwrap(),
    )
}

async fn open(root: &Path, topic: &str, ctx: &ShardContext) -> Partition {
    Partition::open(
        root,
        TopicPartition::new(topic, 0),
        compacted(),
        ctx.clone(),
    )
    .await
    .unwrap()
}

/// Appends `rounds` batches, each one record of every key `0..8`; returns offset → (key, value).
async fn fill(p: &Partition, rounds: std::ops::Range<u32>) -> BTreeMap<i64, (String, String)> {
    let mut out = BTreeMap::new();
    for round in rounds {
        let mut b = BatchBuilder::new(Codec::None);
        let recs: Vec<(String, String)> = (0..8)
            .map(|k| {
                (
                    format!("key-{k}"),
                    format!("value-{round}-{}", "x".repeat(40)),
                )
            })
            .collect();
        for (k, v) in &recs {
            b.append(now_ms(), Some(k.as_bytes()), Some(v.as_bytes()), &[])
                .unwrap();
        }
        let info = p
            .append(b.build().unwrap(), Durability::Written)
            .await
            .unwrap();
        for (i, r) in recs.into_iter().enumerate() {
            out.insert(info.base_offset.0 + i as i64, r);
        }
    }
    p.flush().await.unwrap();
    out
}

/// Every record from `from` to the high watermark, CRCs checked, as text.
async fn records_from(p: &Partition, from: Offset) -> Vec<(i64, String, String)> {
    let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap()).unwrap();
    common::records_from(p, from)
        .await
        .into_iter()
        .map(|(off, k, v)| (off, text(k), text(v)))
        .collect()
}

/// The partition's `.log` files, oldest first.
fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Flips a byte inside the second batch's records of `log`: its CRC no longer matches.
fn corrupt_second_batch(log: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(log)
        .unwrap();
    let mut head = [0u8; 12];
    f.read_exact(&mut head).unwrap();
    let first_len = 12 + u64::from(u32::from_be_bytes([head[8], head[9], head[10], head[11]]));
    let at = first_len + 61 + 20;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_corrupt_segment_makes_its_partition_uncleanable_and_the_others_are_still_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let broken = open(&root, "broken", &ctx).await;
        let fine = open(&root, "fine", &ctx).await;
        let broken_data = fill(&broken, 0..30).await;
        let fine_data = fill(&fine, 0..30).await;
        let broken_logs = logs(broken.dir());
        assert!(broken_logs.len() >= 3, "{broken_logs:?}");
        corrupt_second_batch(&broken_logs[0]);
        let fine_bytes = fine.size_bytes();

        let mut cleaner = Cleaner::new(CleanerOptions::default());
        let parts = [broken.clone(), fine.clone()];
        let stats = cleaner.run_round(&parts, now_ms()).await;
        let reason = broken
            .uncleanable()
            .expect("the corrupt partition is given up");
        assert!(
            reason.to_lowercase().contains("crc") && !reason.contains("offline"),
            "{reason}"
        );
        assert!(fine.uncleanable().is_none());
        assert!(
            stats.passes >= 1 && stats.segments_replaced > 0,
            "{stats:?}"
        );
        assert!(
            fine.size_bytes() < fine_bytes,
            "the other partition is cleaned"
        );
        let u = cleaner.uncleanable();
        assert_eq!(u.partitions, 1, "{u:?}");
        assert!(u.bytes > 0, "{u:?}");
        // The cleaned partition keeps the latest value of every key, and fewer records.
        let cleaned = records_from(&fine, fine.log_start_offset()).await;
        assert!(cleaned.len() < fine_data.len());
        let latest: BTreeMap<&String, &String> = fine_data.values().map(|(k, v)| (k, v)).collect();
        let seen: BTreeMap<&String, &String> = cleaned.iter().map(|(_, k, v)| (k, v)).collect();
        assert_eq!(seen, latest);

        // Later rounds skip the uncleanable partition without reading it.
        let more = fill(&broken, 30..40).await;
        let before: Vec<(PathBuf, u64)> = logs(broken.dir())
            .into_iter()
            .map(|p| (p.clone(), std::fs::metadata(&p).unwrap().len()))
            .collect();
        let again = cleaner
            .run_round(std::slice::from_ref(&broken), now_ms())
            .await;
        assert_eq!(
            again,
            Default::default(),
            "nothing is read or cleaned: {again:?}"
        );
        assert_eq!(cleaner.uncleanable().partitions, 1);
        let after: Vec<(PathBuf, u64)> = logs(broken.dir())
            .into_iter()
            .map(|p| (p.clone(), std::fs::metadata(&p).unwrap().len()))
            .collect();
        assert_eq!(before, after);

        // Reads past the corrupt segment and appends go on.
        let second_base = Offset(
            broken_logs[1]
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap(),
        );
        let read = records_from(&broken, second_base).await;
        let expected: Vec<(i64, String, String)> = broken_data
            .iter()
            .chain(more.iter())
            .filter(|(o, _)| **o >= second_base.0)
            .map(|(o, (k, v))| (*o, k.clone(), v.clone()))
            .collect();
        assert_eq!(read, expected);

        // A restart forgets the mark: the cleaner tries again (and gives up again).
        broken.close().await.unwrap();
        let broken = open(&root, "broken", &ctx).await;
        assert!(broken.uncleanable().is_none());
        cleaner
            .run_round(std::slice::from_ref(&broken), now_ms())
            .await;
        assert!(broken.uncleanable().is_some());
        broken.close().await.unwrap();
        fine.close().await.unwrap();
    });
}

#[test]
fn a_read_error_makes_the_partition_uncleanable_and_it_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), || async move {
        let plan = Rc::new(FaultPlan::default());
        let ctx = ShardContext {
            io: IoBackend::Faulty(plan.clone()),
            ..ShardContext::default()
        };
        let p = open(&root, "eio", &ctx).await;
        let data = fill(&p, 0..30).await;
        let mut cleaner = Cleaner::new(CleanerOptions::default());
        plan.read_eio.set(true);
        cleaner.run_round(std::slice::from_ref(&p), now_ms()).await;
        plan.read_eio.set(false);
        let reason = p
            .uncleanable()
            .expect("a read error gives the partition up");
        assert!(reason.contains("Input/output error"), "{reason}");
        assert!(p.poisoned().is_none(), "reads and appends are not stopped");
        assert_eq!(cleaner.uncleanable().partitions, 1);
        // Later rounds leave it alone even though reads work again.
        let stats = cleaner.run_round(std::slice::from_ref(&p), now_ms()).await;
        assert_eq!(stats.passes, 0);
        let more = fill(&p, 30..32).await;
        let read = records_from(&p, Offset(0)).await;
        let expected: Vec<(i64, String, String)> = data
            .iter()
            .chain(more.iter())
            .map(|(o, (k, v))| (*o, k.clone(), v.clone()))
            .collect();
        assert_eq!(read, expected, "nothing was cleaned or lost");
        p.close().await.unwrap();
    });
}
