//! Recovery under `TolerateCorruptTail` against real mangled files: garbage appended, a batch cut
//! in half, a CRC byte flipped (last batch → truncated; earlier → partition offline), a zeroed
//! tail, missing and stale indexes, and a crash without a clean close. Every case reopens the
//! partition repeatedly and checks exactly which data survives.
//!
//! Bytes below the recovery point were covered by an fdatasync (or a clean close) and are not
//! rescanned; cases that damage bytes there first remove the recovery point, which models a
//! crash before any flush reached them (the whole last segment is then scanned).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use sluice_engine::batch::testing::CRC_FIELD_AT;
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::recovery::TailCase;
use sluice_engine::types::{Offset, TopicPartition};

const BATCH_LEN: u64 = 61 + 300;

/// Writes `n` batches of one record each (361 bytes) with 8 KiB segments and closes cleanly.
/// Returns the bytes of the whole log.
fn build_log(root: &Path, n: i64, close: bool) -> Vec<u8> {
    let root = root.to_path_buf();
    let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let out2 = out.clone();
    run(&root.clone(), || async move {
        let p = open(&root, &cfg(), &ShardContext::default()).await;
        for i in 0..n {
            p.append(batch(1, 300, 1_000 + i, i as u8), Durability::Written)
                .await
                .unwrap();
        }
        *out2.borrow_mut() = read_all(&p, 0).await;
        if close {
            p.close().await.unwrap();
        }
    });
    let v = out.borrow().clone();
    v
}

fn cfg() -> Arc<LogConfig> {
    small_segments(8192)
}

fn part_dir(root: &Path) -> PathBuf {
    root.join("t-0")
}

fn segment_files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(part_dir(root))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Reopens the partition and returns (result of open, log end, all bytes).
fn reopen(root: &Path) -> Result<(TailCase, Offset, Vec<u8>), i16> {
    let root = root.to_path_buf();
    let out = std::rc::Rc::new(std::cell::RefCell::new(Err(0)));
    let out2 = out.clone();
    run(&root.clone(), || async move {
        let r = Partition::open(&root, tp(), cfg(), ShardContext::default()).await;
        *out2.borrow_mut() = match r {
            Ok(p) => {
                let data = read_all(&p, 0).await;
                let case = p.open_report().tail.case;
                let end = p.log_end_offset();
                // The log accepts appends after recovery, and they read back.
                let info = p
                    .append(batch(1, 20, 5, 0xee), Durability::Written)
                    .await
                    .unwrap();
                assert_eq!(info.base_offset, end);
                p.truncate_to(end).await.unwrap();
                p.close().await.unwrap();
                Ok((case, end, data))
            }
            Err(e) => Err(e.kafka_code()),
        };
    });
    let r = out.borrow().clone();
    r
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn patch(path: &Path, at: u64, f: impl FnOnce(u8) -> u8) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(at)).unwrap();
    std::io::Read::read_exact(&mut file, &mut b).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[f(b[0])]).unwrap();
}

/// Models a crash before any flush covered the damaged bytes: no recovery point.
fn forget_recovery_point(root: &Path) {
    std::fs::remove_file(part_dir(root).join("recovery-point")).unwrap();
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn clean_log_reopens_identically_many_times() {
    let dir = tempfile::tempdir().unwrap();
    let all = build_log(dir.path(), 60, true);
    for _ in 0..3 {
        let (case, end, data) = reopen(dir.path()).unwrap();
        assert_eq!(case, TailCase::Clean);
        assert_eq!(end, Offset(60));
        assert_eq!(data, all);
    }
}

#[test]
fn garbage_appended_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let all = build_log(dir.path(), 30, true);
    let last = segment_files(dir.path()).pop().unwrap();
    append_bytes(
        &last,
        b"this is not a record batch at all, just garbage bytes!!!!!!!!!!!!!!!",
    );
    let (case, end, data) = reopen(dir.path()).unwrap();
    assert!(
        matches!(case, TailCase::TornBatch | TailCase::CorruptLastBatch),
        "{case:?}"
    );
    assert_eq!(end, Offset(30));
    assert_eq!(data, all);
    let (case, _, data) = reopen(dir.path()).unwrap();
    assert_eq!(case, TailCase::Clean);
    assert_eq!(data, all);
}

