//! Idempotent producers through `Partition::append`: retried batches are answered with their
//! original offsets and written once, sequence gaps and fenced epochs are refused with Kafka's
//! codes, and all of it holds after a clean restart (snapshot at close), after a crash (replay
//! of the active segment) and across segment rolls (snapshot at roll).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{open, read_all, run, small_segments};
use sluice_engine::batch::BatchIter;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::compression::Codec;
use sluice_engine::durability::Durability;
use sluice_engine::partition::ShardContext;
use sluice_engine::producer_state::{self, INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER};
use sluice_engine::types::Offset;

const PID: i64 = 4242;

/// A batch of `count` records from producer `PID` at `epoch`, sequences from `seq`.
fn idempotent(epoch: i16, seq: i32, count: i32) -> Bytes {
    let mut b = BatchBuilder::new(Codec::None).producer(PID, epoch, seq);
    for i in 0..count {
        let value = format!("seq-{}", seq + i);
        // A 200-byte key makes small segments roll after a few batches.
        b.append(
            1_700_000_000_000,
            Some(&[b'k'; 200]),
            Some(value.as_bytes()),
            &[],
        )
        .unwrap();
    }
    b.build().unwrap()
}

/// Every record value in the log, in offset order.
async fn values(p: &sluice_engine::partition::Partition) -> Vec<String> {
    let bytes = read_all(p, 0).await;
    let mut out = Vec::new();
    for item in BatchIter::new(&bytes) {
        let (_, view) = item.unwrap();
        let records = sluice_engine::records::RecordIter::new(view.records(), view.record_count());
        for r in records {
            out.push(String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

fn expected(n: i32) -> Vec<String> {
    (0..n).map(|i| format!("seq-{i}")).collect()
}

#[test]
fn retries_are_written_once_and_answered_with_the_first_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        let first = p
            .append(idempotent(0, 0, 3), Durability::Synced)
            .await
            .unwrap();
        let second = p
            .append(idempotent(0, 3, 2), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(
            (first.base_offset, second.base_offset),
            (Offset(0), Offset(3))
        );
        // Both batches retried, the older first: each answer is the original's.
        let again = p
            .append(idempotent(0, 0, 3), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(
            (again.base_offset, again.last_offset),
            (Offset(0), Offset(2))
        );
        let again = p
            .append(idempotent(0, 3, 2), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(
            (again.base_offset, again.last_offset),
            (Offset(3), Offset(4))
        );
        assert_eq!(p.log_end_offset(), Offset(5));

        let gap = p
            .append(idempotent(0, 7, 1), Durability::Synced)
            .await
            .unwrap_err();
        assert_eq!(gap.kafka_code(), OUT_OF_ORDER_SEQUENCE_NUMBER);
        let fenced = p.append(idempotent(-1, 5, 1), Durability::Synced).await;
        // Any epoch older than the producer's current one (0 here) is fenced.
        assert_eq!(fenced.unwrap_err().kafka_code(), INVALID_PRODUCER_EPOCH);

        // Several batches for the partition in one append may not include a producer's.
        let mut two = idempotent(0, 5, 1).to_vec();
        two.extend_from_slice(&idempotent(0, 6, 1));
        let err = p
            .append(Bytes::from(two), Durability::Synced)
            .await
            .unwrap_err();
        assert_eq!(err.kafka_code(), 87);
        assert_eq!(values(&p).await, expected(5));
        p.close().await.unwrap();
    });
}

#[test]
fn duplicates_are_still_recognized_after_a_clean_restart_a_crash_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        // Small segments: the 40 batches below roll several times (a snapshot each time).
        let cfg = small_segments(4096);
        let p = open(&root, &cfg, &ctx).await;
        for i in 0..40 {
            p.append(idempotent(0, i, 1), Durability::Synced)
                .await
                .unwrap();
        }
        assert!(p.segment_count() >= 3, "the log should have rolled twice");
        p.close().await.unwrap();
        drop(p);
        assert!(!producer_state::list_snapshots(&root.join("t-0"))
            .unwrap()
            .is_empty());

        // Clean restart: the close-time snapshot alone knows the last five batches.
        let p = open(&root, &cfg, &ctx).await;
        let dup = p
            .append(idempotent(0, 38, 1), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(dup.base_offset, Offset(38));
        p.append(idempotent(0, 40, 1), Durability::Synced)
            .await
            .unwrap();
        p.append(idempotent(0, 41, 1), Durability::Synced)
            .await
            .unwrap();
        // Crash: no close, so the newest snapshot is older than the log end and the batches
        // after it are replayed from the active segment.
        drop(p);

        let p = open(&root, &cfg, &ctx).await;
        let dup = p
            .append(idempotent(0, 41, 1), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(dup.base_offset, Offset(41));
        let gap = p
            .append(idempotent(0, 43, 1), Durability::Synced)
            .await
            .unwrap_err();
        assert_eq!(gap.kafka_code(), OUT_OF_ORDER_SEQUENCE_NUMBER);
        p.append(idempotent(0, 42, 1), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(values(&p).await, expected(43));
        p.close().await.unwrap();
    });
}

#[test]
fn truncation_forgets_the_cut_batches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        for i in 0..4 {
            p.append(idempotent(0, i * 2, 2), Durability::Synced)
                .await
                .unwrap();
        }
        assert_eq!(p.truncate_to(Offset(4)).await.unwrap(), Offset(4));
        // Sequences 4..8 were cut: writing them again is new data, not a duplicate.
        let again = p
            .append(idempotent(0, 4, 2), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(again.base_offset, Offset(4));
        assert_eq!(values(&p).await, expected(6));
        p.close().await.unwrap();
    });
}
