//! The active segment's write buffers: one started while the partition is idle is sized for its
//! append (ten thousand partitions taking small appends must not each hold 256 KiB), and what
//! joins it before its write starts still goes out in the same single write, bytes in order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failure should panic loudly.

mod common;

use std::rc::Rc;

use common::*;
use sluice_engine::histogram::LatencyHistogram;
use sluice_engine::io::IoBackend;
use sluice_engine::limits::{SECTOR_BYTES, WRITE_BUFFER_BYTES};
use sluice_engine::segment::Segment;
use sluice_engine::segment_writer::SegmentWriter;
use sluice_engine::types::Offset;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn an_idle_buffer_fits_its_append_and_grows_into_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let seg = Rc::new(
            Segment::open(&root, Offset(0), &IoBackend::Direct, true)
                .await
                .unwrap(),
        );
        let latency = Rc::new(LatencyHistogram::new());
        let writer = SegmentWriter::new(seg.clone(), 0, Vec::new(), Offset(0), latency.clone());

        // From idle: a sector for a 1,000-byte append, not a 256 KiB buffer.
        let first = pattern(1000, 1);
        writer.append(&[&first], Offset(1));
        assert_eq!(writer.buffer_bytes(), SECTOR_BYTES as usize);

        // More appends before the write starts: the buffer grows, and everything goes out in
        // one write.
        let second = pattern(5000, 2);
        let third = pattern(200_000, 3);
        writer.append(&[&second], Offset(2));
        assert!(writer.buffer_bytes() >= WRITE_BUFFER_BYTES);
        writer.append(&[&third[..100_000], &third[100_000..]], Offset(3));
        writer.drain().await.unwrap();
        assert_eq!(writer.writes(), 1);
        assert_eq!(latency.snapshot().count(), 1);
        assert_eq!(writer.written_offset(), Offset(3));
        // Only the partial last sector stays.
        assert!(writer.buffer_bytes() < SECTOR_BYTES as usize);

        let on_disk = std::fs::read(seg.log_path()).unwrap();
        let expected: Vec<u8> = [&first[..], &second[..], &third[..]].concat();
        assert_eq!(writer.end(), expected.len() as u64);
        assert_eq!(&on_disk[..expected.len()], &expected[..]);

        // Idle again: the next append gets a small buffer of its own, starting with the tail.
        let fourth = pattern(2000, 4);
        writer.append(&[&fourth], Offset(4));
        let tail = expected.len() % SECTOR_BYTES as usize;
        assert_eq!(
            writer.buffer_bytes(),
            (tail + fourth.len()).div_ceil(SECTOR_BYTES as usize) * SECTOR_BYTES as usize
        );
        writer.drain().await.unwrap();
        assert_eq!(writer.writes(), 2);
        let on_disk = std::fs::read(seg.log_path()).unwrap();
        assert_eq!(
            &on_disk[expected.len()..expected.len() + fourth.len()],
            &fourth[..]
        );
        assert_eq!(&on_disk[..expected.len()], &expected[..]);
    });
}