#[test]
fn batch_cut_in_half_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let all = build_log(dir.path(), 30, true);
    let last = segment_files(dir.path()).pop().unwrap();
    let l = len(&last);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(l - BATCH_LEN / 2)
        .unwrap();
    let (case, end, data) = reopen(dir.path()).unwrap();
    assert_eq!(case, TailCase::TornBatch);
    assert_eq!(end, Offset(29));
    assert_eq!(data[..], all[..all.len() - BATCH_LEN as usize]);
}

#[test]
fn crc_flip_in_last_batch_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let all = build_log(dir.path(), 30, true);
    let last = segment_files(dir.path()).pop().unwrap();
    let l = len(&last);
    patch(&last, l - BATCH_LEN + CRC_FIELD_AT as u64, |b| b ^ 0x01);
    forget_recovery_point(dir.path());
    let (case, end, data) = reopen(dir.path()).unwrap();
    assert_eq!(case, TailCase::CorruptLastBatch);
    assert_eq!(end, Offset(29));
    assert_eq!(data[..], all[..all.len() - BATCH_LEN as usize]);
    assert_eq!(reopen(dir.path()).unwrap().0, TailCase::Clean);
}

#[test]
fn crc_flip_before_valid_batches_takes_only_that_partition_offline() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 30, true);
    let last = segment_files(dir.path()).pop().unwrap();
    // The second batch of the last segment is corrupt, valid batches follow it.
    patch(&last, BATCH_LEN + 100, |b| b ^ 0x40);
    forget_recovery_point(dir.path());
    assert_eq!(reopen(dir.path()).unwrap_err(), 56);
    assert_eq!(reopen(dir.path()).unwrap_err(), 56, "files are left alone");
    // Another partition in the same root keeps working.
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let other = Partition::open(
            &root,
            TopicPartition::new("u", 0),
            cfg(),
            ShardContext::default(),
        )
        .await
        .unwrap();
        other
            .append(batch(1, 10, 1, 1), Durability::Synced)
            .await
            .unwrap();
    });
}

#[test]
fn crc_flip_in_an_earlier_segment_takes_the_partition_offline() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 60, true);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let first = &files[0];
    let l = len(first);
    patch(first, l - BATCH_LEN + CRC_FIELD_AT as u64 + 1, |b| b ^ 0x80);
    assert_eq!(reopen(dir.path()).unwrap_err(), 56);
}

#[test]
fn zeroed_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let all = build_log(dir.path(), 30, true);
    let last = segment_files(dir.path()).pop().unwrap();
    append_bytes(&last, &[0u8; 10_000]);
    let (case, end, data) = reopen(dir.path()).unwrap();
    assert_eq!(case, TailCase::ZeroedTail);
    assert_eq!(end, Offset(30));
    assert_eq!(data, all);
    // Zero the last batch in place: it is gone, the rest stays.
    let l = len(&last);
    let mut f = OpenOptions::new().write(true).open(&last).unwrap();
    f.seek(SeekFrom::Start(l - BATCH_LEN)).unwrap();
    f.write_all(&vec![0u8; BATCH_LEN as usize]).unwrap();
    drop(f);
    forget_recovery_point(dir.path());
    let (case, end, _) = reopen(dir.path()).unwrap();
    assert_eq!(case, TailCase::ZeroedTail);
    assert_eq!(end, Offset(29));
}

#[test]
fn crash_without_close_recovers_every_written_batch() {
    let dir = tempfile::tempdir().unwrap();
    let all = build_log(dir.path(), 45, false);
    // The active segment was never truncated to its exact size: its tail is sector padding.
    let last = segment_files(dir.path()).pop().unwrap();
    assert_eq!(len(&last) % 4096, 0);
    let (case, end, data) = reopen(dir.path()).unwrap();
    assert_eq!(case, TailCase::ZeroedTail);
    assert_eq!(end, Offset(45));
    assert_eq!(data, all);
}

