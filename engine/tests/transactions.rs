//! Transactions in the engine: markers end transactions and move the last stable offset (LSO),
//! are refused for fenced producer or coordinator epochs, and aborts are indexed so that a
//! `read_committed` fetch learns which transactions to drop; the LSO and the index come back
//! the same after a clean restart, after a crash (with a torn or missing index file), across
//! segment rolls, and follow truncation and deleted segments.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use common::{open, run, small_segments};
use sluice_engine::batch::BatchIter;
use sluice_engine::builder::{control_marker_batch, BatchBuilder};
use sluice_engine::compression::Codec;
use sluice_engine::durability::Durability;
use sluice_engine::error::kafka_codes::INVALID_RECORD;
use sluice_engine::partition::{Partition, SendPiece, SendRead, ShardContext};
use sluice_engine::producer_state::{INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED};
use sluice_engine::txn_index::{txn_index_file_name, AbortedTxn};
use sluice_engine::types::Offset;

/// A batch of `count` records; transactional for producer `pid` when `pid >= 0`.
fn records(pid: i64, epoch: i16, seq: i32, count: i32) -> Bytes {
    let mut b = BatchBuilder::new(Codec::None);
    if pid >= 0 {
        b = b.producer(pid, epoch, seq).transactional(true);
    }
    for i in 0..count {
        // 300-byte values make small segments roll every few batches.
        b.append(
            1_700_000_000_000 + i64::from(i),
            None,
            Some(&[b'v'; 300]),
            &[],
        )
        .unwrap();
    }
    b.build().unwrap()
}

/// The bytes of a send read, whether they are cached buffers or file ranges.
fn send_bytes(r: &SendRead) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in &r.pieces {
        match piece {
            SendPiece::Mem(b) => out.extend_from_slice(b),
            SendPiece::File { file, pos, len } => {
                let mut buf = vec![0u8; *len as usize];
                file.read_exact_at(&mut buf, *pos).unwrap();
                out.extend_from_slice(&buf);
            }
        }
    }
    out
}

/// The (base offset, next offset) of every batch in `bytes`.
fn batch_ranges(bytes: &[u8]) -> Vec<(i64, i64)> {
    BatchIter::new(bytes)
        .map(|item| {
            let (_, v) = item.unwrap();
            (v.base_offset().0, v.next_offset().0)
        })
        .collect()
}

fn aborted(pid: i64, first: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id: pid,
        first_offset: Offset(first),
    }
}

