//! Start-up recovery of a partition log under the named policy [`TolerateCorruptTail`].
//!
//! Only the LAST segment is scanned in full (its size is bounded by `segment.bytes`, so start-up
//! time does not grow with the data stored). Closed segments were truncated to their exact size
//! and synced when they rolled; they are trusted, and only their index files and last batches
//! are checked cheaply (indexes are rebuilt lazily when missing or stale). Every batch of the
//! last segment is validated (length, magic, CRC-32C, record count, offset continuity) right
//! after it is read. Runs on the partition's home shard while the partition opens.
//!
//! # Policy `TolerateCorruptTail`
//!
//! | where                   | what is found at the first bad position `p`               | outcome                         |
//! |-------------------------|-----------------------------------------------------------|---------------------------------|
//! | last segment            | nothing (scan ends on a batch boundary)                   | clean                           |
//! | last segment            | only zero bytes until end of file (padding, unwritten)    | truncate to `p` (`ZeroedTail`)  |
//! | last segment            | fewer bytes than a header, or a length past end of file  | truncate to `p` (`TornBatch`)   |
//! | last segment            | a bad batch (CRC, magic, count, offsets) with nothing valid after it | truncate to `p` (`CorruptLastBatch`) |
//! | last segment            | a bad batch followed by a valid batch                     | partition offline (`CorruptLog`)|
//! | closed segment          | bad batch in the tail scanned from its last index entry, or offsets not meeting the next segment | partition offline |
//! | closed segment          | index missing, wrong length, not monotonic, past the end | rebuilt lazily on first use     |
//!
//! A bad batch "with nothing valid after it" means: the position its length field points to is
//! at or past the end of the file, or does not hold a batch that validates. That is what a torn
//! write or garbage after the last write looks like; a valid batch after a bad one can only be
//! corruption of data that was once good.

use crate::batch::BatchView;
use crate::error::{Error, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::LogFile;
use crate::limits::{BATCH_BYTES_MAX, SCAN_CHUNK_BYTES};
use crate::segment::{note_batch_in, Segment, SegmentMeta};
use crate::segment_reader::{ScanItem, Scanner};
use crate::types::{FilePos, Offset};

/// The recovery policy in force (the only one so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TolerateCorruptTail;

/// What recovery found at the end of the last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailCase {
    Clean,
    ZeroedTail,
    TornBatch,
    CorruptLastBatch,
}

/// The outcome of recovering the last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailRecovery {
    pub case: TailCase,
    /// Logical end after recovery.
    pub end: FilePos,
    /// Bytes cut off the end of the file.
    pub truncated_bytes: u64,
}

/// Scans the last segment, validating every batch, rebuilds its in-memory facts and indexes,
/// and truncates a torn or corrupt tail away (syncing the truncation).
pub async fn recover_last_segment(seg: &Segment, interval_bytes: u32) -> Result<TailRecovery> {
    let file_len = seg
        .file()
        .size()
        .await
        .map_err(|e| Error::io("stat segment", seg.log_path(), e))?;
    let mut fresh = SegmentMeta {
        next_offset: seg.base(),
        index: Some(OffsetIndex::default()),
        time_index: Some(TimeIndex::default()),
        ..SegmentMeta::default()
    };
    let mut scanner = Scanner::new(seg.file(), 0, file_len, SCAN_CHUNK_BYTES);
    let (end, case) = loop {
        match scanner.next(true).await? {
            ScanItem::End => break (file_len, TailCase::Clean),
            ScanItem::Defect { pos, .. } => {
                let case = if all_zero(seg, pos.0, file_len).await? {
                    TailCase::ZeroedTail
                } else {
                    TailCase::TornBatch
                };
                break (pos.0, case);
            }
            ScanItem::Batch { pos, header, bytes } => {
                let good = batch_ok(&bytes, fresh.next_offset);
                if good {
                    note_batch_in(&mut fresh, seg.base(), pos, &header, interval_bytes);
                    continue;
                }
                if all_zero(seg, pos.0, file_len).await? {
                    break (pos.0, TailCase::ZeroedTail);
                }
                let successor = pos.0 + header.total_len;
                if valid_batch_at(seg, successor, file_len).await? {
                    return Err(Error::CorruptLog {
                        segment: seg.log_path(),
                        pos,
                        detail: "a corrupt batch is followed by valid batches (not a torn tail)"
                            .to_string(),
                    });
                }
                break (pos.0, TailCase::CorruptLastBatch);
            }
        }
    };
    if end < file_len {
        tracing::warn!(segment = %seg.log_path().display(), ?case, end, file_len, "truncating log tail");
        seg.file()
            .set_len(end)
            .await
            .map_err(|e| Error::io("truncate segment", seg.log_path(), e))?;
        seg.file()
            .sync()
            .await
            .map_err(|e| Error::io("sync segment", seg.log_path(), e))?;
    }
    {
        let mut m = seg.meta.borrow_mut();
        fresh.size = end;
        fresh.readable = end;
        *m = fresh;
    }
    Ok(TailRecovery {
        case,
        end: FilePos(end),
        truncated_bytes: file_len - end,
    })
}

