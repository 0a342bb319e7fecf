//! The partition API keeps Kafka's log semantics: offsets in call order, KIP-74 reads, offset
//! ranges, list-offsets by time, segment rolls, truncation, delete-records and retention, all
//! surviving a clean close and reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::*;
use sluice_engine::batch::{BatchIter, BatchView};
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::ShardContext;
use sluice_engine::retention::enforce_retention;
use sluice_engine::types::Offset;

#[test]
fn append_assigns_offsets_and_reads_back_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        let a = p
            .append(batch(3, 100, 1000, 1), Durability::Written)
            .await
            .unwrap();
        assert_eq!((a.base_offset, a.last_offset), (Offset(0), Offset(2)));
        assert_eq!(a.log_append_time, -1);
        // Two batches in one Produce blob.
        let mut two = batch(2, 50, 2000, 2).to_vec();
        two.extend_from_slice(&batch(1, 50, 3000, 3));
        let b = p
            .append(Bytes::from(two), Durability::Synced)
            .await
            .unwrap();
        assert_eq!((b.base_offset, b.last_offset), (Offset(3), Offset(5)));
        assert_eq!(p.high_watermark(), Offset(6));
        assert_eq!(p.durable_offset(), Offset(6));
        assert_eq!(p.log_end_offset(), Offset(6));

        // The batch containing offset 4 comes first; cached.
        let r = p.read(Offset(4), 1 << 20).await.unwrap();
        assert!(r.from_cache);
        let bytes = r.to_vec();
        let views: Vec<_> = BatchIter::new(&bytes).map(|b| b.unwrap().1).collect();
        assert_eq!(views[0].base_offset(), Offset(3));
        assert_eq!(views.len(), 2);
        // KIP-74: at least one whole batch even if max_bytes is tiny.
        let r = p.read(Offset(0), 1).await.unwrap();
        assert_eq!(r.len(), 161);
        assert_eq!(r.slices[0].len, 161);
        // At the high watermark: empty; past it or before start: out of range.
        assert!(p.read(Offset(6), 100).await.unwrap().is_empty());
        assert_eq!(p.read(Offset(7), 100).await.unwrap_err().kafka_code(), 1);
        assert_eq!(p.read(Offset(-1), 100).await.unwrap_err().kafka_code(), 1);

        // The same bytes come from disk after a reopen (cache empty).
        let before = read_all(&p, 0).await;
        p.close().await.unwrap();
        let ctx2 = ShardContext::default();
        let p = open(&root, &cfg, &ctx2).await;
        assert_eq!(p.log_end_offset(), Offset(6));
        let r = p.read(Offset(4), 1 << 20).await.unwrap();
        assert!(!r.from_cache);
        assert_eq!(read_all(&p, 0).await, before);
        let v = BatchView::parse(&before, 0).unwrap();
        v.validate(0, 1 << 20).unwrap();
        assert_eq!(
            p.append(batch(1, 10, 1, 9), Durability::Written)
                .await
                .unwrap()
                .base_offset,
            Offset(6)
        );
    });
}

#[test]
fn invalid_batches_are_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        let mut blob = batch(1, 10, 1, 1).to_vec();
        let mut bad = batch(1, 10, 1, 2).to_vec();
        bad[40] ^= 0xff;
        blob.extend_from_slice(&bad);
        let e = p
            .append(Bytes::from(blob), Durability::Written)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_code(), 2);
        assert_eq!(p.log_end_offset(), Offset(0));
        let e = p
            .append(Bytes::new(), Durability::Written)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_code(), 87);
        let cfg_small =
            std::sync::Arc::new(LogConfig::from_pairs([("max.message.bytes", "100")]).unwrap());
        let dir2 = root.join("other");
        let q = sluice_engine::partition::Partition::open(&dir2, tp(), cfg_small, ctx.clone())
            .await
            .unwrap();
        let e = q
            .append(batch(1, 200, 1, 1), Durability::Written)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_code(), 10);
        assert_eq!(
            p.append(batch(1, 10, 1, 1), Durability::Written)
                .await
                .unwrap()
                .base_offset,
            Offset(0)
        );
    });
}

#[test]
fn concurrent_appends_keep_call_order_and_coalesce_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let cfg = small_segments(64 << 20);
        let p = open(&root, &cfg, &ctx).await;
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let p = p.clone();
            tasks.push(glommio::spawn_local(async move {
                let info = p
                    .append(batch(1, 1000, i64::from(i), i as u8), Durability::Synced)
                    .await
                    .unwrap();
                (i, info.base_offset)
            }));
        }
        for t in tasks {
            let (i, off) = t.await;
            assert_eq!(off, Offset(i64::from(i)), "offsets follow call order");
        }
        assert_eq!(p.durable_offset(), Offset(200));
        // 200 synced appends share far fewer flush rounds.
        assert!(ctx.flusher.rounds() < 50, "rounds {}", ctx.flusher.rounds());
        assert!(
            p.write_buffer_bytes() <= 4096,
            "idle writer released its buffer"
        );
        let all = read_all(&p, 0).await;
        assert_eq!(BatchIter::new(&all).count(), 200);
    });
}

