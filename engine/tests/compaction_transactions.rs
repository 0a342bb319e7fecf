//! The cleaner and producers: aborted transactional records are removed, transaction markers
//! stay while their transaction's batches remain and go after their delete horizon, an open
//! transaction bounds what is cleaned (the last stable offset), and the last batch of an
//! idempotent producer survives as an empty batch so the producer's next sequence is accepted
//! after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failure should panic loudly.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use sluice_engine::batch::BatchIter;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::cleaner::{Cleaner, CleanerOptions};
use sluice_engine::compression::Codec;
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{now_ms, Partition, ShardContext};
use sluice_engine::records::decode_records;

fn config() -> Arc<LogConfig> {
    Arc::new(
        LogConfig::from_pairs([
            ("segment.bytes", "4096"),
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0"),
            ("delete.retention.ms", "0"),
        ])
        .unwrap(),
    )
}

/// A batch of `records` (key, value); `producer` is (id, epoch, base sequence, transactional).
fn batch(records: &[(&str, Option<&str>)], producer: Option<(i64, i16, i32, bool)>) -> Bytes {
    let mut b = BatchBuilder::new(Codec::None);
    if let Some((id, epoch, seq, txn)) = producer {
        b = b.producer(id, epoch, seq).transactional(txn);
    }
    for (k, v) in records {
        b.append(now_ms(), Some(k.as_bytes()), v.map(str::as_bytes), &[])
            .unwrap();
    }
    b.build().unwrap()
}

async fn put(
    p: &Partition,
    records: &[(&str, Option<&str>)],
    producer: Option<(i64, i16, i32, bool)>,
) {
    p.append(batch(records, producer), Durability::Written)
        .await
        .unwrap();
}

/// Rolls the active segment: large filler records under one key.
async fn roll(p: &Partition) {
    let filler = "f".repeat(3000);
    put(p, &[("filler", Some(&filler))], None).await;
    put(p, &[("filler", Some(&filler))], None).await;
}

#[derive(Debug, Default)]
struct View {
    /// (key, value) of data records, in offset order.
    data: Vec<(String, Option<String>)>,
    /// (producer id, commit?) of markers.
    markers: Vec<(i64, bool)>,
    /// (producer id, base offset, last offset) of batches without records.
    empty: Vec<(i64, i64, i64)>,
}

async fn view(p: &Partition) -> View {
    let mut out = View::default();
    let mut at = p.log_start_offset();
    while at < p.high_watermark() {
        let bytes = p.read(at, 1 << 20).await.unwrap().to_vec();
        for item in BatchIter::new(&bytes) {
            let (_, v) = item.unwrap();
            v.validate_stored(0, 1 << 26).unwrap();
            at = v.next_offset();
            if v.record_count() == 0 {
                out.empty
                    .push((v.producer_id(), v.base_offset().0, v.last_offset().0));
                continue;
            }
            let d = decode_records(v.attributes(), v.records(), v.record_count(), 1 << 26).unwrap();
            for r in d.iter() {
                let r = r.unwrap();
                let key = r.key.unwrap();
                if v.is_control() {
                    out.markers.push((v.producer_id(), key[3] == 1));
                } else {
                    out.data.push((
                        String::from_utf8(key.to_vec()).unwrap(),
                        r.value.map(|x| String::from_utf8(x.to_vec()).unwrap()),
                    ));
                }
            }
        }
    }
    out.data.retain(|(k, _)| k != "filler");
    out
}

fn has(v: &View, k: &str, val: &str) -> bool {
    v.data
        .iter()
        .any(|(a, b)| a == k && b.as_deref() == Some(val))
}