#[test]
fn missing_or_stale_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let all = build_log(dir.path(), 60, true);
    let d = part_dir(dir.path());
    std::fs::remove_file(d.join("00000000000000000000.index")).unwrap();
    std::fs::remove_file(d.join("00000000000000000000.timeindex")).unwrap();
    let files = segment_files(dir.path());
    let second = files[1].with_extension("index");
    // Stale: an entry pointing past the end of its log.
    std::fs::write(&second, [0, 0, 0, 1, 0x7f, 0, 0, 0]).unwrap();
    let third = files[2].with_extension("timeindex");
    std::fs::write(&third, [1, 2, 3]).unwrap();
    for _ in 0..2 {
        let (case, end, data) = reopen(dir.path()).unwrap();
        assert_eq!(case, TailCase::Clean);
        assert_eq!(end, Offset(60));
        assert_eq!(data, all);
    }
    // Random reads and timestamp lookups hit the rebuilt indexes.
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let p = open(&root, &cfg(), &ShardContext::default()).await;
        for off in [0i64, 5, 21, 22, 44, 59] {
            let r = p.read(Offset(off), 1).await.unwrap();
            let bytes = r.to_vec();
            let v = sluice_engine::batch::BatchView::parse(&bytes, 0).unwrap();
            assert_eq!(v.base_offset(), Offset(off));
        }
        assert_eq!(
            p.offset_for_timestamp(1_030).await.unwrap(),
            Some((Offset(30), 1_030))
        );
        assert_eq!(
            p.offset_for_timestamp(-3).await.unwrap(),
            Some((Offset(59), 1_059))
        );
    });
}

#[test]
fn recovery_point_bounds_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let all = build_log(dir.path(), 30, true);
    let last = segment_files(dir.path()).pop().unwrap();
    let end = len(&last);
    // After a clean close nothing is scanned.
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let p = open(&root, &cfg(), &ShardContext::default()).await;
        let tail = p.open_report().tail;
        assert_eq!(tail.scanned_from.0, end);
        assert_eq!(tail.case, TailCase::Clean);
        // Reads and timestamp lookups work from the indexes the close persisted.
        assert_eq!(
            p.offset_for_timestamp(1_020).await.unwrap(),
            Some((Offset(20), 1_020))
        );
        p.close().await.unwrap();
    });
    // A torn tail after the recovery point is scanned and cut; nothing before it is reread.
    append_bytes(&last, &batch(1, 300, 5, 1)[..200]);
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let p = open(&root, &cfg(), &ShardContext::default()).await;
        let tail = p.open_report().tail;
        assert_eq!(tail.scanned_from.0, end);
        assert_eq!(tail.case, TailCase::TornBatch);
        assert_eq!(tail.truncated_bytes, 200);
        assert_eq!(read_all(&p, 0).await, all);
        assert_eq!(
            p.offset_for_timestamp(-3).await.unwrap(),
            Some((Offset(29), 1_029))
        );
    });
}

#[test]
fn flushes_store_the_recovery_point_at_most_once_a_second_per_16_mib() {
    // With a 1 MiB segment the log never rolls here, so only flushes store recovery points.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let first_end = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let written = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let (fe, wr) = (first_end.clone(), written.clone());
    run(dir.path(), || async move {
        let p = open(&root, &small_segments(1 << 20), &ShardContext::default()).await;
        p.append(batch(1, 300, 1_000, 1), Durability::Synced)
            .await
            .unwrap();
        fe.set(BATCH_LEN);
        // Flushed right after: durable, but not worth rewriting the point for.
        for i in 1..5 {
            p.append(batch(1, 300, 1_000 + i, i as u8), Durability::Synced)
                .await
                .unwrap();
        }
        *wr.borrow_mut() = read_all(&p, 0).await;
        // No close: the next open is a crash recovery.
    });
    let root = dir.path().to_path_buf();
    let (fe, wr) = (first_end.get(), written.borrow().clone());
    run(dir.path(), || async move {
        let p = open(&root, &small_segments(1 << 20), &ShardContext::default()).await;
        let tail = p.open_report().tail;
        // The scan starts at the point the first flush stored and validates the rest (the
        // file ends in the zero padding of the last sector, as after any crash).
        assert_eq!(tail.scanned_from.0, fe);
        assert!(
            matches!(tail.case, TailCase::Clean | TailCase::ZeroedTail),
            "{:?}",
            tail.case
        );
        assert_eq!(read_all(&p, 0).await, wr);
        p.close().await.unwrap();
    });
}