#[test]
fn offsets_follow_the_order_of_append_calls_not_of_polling_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        // Segments of 64 KiB and 20 KiB appends: a roll every few appends, and each roll makes
        // the append whose turn it is wait for I/O while later ones are already queued.
        let cfg = small_segments(64 << 10);
        let p = open(&root, &cfg, &ctx).await;
        let n = 60u32;
        let calls: Vec<_> = (0..n)
            .map(|i| p.append(batch(1, 20_000, i64::from(i), i as u8), Durability::Written))
            .collect();
        // One append is given up before it is ever polled: its place is skipped.
        let mut calls: Vec<_> = calls.into_iter().enumerate().collect();
        drop(calls.remove(7));
        // Poll the rest in reverse call order.
        let tasks: Vec<_> = calls
            .into_iter()
            .rev()
            .map(|(i, f)| glommio::spawn_local(async move { (i, f.await.unwrap().base_offset) }))
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await);
        }
        got.sort();
        for (rank, (i, off)) in got.iter().enumerate() {
            assert_eq!(*off, Offset(rank as i64), "call {i} got offset {off}");
        }
        assert!(p.segment_count() > 10, "segments {}", p.segment_count());
        // The log holds the records in call order: each batch's timestamp is its call index.
        let all = read_all(&p, 0).await;
        let stamps: Vec<i64> = BatchIter::new(&all)
            .map(|b| b.unwrap().1.max_timestamp())
            .collect();
        let expected: Vec<i64> = (0..i64::from(n)).filter(|&i| i != 7).collect();
        assert_eq!(stamps, expected);
    });
}

#[test]
fn segments_roll_and_indexes_serve_reads_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let cfg = small_segments(8192);
        let p = open(&root, &cfg, &ctx).await;
        for i in 0..100i64 {
            p.append(batch(2, 300, 10_000 + i * 10, i as u8), Durability::Written)
                .await
                .unwrap();
        }
        assert!(p.segment_count() >= 4, "segments {}", p.segment_count());
        let names: Vec<String> = std::fs::read_dir(p.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.contains(&"00000000000000000000.log".to_string()));
        assert!(names.contains(&"00000000000000000000.index".to_string()));
        assert!(names.contains(&"00000000000000000000.timeindex".to_string()));
        // Closed segments are exact: no padding.
        let first = std::fs::metadata(p.dir().join("00000000000000000000.log")).unwrap();
        assert_eq!(first.len() % 361, 0);
        let expect = read_all(&p, 0).await;
        p.close().await.unwrap();
        let p = open(&root, &cfg, &ShardContext::default()).await;
        assert_eq!(read_all(&p, 0).await, expect);
        for off in [0i64, 1, 57, 120, 199] {
            let r = p.read(Offset(off), 1).await.unwrap();
            let bytes = r.to_vec();
            let v = BatchView::parse(&bytes, 0).unwrap();
            assert!(v.base_offset().0 <= off && off <= v.last_offset().0);
        }
        let ts = |t| {
            let p = p.clone();
            async move { p.offset_for_timestamp(t).await.unwrap() }
        };
        assert_eq!(ts(-2).await, Some((Offset(0), -1)));
        assert_eq!(ts(-1).await, Some((Offset(200), -1)));
        assert_eq!(ts(-3).await, Some((Offset(199), 10_990)));
        assert_eq!(ts(0).await, Some((Offset(0), 10_000)));
        assert_eq!(ts(10_505).await, Some((Offset(102), 10_510)));
        assert_eq!(ts(10_510).await, Some((Offset(102), 10_510)));
        assert_eq!(ts(20_000).await, None);
    });
}

