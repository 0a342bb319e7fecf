//! Faults injected through the io seam: EIO on write fails the append and acknowledges
//! nothing; a torn write leaves a tail that recovery removes; a failed fdatasync poisons the
//! partition for good (never retried); a read error is reported without poisoning.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

mod common;

use std::rc::Rc;

use common::*;
use sluice_engine::durability::Durability;
use sluice_engine::io::{FaultPlan, IoBackend, WriteFault};
use sluice_engine::partition::ShardContext;
use sluice_engine::recovery::TailCase;
use sluice_engine::types::Offset;

fn faulty_ctx() -> (ShardContext, Rc<FaultPlan>) {
    let plan = Rc::new(FaultPlan::default());
    let ctx = ShardContext {
        io: IoBackend::Faulty(plan.clone()),
        ..ShardContext::default()
    };
    (ctx, plan)
}

#[test]
fn eio_on_write_fails_the_append_and_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let (ctx, plan) = faulty_ctx();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        for i in 0..5 {
            p.append(batch(1, 100, i, 1), Durability::Written)
                .await
                .unwrap();
        }
        let good = read_all(&p, 0).await;
        plan.write_fault.set(Some(WriteFault::Eio));
        let e = p
            .append(batch(1, 100, 9, 2), Durability::Written)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_code(), 56);
        assert_eq!(p.high_watermark(), Offset(5), "nothing new is visible");
        // Poisoned: later appends fail without touching the disk.
        let writes = plan.writes.get();
        let e = p
            .append(batch(1, 100, 9, 3), Durability::Buffered)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_code(), 56);
        assert_eq!(plan.writes.get(), writes);
        drop(p);
        let p = open(&root, &cfg, &ShardContext::default()).await;
        assert_eq!(p.log_end_offset(), Offset(5));
        assert_eq!(read_all(&p, 0).await, good);
    });
}

#[test]
fn torn_write_is_not_acknowledged_and_recovery_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let (ctx, plan) = faulty_ctx();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        for i in 0..3 {
            p.append(batch(1, 1000, i, 1), Durability::Synced)
                .await
                .unwrap();
        }
        let good = read_all(&p, 0).await;
        // A 40 KB batch of which only the first two sectors of the write land.
        plan.write_fault.set(Some(WriteFault::Torn { sectors: 2 }));
        let e = p
            .append(batch(4, 40_000, 9, 2), Durability::Synced)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_code(), 56);
        assert_eq!(p.durable_offset(), Offset(3));
        drop(p);
        let p = open(&root, &cfg, &ShardContext::default()).await;
        assert_eq!(p.open_report().tail.case, TailCase::TornBatch);
        assert_eq!(p.log_end_offset(), Offset(3));
        assert_eq!(read_all(&p, 0).await, good);
    });
}

#[test]
fn failed_fdatasync_poisons_the_partition_and_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let (ctx, plan) = faulty_ctx();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        p.append(batch(1, 100, 1, 1), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(p.durable_offset(), Offset(1));
        plan.sync_eio.set(true);
        let e = p
            .append(batch(1, 100, 2, 1), Durability::Synced)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_code(), 56);
        assert!(e.to_string().contains("fdatasync"), "{e}");
        assert_eq!(p.durable_offset(), Offset(1));
        // Even with the disk healthy again, the partition stays poisoned and does not sync.
        plan.sync_eio.set(false);
        let syncs = plan.syncs.get();
        for d in [
            Durability::Buffered,
            Durability::Written,
            Durability::Synced,
        ] {
            assert_eq!(
                p.append(batch(1, 100, 3, 1), d)
                    .await
                    .unwrap_err()
                    .kafka_code(),
                56
            );
        }
        assert_eq!(p.flush().await.unwrap_err().kafka_code(), 56);
        assert!(p.poisoned().is_some());
        assert_eq!(plan.syncs.get(), syncs);
        // Other partitions of the shard keep working through the same flusher.
        let other = sluice_engine::partition::Partition::open(
            &root,
            sluice_engine::types::TopicPartition::new("u", 1),
            cfg.clone(),
            ShardContext {
                io: IoBackend::Direct,
                ..ctx.clone()
            },
        )
        .await
        .unwrap();
        other
            .append(batch(1, 100, 1, 1), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(other.durable_offset(), Offset(1));
    });
}

#[test]
fn read_errors_are_reported_without_poisoning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let (ctx, plan) = faulty_ctx();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        p.append(batch(1, 100, 1, 1), Durability::Written)
            .await
            .unwrap();
        p.close().await.unwrap();
        let p = open(&root, &cfg, &ctx).await;
        plan.read_eio.set(true);
        assert_eq!(p.read(Offset(0), 100).await.unwrap_err().kafka_code(), 56);
        plan.read_eio.set(false);
        assert_eq!(p.read(Offset(0), 100).await.unwrap().len(), 161);
        p.append(batch(1, 100, 1, 1), Durability::Written)
            .await
            .unwrap();
    });
}

