//! Reads for sending (`Partition::read_for_send`) hand out exactly the bytes of the log, whole
//! batches only: from the batch cache as its buffers, from disk as a range of the segment file
//! whose batch ends are known without reading the data, and still readable after retention has
//! deleted the segment.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failure should panic loudly.

mod common;

use std::os::unix::fs::FileExt;

use common::*;
use sluice_engine::batch::BatchIter;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{SendPiece, SendRead, ShardContext};
use sluice_engine::types::Offset;

/// The bytes of a send read, reading file ranges as the kernel would for a splice.
fn bytes_of(r: &SendRead) -> Vec<u8> {
    let mut out = Vec::new();
    for p in &r.pieces {
        match p {
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

/// Checks that every listed batch end is one, that the last is the total length, and returns
/// the offset after the last batch.
fn check_ends(r: &SendRead, bytes: &[u8]) -> Offset {
    assert_eq!(r.len(), bytes.len());
    assert_eq!(r.batch_ends.last().copied(), Some(bytes.len() as u64));
    let mut all_ends = Vec::new();
    let mut next = Offset(-1);
    for item in BatchIter::new(bytes) {
        let (pos, v) = item.unwrap();
        all_ends.push((pos + v.total_len()) as u64);
        next = v.next_offset();
    }
    assert_eq!(all_ends.last(), r.batch_ends.last(), "whole batches only");
    for e in &r.batch_ends {
        assert!(all_ends.contains(e), "{e} is not a batch end: {all_ends:?}");
    }
    assert_eq!(
        r.batch_ends.first(),
        all_ends.first(),
        "the first batch's end is listed"
    );
    next
}

#[test]
fn cold_reads_are_file_ranges_of_exactly_the_logged_batches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let cfg = small_segments(32 * 1024);
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        // Batches of varied sizes, across several segments.
        for i in 0..120u32 {
            let payload = 40 + (i as usize * 37) % 2000;
            p.append(
                batch(1 + (i % 4) as i32, payload, 1000 + i64::from(i), i as u8),
                Durability::Written,
            )
            .await
            .unwrap();
        }
        // Hot: from the cache, as buffers.
        let hot = p.read_for_send(Offset(0), 10_000).await.unwrap();
        assert!(hot.from_cache);
        assert!(hot.pieces.iter().all(|x| matches!(x, SendPiece::Mem(_))));
        let hot_bytes = bytes_of(&hot);
        check_ends(&hot, &hot_bytes);
        assert_eq!(hot_bytes, p.read(Offset(0), 10_000).await.unwrap().to_vec());

        let whole = read_all(&p, 0).await;
        p.close().await.unwrap();
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        assert!(p.segment_count() > 2);
        let hw = p.high_watermark();
        for max_bytes in [1usize, 700, 5000, 40_000, 1 << 20] {
            let mut got = Vec::new();
            let mut off = Offset(0);
            while off < hw {
                let r = p.read_for_send(off, max_bytes).await.unwrap();
                assert!(!r.from_cache);
                assert_eq!(r.pieces.len(), 1);
                assert!(matches!(r.pieces[0], SendPiece::File { .. }));
                let bytes = bytes_of(&r);
                // KIP-74: at least one batch, else no more than asked for.
                let first = r.batch_ends[0] as usize;
                assert!(
                    bytes.len() <= max_bytes.max(first),
                    "{} > {max_bytes}",
                    bytes.len()
                );
                off = check_ends(&r, &bytes);
                got.extend_from_slice(&bytes);
            }
            assert_eq!(got, whole, "max_bytes {max_bytes}");
        }
        // From the middle of a batch: the batch containing the offset comes first.
        let r = p.read_for_send(Offset(5), 1).await.unwrap();
        let bytes = bytes_of(&r);
        let (_, v) = BatchIter::new(&bytes).next().unwrap().unwrap();
        assert!(v.base_offset() <= Offset(5) && Offset(5) < v.next_offset());
        assert!(p.read_for_send(hw, 100).await.unwrap().is_empty());
        assert_eq!(
            p.read_for_send(Offset(hw.0 + 1), 100)
                .await
                .unwrap_err()
                .kafka_code(),
            1
        );
    });
}

#[test]
fn a_file_range_outlives_the_deletion_of_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let cfg = small_segments(16 * 1024);
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        for i in 0..60u8 {
            p.append(batch(2, 900, 1000 + i64::from(i), i), Durability::Written)
                .await
                .unwrap();
        }
        let expected = read_all(&p, 0).await;
        p.close().await.unwrap();
        drop(p);
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        let r = p.read_for_send(Offset(0), 1 << 20).await.unwrap();
        let SendPiece::File { .. } = r.pieces[0] else {
            panic!("a cold read is a file range");
        };
        let first_segment = root.join(tp().dir_name()).join("00000000000000000000.log");
        assert!(first_segment.exists());
        // Retention (here DeleteRecords) removes the segment while the range is in flight.
        p.delete_records(Offset(40)).await.unwrap();
        assert!(!first_segment.exists());
        // The removed segment's blocks are freed off the shard once nothing holds it; the
        // send in flight holds it, so its range still reads whole however long it takes.
        glommio::timer::sleep(std::time::Duration::from_millis(500)).await;
        assert!(open_descriptors_of(&first_segment) > 0);
        let bytes = bytes_of(&r);
        assert_eq!(bytes[..], expected[..bytes.len()]);
        check_ends(&r, &bytes);
        // A new read of the deleted range is out of range, not an I/O error.
        assert_eq!(
            p.read_for_send(Offset(0), 100)
                .await
                .unwrap_err()
                .kafka_code(),
            1
        );
        // Once the send is done, the removed file's descriptors are closed (its blocks freed).
        drop(r);
        let t = std::time::Instant::now();
        while open_descriptors_of(&first_segment) > 0 {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "the removed segment is still open"
            );
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
}

/// Descriptors this process holds of the removed file `path` (`/proc/self/fd` names it
/// "`path` (deleted)").
fn open_descriptors_of(path: &std::path::Path) -> usize {
    let gone = format!("{} (deleted)", path.display());
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy() == gone)
        .count()
}

#[test]
fn the_active_segment_read_through_the_page_cache_sees_every_direct_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        // No batch cache: every read goes to the file, while appends keep rewriting the
        // partial last sector with O_DIRECT under pages that the reads have cached.
        let ctx = ShardContext {
            cache: sluice_engine::batch_cache::BatchCache::new(0),
            ..ShardContext::default()
        };
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        let mut off = Offset(0);
        let mut got = Vec::new();
        for i in 0..200u32 {
            p.append(
                batch(1, 10 + (i as usize * 13) % 300, 1000, i as u8),
                Durability::Written,
            )
            .await
            .unwrap();
            let r = p.read_for_send(off, 1 << 20).await.unwrap();
            assert!(!r.from_cache);
            let bytes = bytes_of(&r);
            off = check_ends(&r, &bytes);
            got.extend_from_slice(&bytes);
        }
        assert_eq!(off, p.high_watermark());
        assert_eq!(got, read_all(&p, 0).await);
    });
}