#[test]
fn truncate_delete_records_and_retention_move_the_log_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let cfg = small_segments(4096);
        let p = open(&root, &cfg, &ctx).await;
        for i in 0..60i64 {
            p.append(batch(1, 500, 1_000 + i, i as u8), Durability::Written)
                .await
                .unwrap();
        }
        let segs = p.segment_count();
        // Truncate into an earlier segment: later segments disappear.
        assert_eq!(p.truncate_to(Offset(30)).await.unwrap(), Offset(30));
        assert_eq!(p.log_end_offset(), Offset(30));
        assert!(p.segment_count() < segs);
        assert!(p.read(Offset(30), 100).await.unwrap().is_empty());
        let info = p
            .append(batch(1, 500, 5_000, 7), Durability::Written)
            .await
            .unwrap();
        assert_eq!(info.base_offset, Offset(30));
        // Delete records: persisted log start.
        assert_eq!(p.delete_records(Offset(12)).await.unwrap(), Offset(12));
        assert_eq!(p.read(Offset(11), 10).await.unwrap_err().kafka_code(), 1);
        assert_eq!(
            p.delete_records(Offset(99)).await.unwrap_err().kafka_code(),
            1
        );
        let before = read_all(&p, 12).await;
        p.close().await.unwrap();
        let p = open(&root, &cfg, &ShardContext::default()).await;
        assert_eq!(p.log_start_offset(), Offset(12));
        assert_eq!(p.log_end_offset(), Offset(31));
        assert_eq!(read_all(&p, 12).await, before);
        // Size retention keeps at least retention.bytes; the active segment is never deleted.
        let cfg_ret = std::sync::Arc::new(
            LogConfig::from_pairs([
                ("segment.bytes", "4096"),
                ("retention.bytes", "5000"),
                ("retention.ms", "-1"),
            ])
            .unwrap(),
        );
        p.close().await.unwrap();
        let p = sluice_engine::partition::Partition::open(
            &root,
            tp(),
            cfg_ret,
            ShardContext::default(),
        )
        .await
        .unwrap();
        let out = enforce_retention(&p, 0).await.unwrap();
        assert!(out.deleted_segments > 0);
        assert!(p.size_bytes() >= 5000, "size {}", p.size_bytes());
        assert_eq!(p.log_start_offset(), out.log_start_offset);
        assert!(p.read(out.log_start_offset, 10).await.is_ok());
        // Time retention with everything old: all closed segments go, the active one stays.
        let cfg_time = std::sync::Arc::new(
            LogConfig::from_pairs([("segment.bytes", "4096"), ("retention.ms", "1000")]).unwrap(),
        );
        p.close().await.unwrap();
        let p = sluice_engine::partition::Partition::open(
            &root,
            tp(),
            cfg_time,
            ShardContext::default(),
        )
        .await
        .unwrap();
        let out = enforce_retention(&p, 1_000_000).await.unwrap();
        assert_eq!(p.segment_count(), 1);
        assert!(out.log_start_offset > Offset(12));
        let _ = Rc::new(());
    });
}

#[test]
fn log_append_time_topics_stamp_batches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let cfg = std::sync::Arc::new(
            LogConfig::from_pairs([("message.timestamp.type", "LogAppendTime")]).unwrap(),
        );
        let p = open(&root, &cfg, &ShardContext::default()).await;
        let info = p
            .append(batch(1, 10, 5, 1), Durability::Written)
            .await
            .unwrap();
        assert!(info.log_append_time > 1_600_000_000_000);
        let r = p.read(Offset(0), 100).await.unwrap();
        let bytes = r.to_vec();
        let v = BatchView::parse(&bytes, 0).unwrap();
        v.validate(0, 1 << 20).unwrap();
        assert_eq!(v.max_timestamp(), info.log_append_time);
    });
}

#[test]
fn segment_ms_rolls_and_flush_settings_make_data_durable_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        // segment.ms: the next append after the deadline rolls.
        let cfg = std::sync::Arc::new(LogConfig::from_pairs([("segment.ms", "20")]).unwrap());
        let p = sluice_engine::partition::Partition::open(
            &root.join("a"),
            tp(),
            cfg,
            ShardContext::default(),
        )
        .await
        .unwrap();
        p.append(batch(1, 10, 1, 1), Durability::Written)
            .await
            .unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(30)).await;
        p.append(batch(1, 10, 2, 1), Durability::Written)
            .await
            .unwrap();
        assert_eq!(p.segment_count(), 2);

        // flush.messages=3: the third unflushed record triggers a background fdatasync.
        let cfg = std::sync::Arc::new(LogConfig::from_pairs([("flush.messages", "3")]).unwrap());
        let ctx = ShardContext::default();
        let p = sluice_engine::partition::Partition::open(&root.join("b"), tp(), cfg, ctx.clone())
            .await
            .unwrap();
        for i in 0..2 {
            p.append(batch(1, 10, i, 1), Durability::Written)
                .await
                .unwrap();
        }
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(p.durable_offset(), Offset(0), "below flush.messages");
        p.append(batch(1, 10, 3, 1), Durability::Written)
            .await
            .unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(p.durable_offset(), Offset(3));

        // flush.ms=10: unsynced data becomes durable within about that delay.
        let cfg = std::sync::Arc::new(LogConfig::from_pairs([("flush.ms", "10")]).unwrap());
        let p = sluice_engine::partition::Partition::open(&root.join("c"), tp(), cfg, ctx)
            .await
            .unwrap();
        p.append(batch(1, 10, 1, 1), Durability::Buffered)
            .await
            .unwrap();
        assert_eq!(p.durable_offset(), Offset(0));
        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(p.durable_offset(), Offset(1));
    });
}