#[test]
fn markers_end_transactions_and_move_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &small_segments(1 << 20), &ctx).await;
        let w = Durability::Written;
        p.append(records(-1, -1, -1, 2), w).await.unwrap(); // 0..2
        p.append(records(10, 0, 0, 2), w).await.unwrap(); // 2..4, txn A
        p.append(records(11, 2, 0, 1), w).await.unwrap(); // 4, txn B
        p.append(records(-1, -1, -1, 1), w).await.unwrap(); // 5
        assert_eq!(p.high_watermark(), Offset(6));
        assert_eq!(p.last_stable_offset(), Offset(2));

        // A read bounded by the LSO stops before the open transactions.
        let r = p
            .read_for_send_below(Offset(0), 1 << 20, Offset(2))
            .await
            .unwrap();
        assert_eq!(batch_ranges(&send_bytes(&r)), vec![(0, 2)]);
        assert_eq!(r.upper_bound, Offset(2));
        let r = p
            .read_for_send_below(Offset(2), 1 << 20, Offset(2))
            .await
            .unwrap();
        assert!(r.is_empty());

        // Abort A: the LSO moves to B's start, A is indexed.
        let at = p.append_marker(10, 0, false, 1).await.unwrap();
        assert_eq!(at, Offset(6));
        assert!(
            p.durable_offset() > at,
            "a marker resolves once it is durable"
        );
        assert_eq!(p.last_stable_offset(), Offset(4));
        assert_eq!(
            p.aborted_transactions(Offset(0), Offset(10)).unwrap(),
            vec![aborted(10, 2)]
        );

        // Fenced markers change nothing.
        let stale_epoch = p.append_marker(11, 1, true, 0).await.unwrap_err();
        assert_eq!(stale_epoch.kafka_code(), INVALID_PRODUCER_EPOCH);
        let stale_coordinator = p.append_marker(10, 0, false, 0).await.unwrap_err();
        assert_eq!(
            stale_coordinator.kafka_code(),
            TRANSACTION_COORDINATOR_FENCED
        );
        assert_eq!(p.log_end_offset(), Offset(7));

        // Commit B: everything is stable; a commit is not indexed.
        assert_eq!(p.append_marker(11, 2, true, 0).await.unwrap(), Offset(7));
        assert_eq!(p.last_stable_offset(), Offset(8));
        assert_eq!(p.last_stable_offset(), p.high_watermark());
        let r = p
            .read_for_send_below(Offset(0), 1 << 20, Offset(8))
            .await
            .unwrap();
        assert_eq!(
            batch_ranges(&send_bytes(&r)),
            vec![(0, 2), (2, 4), (4, 5), (5, 6), (6, 7), (7, 8)]
        );
        assert_eq!(
            p.aborted_transactions(Offset(3), Offset(8)).unwrap(),
            vec![aborted(10, 2)]
        );
        assert!(p
            .aborted_transactions(Offset(7), Offset(8))
            .unwrap()
            .is_empty());
        assert!(p
            .aborted_transactions(Offset(0), Offset(2))
            .unwrap()
            .is_empty());

        // Producers may not write markers themselves.
        let forged = control_marker_batch(true, 0, 12, 0, 1).unwrap();
        let refused = p.append(forged, w).await.unwrap_err();
        assert_eq!(refused.kafka_code(), INVALID_RECORD);
        assert_eq!(p.log_end_offset(), Offset(8));
        p.close().await.unwrap();
    });
}

/// What the test expects of the log: aborted transactions (producer, first, marker offset)
/// and the open one's first offset.
#[derive(Default)]
struct Model {
    aborted: Vec<(i64, i64, i64)>,
}

impl Model {
    fn expect(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|(_, first, last)| *last >= from && *first < upto)
            .map(|(pid, first, _)| aborted(*pid, *first))
            .collect()
    }
}

/// Writes `n` transactions of producers `pid0..pid0+n`, each two batches with plain data
/// between them, every third one committed and the others aborted.
async fn transactions(p: &Partition, model: &mut Model, pid0: i64, n: i64) {
    for pid in pid0..pid0 + n {
        let first = p
            .append(records(pid, 0, 0, 2), Durability::Written)
            .await
            .unwrap();
        p.append(records(-1, -1, -1, 3), Durability::Written)
            .await
            .unwrap();
        p.append(records(pid, 0, 2, 1), Durability::Written)
            .await
            .unwrap();
        let commit = pid % 3 == 0;
        let at = p.append_marker(pid, 0, commit, 0).await.unwrap();
        if !commit {
            model.aborted.push((pid, first.base_offset.0, at.0));
        }
    }
}

/// Checks the index against the model for many ranges, and the LSO.
fn check(p: &Partition, model: &Model, lso: Offset) {
    let end = p.log_end_offset().0;
    let start = p.log_start_offset().0;
    for from in (start..end).step_by(3) {
        for upto in [from + 1, from + 7, end] {
            assert_eq!(
                p.aborted_transactions(Offset(from), Offset(upto)).unwrap(),
                model.expect(from, upto),
                "[{from}, {upto})"
            );
        }
    }
    assert_eq!(p.last_stable_offset(), lso);
}