#[test]
fn aborted_records_go_and_markers_stay_until_their_transactions_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = config();
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        put(
            &p,
            &[("k1", Some("a1")), ("k2", Some("a2"))],
            Some((1, 0, 0, true)),
        )
        .await;
        p.append_marker(1, 0, false, 0).await.unwrap();
        put(&p, &[("k1", Some("b1"))], Some((2, 0, 0, true))).await;
        p.append_marker(2, 0, true, 0).await.unwrap();
        put(&p, &[("k3", Some("x"))], None).await;
        put(&p, &[("k2", Some("c2"))], Some((1, 0, 2, true))).await;
        p.append_marker(1, 0, true, 0).await.unwrap();
        roll(&p).await;
        let mut cleaner = Cleaner::new(CleanerOptions::default());
        cleaner.clean(&p, now_ms()).await.unwrap();
        let v = view(&p).await;
        assert!(
            !has(&v, "k1", "a1") && !has(&v, "k2", "a2"),
            "aborted records removed: {v:?}"
        );
        assert!(
            has(&v, "k1", "b1") && has(&v, "k2", "c2") && has(&v, "k3", "x"),
            "{v:?}"
        );
        assert_eq!(
            v.markers,
            vec![(1, false), (2, true), (1, true)],
            "every marker stays"
        );

        // k1's committed value is superseded: its batch goes, but as producer 2's last batch
        // it stays, empty, and so does its commit marker. The abort marker has no batch left:
        // it gets its horizon (delete.retention.ms = 0) and goes in the pass after.
        put(&p, &[("k1", Some("n1"))], None).await;
        roll(&p).await;
        cleaner.clean(&p, now_ms() + 1).await.unwrap();
        assert_eq!(
            view(&p).await.markers,
            vec![(1, false), (2, true), (1, true)]
        );
        put(&p, &[("k3", Some("y"))], None).await;
        roll(&p).await;
        cleaner.clean(&p, now_ms() + 2).await.unwrap();
        let v = view(&p).await;
        assert_eq!(
            v.markers,
            vec![(2, true), (1, true)],
            "the abort marker went: {v:?}"
        );
        assert!(
            !has(&v, "k1", "b1") && has(&v, "k1", "n1") && has(&v, "k2", "c2"),
            "{v:?}"
        );
        assert!(
            v.empty.iter().any(|(pid, _, _)| *pid == 2),
            "producer 2's last batch kept empty: {v:?}"
        );
        p.close().await.unwrap();
    });
}

#[test]
fn an_open_transaction_bounds_the_cleaning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = config();
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        put(&p, &[("k", Some("1"))], None).await;
        put(&p, &[("t", Some("open"))], Some((7, 0, 0, true))).await;
        put(&p, &[("k", Some("2"))], None).await;
        roll(&p).await;
        put(&p, &[("k", Some("3"))], None).await;
        roll(&p).await;
        let lso = p.last_stable_offset();
        Cleaner::new(CleanerOptions::default())
            .clean(&p, now_ms())
            .await
            .unwrap();
        let v = view(&p).await;
        // Below the open transaction: k=1 is superseded by k=2 and k=3, both at or above the
        // last stable offset, which the cleaner does not map.
        assert_eq!(lso.0, 1);
        assert!(
            has(&v, "k", "1") && has(&v, "k", "2") && has(&v, "k", "3"),
            "{v:?}"
        );
        p.append_marker(7, 0, true, 0).await.unwrap();
        roll(&p).await;
        Cleaner::new(CleanerOptions::default())
            .clean(&p, now_ms())
            .await
            .unwrap();
        let v = view(&p).await;
        assert!(
            !has(&v, "k", "1") && !has(&v, "k", "2") && has(&v, "k", "3"),
            "{v:?}"
        );
        assert!(has(&v, "t", "open"));
        p.close().await.unwrap();
    });
}

#[test]
fn an_idempotent_producers_last_batch_survives_empty_and_its_sequence_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = config();
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        put(
            &p,
            &[("a", Some("1")), ("b", Some("1"))],
            Some((5, 0, 0, false)),
        )
        .await;
        put(&p, &[("a", Some("2")), ("b", Some("2"))], None).await;
        roll(&p).await;
        Cleaner::new(CleanerOptions::default())
            .clean(&p, now_ms())
            .await
            .unwrap();
        let v = view(&p).await;
        assert_eq!(
            v.empty,
            vec![(5, 0, 1)],
            "offsets 0-1 kept as an empty batch: {v:?}"
        );
        assert!(!has(&v, "a", "1") && has(&v, "a", "2"));
        p.close().await.unwrap();
        let p = open(&root, &cfg, &ctx).await;
        // The producer's next batch continues its sequence after the restart.
        put(&p, &[("a", Some("3"))], Some((5, 0, 2, false))).await;
        assert!(has(&view(&p).await, "a", "3"));
        p.close().await.unwrap();
    });
}