/// A batch larger than one device write is written in two; when the second write fails (a
/// full disk), only whole batches may survive recovery, and later appends must be readable.
/// (That an fdatasync round running while the written bytes end inside such a batch still
/// records a batch boundary is checked deterministically by
/// `the_written_mark_never_falls_inside_a_batch`, since this interleaving varies.)
#[test]
fn a_batch_half_written_when_a_write_fails_is_removed_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let (ctx, plan) = faulty_ctx();
        let cfg = std::sync::Arc::new(
            sluice_engine::config::LogConfig::from_pairs([
                ("segment.bytes", "67108864"),
                ("max.message.bytes", "8388608"),
            ])
            .unwrap(),
        );
        let p = open(&root, &cfg, &ctx).await;
        p.append(batch(1, 1000, 1, 1), Durability::Synced)
            .await
            .unwrap();
        // The next device write carries a small acks=all batch and the first 2 MB of a 3 MB
        // batch; the write after it, with the rest of the big batch, fails.
        plan.writes_before_fault.set(2);
        plan.write_fault.set(Some(WriteFault::Eio));
        let small = p.append(batch(1, 1000, 2, 2), Durability::Synced);
        let big = p.append(batch(1, 3 << 20, 3, 3), Durability::Buffered);
        // Either may fail: the partition is poisoned by the failed write, possibly before
        // the small batch's fdatasync round completes.
        let _ = futures_lite::future::zip(small, big).await;
        drop(p);

        let p = open(&root, &cfg, &ShardContext::default()).await;
        let end = p.log_end_offset().0;
        assert!(
            end == 1 || end == 2,
            "only whole batches survive, got log end {end}"
        );
        p.append(batch(1, 1000, 4, 4), Durability::Synced)
            .await
            .unwrap();
        // Every batch reads back, the new one right after the surviving ones.
        let all = read_all(&p, 0).await;
        let bases: Vec<i64> = sluice_engine::batch::BatchIter::new(&all)
            .map(|item| item.unwrap().1.base_offset().0)
            .collect();
        assert_eq!(bases, (0..=end).collect::<Vec<i64>>());
        p.close().await.unwrap();
    });
}

/// The writer's mark (what fdatasync rounds record as the recovery point, and how far readers
/// may read) always names a batch boundary, even when a failed write leaves the written bytes
/// ending inside a batch that spans several writes. Whichever of the writes fails, the mark is
/// the end of the last whole batch.
#[test]
fn the_written_mark_never_falls_inside_a_batch() {
    use std::cell::Cell;

    use sluice_engine::segment::Segment;
    use sluice_engine::segment_writer::SegmentWriter;

    let small = Rc::new(vec![7u8; 1000]);
    let big = Rc::new(vec![9u8; 3 << 20]);
    // Fail the first write, then the second, ... until the writes of both batches all pass.
    let mut failing_writes = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let fired = Rc::new(Cell::new(false));
        let (small, big, fired_in) = (small.clone(), big.clone(), fired.clone());
        run(dir.path(), move || async move {
            let (ctx, plan) = faulty_ctx();
            let seg = Rc::new(
                Segment::open(&root, Offset(0), &ctx.io, true)
                    .await
                    .unwrap(),
            );
            let writer = SegmentWriter::new(
                seg.clone(),
                0,
                Vec::new(),
                Offset(0),
                ctx.write_latency.clone(),
            );
            plan.writes_before_fault.set(failing_writes);
            plan.write_fault.set(Some(WriteFault::Eio));
            writer.append(&[&small], Offset(1));
            writer.append(&[&big], Offset(2));
            let failed = writer.drain().await.is_err();
            fired_in.set(failed);
            let (pos, next) = writer.written_mark();
            let boundary = match next.0 {
                0 => 0,
                1 => small.len() as u64,
                2 if !failed => (small.len() + big.len()) as u64,
                other => panic!("offset {other} is not written when a write failed"),
            };
            assert_eq!(
                pos, boundary,
                "mark inside a batch (write {failing_writes} failed)"
            );
            assert_eq!(seg.readable(), boundary, "readers may read a partial batch");
        });
        if !fired.get() {
            break;
        }
        failing_writes += 1;
    }
    // The big batch spans more than one write, so some failure fell inside it.
    assert!(failing_writes >= 2, "only {failing_writes} writes");
}