#[test]
fn the_index_and_the_lso_survive_restarts_crashes_rolls_truncation_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        // About four batches per segment: transactions span segments and markers land in
        // later segments than their transactions' starts.
        let cfg = small_segments(4096);
        let mut model = Model::default();
        let p = open(&root, &cfg, &ctx).await;
        transactions(&p, &mut model, 100, 12).await;
        // One transaction stays open across everything below.
        let open_first = p
            .append(records(999, 0, 0, 1), Durability::Synced)
            .await
            .unwrap()
            .base_offset;
        transactions(&p, &mut model, 200, 3).await;
        assert!(p.segment_count() > 5, "the test needs rolls");
        check(&p, &model, open_first);

        // Clean restart.
        p.close().await.unwrap();
        drop(p);
        let p = open(&root, &cfg, &ctx).await;
        check(&p, &model, open_first);

        // Crash: no close; the active segment's index file loses its last entry's tail.
        transactions(&p, &mut model, 300, 4).await;
        p.flush().await.unwrap();
        let active = *p_segment_bases(&root).last().unwrap();
        let path = root.join("t-0").join(txn_index_file_name(Offset(active)));
        if let Ok(len) = std::fs::metadata(&path).map(|m| m.len()) {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(len - 5).unwrap();
        }
        drop(p);
        let p = open(&root, &cfg, &ctx).await;
        check(&p, &model, open_first);

        // Crash with the active segment's index file gone altogether.
        transactions(&p, &mut model, 400, 2).await;
        p.flush().await.unwrap();
        let active = *p_segment_bases(&root).last().unwrap();
        let _ = std::fs::remove_file(root.join("t-0").join(txn_index_file_name(Offset(active))));
        drop(p);
        let p = open(&root, &cfg, &ctx).await;
        check(&p, &model, open_first);

        // Truncation in the middle of the 300s: later entries go, and their files.
        let (_, _, cut_marker) = model.aborted.iter().copied().find(|a| a.0 == 301).unwrap();
        let new_end = p.truncate_to(Offset(cut_marker)).await.unwrap();
        model.aborted.retain(|a| a.2 < new_end.0);
        check(&p, &model, open_first);
        for base in p_segment_bases(&root) {
            assert!(base < new_end.0 || !txn_file_exists(&root, base));
        }
        p.close().await.unwrap();
        drop(p);
        let p = open(&root, &cfg, &ctx).await;
        check(&p, &model, open_first);

        // The cut took 301's marker, so its transaction is open again; ending it and the
        // long-open one makes everything stable.
        let first_301 = model_first(&p, 301).await;
        let at = p.append_marker(301, 0, false, 0).await.unwrap();
        model.aborted.push((301, first_301, at.0));
        let at = p.append_marker(999, 0, false, 0).await.unwrap();
        model.aborted.push((999, open_first.0, at.0));
        check(&p, &model, p.high_watermark());

        // Deleting records drops whole segments with their index files.
        let before = p_segment_bases(&root);
        let start = p.delete_records(Offset(open_first.0 - 1)).await.unwrap();
        let after = p_segment_bases(&root);
        assert!(after.len() < before.len());
        for gone in before.iter().filter(|b| !after.contains(b)) {
            assert!(
                !txn_file_exists(&root, *gone),
                "index of deleted segment {gone}"
            );
        }
        assert!(after[0] <= start.0);
        check(&p, &model, p.high_watermark());
        p.close().await.unwrap();
    });
}

/// The first offset of `pid`'s first batch in the log.
async fn model_first(p: &Partition, pid: i64) -> i64 {
    let bytes = common::read_all(p, p.log_start_offset().0).await;
    BatchIter::new(&bytes)
        .map(|item| item.unwrap().1)
        .find(|v| v.producer_id() == pid)
        .map(|v| v.base_offset().0)
        .unwrap()
}

/// The bases of the partition's segment files, ascending.
fn p_segment_bases(root: &std::path::Path) -> Vec<i64> {
    let mut out: Vec<i64> = std::fs::read_dir(root.join("t-0"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    out.sort_unstable();
    out
}

fn txn_file_exists(root: &std::path::Path, base: i64) -> bool {
    root.join("t-0")
        .join(txn_index_file_name(Offset(base)))
        .exists()
}