/// Cheap start-up check of a closed segment whose successor starts at `next_base`: loads its
/// indexes if they are sound (else leaves them to be rebuilt lazily), then validates the
/// batches from the last index entry to the end and checks that they end at `next_base`.
pub async fn check_closed_segment(
    seg: &Segment,
    next_base: Offset,
    interval_bytes: u32,
) -> Result<()> {
    seg.meta.borrow_mut().next_offset = next_base;
    if seg.ensure_indexes_if_sound().await.is_err() {
        // Index unusable: rebuilt on first use; nothing cheap left to check.
        return Ok(());
    }
    let _ = interval_bytes;
    let (start, expect) = {
        let m = seg.meta.borrow();
        match m.index.as_ref().and_then(|ix| ix.last(seg.base())) {
            Some((off, pos)) => (pos.0, off),
            None => (0, seg.base()),
        }
    };
    let readable = seg.readable();
    let mut scanner = Scanner::new(seg.file(), start, readable, SCAN_CHUNK_BYTES);
    let mut next = expect;
    loop {
        match scanner.next(true).await? {
            ScanItem::End => break,
            ScanItem::Batch { pos, bytes, .. } => {
                if !batch_ok(&bytes, next) {
                    return Err(Error::CorruptLog {
                        segment: seg.log_path(),
                        pos,
                        detail: "corrupt batch in a closed segment".to_string(),
                    });
                }
                if let Ok(v) = BatchView::parse(&bytes, 0) {
                    next = v.next_offset();
                }
            }
            ScanItem::Defect { pos, what } => {
                return Err(Error::CorruptLog {
                    segment: seg.log_path(),
                    pos,
                    detail: format!("closed segment: {what}"),
                })
            }
        }
    }
    if next != next_base {
        return Err(Error::CorruptLog {
            segment: seg.log_path(),
            pos: FilePos(readable),
            detail: format!(
                "closed segment ends at offset {next} but the next segment starts at {next_base}"
            ),
        });
    }
    Ok(())
}

/// A batch read back from disk is good when it validates and continues the offsets.
fn batch_ok(bytes: &[u8], expected_base: Offset) -> bool {
    match BatchView::parse(bytes, 0) {
        Ok(v) => v.validate(0, BATCH_BYTES_MAX).is_ok() && v.base_offset() == expected_base,
        Err(_) => false,
    }
}

async fn all_zero(seg: &Segment, from: u64, to: u64) -> Result<bool> {
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(SCAN_CHUNK_BYTES);
        let data = seg
            .file()
            .read_at(pos, n)
            .await
            .map_err(|e| Error::io("read segment", seg.log_path(), e))?;
        if data.is_empty() || data.iter().any(|&b| b != 0) {
            return Ok(data.is_empty());
        }
        pos += data.len() as u64;
    }
    Ok(true)
}

async fn valid_batch_at(seg: &Segment, pos: u64, file_len: u64) -> Result<bool> {
    if pos >= file_len {
        return Ok(false);
    }
    let mut scanner = Scanner::new(seg.file(), pos, file_len, SCAN_CHUNK_BYTES);
    match scanner.next(true).await? {
        ScanItem::Batch { bytes, .. } => Ok(BatchView::parse(&bytes, 0)
            .map(|v| v.validate(0, BATCH_BYTES_MAX).is_ok())
            .unwrap_or(false)),
        _ => Ok(false),
    }
}
