//! Start-up recovery of a partition log under the named policy [`TolerateCorruptTail`].
//!
//! Only the tail of the LAST segment is scanned: from its [`RecoveryPoint`] (the position and
//! offset up to which a completed fdatasync or a clean close vouched for the segment, kept in a
//! small per-partition file) to the end of the file, or from its start when there is no usable
//! recovery point. A clean restart scans nothing, and a crash scans what was appended since the
//! last flush, so start-up time does not grow with the data stored. The last segment's indexes
//! are then rebuilt lazily, on first use, like those of closed segments. Closed segments were truncated to their exact size
//! and synced when they rolled; they are trusted, and only their index files and last batches
//! are checked cheaply (indexes are rebuilt lazily when missing or stale). Every batch of the
//! last segment is validated (length, magic, CRC-32C, record count, offset continuity) right
//! after it is read. Runs on the partition's home shard while the partition opens.
//!
//! # Policy `TolerateCorruptTail`
//!
//! | where                   | what is found at the first bad position `p`               | outcome                         |
//! |-------------------------|-----------------------------------------------------------|---------------------------------|
//! | last segment, before its recovery point | (not scanned: covered by fdatasync)        | trusted                         |
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
    /// Where the scan started (the recovery point, or 0).
    pub scanned_from: FilePos,
}

/// Name of the per-partition recovery point file.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";

/// A position of the last segment up to which its bytes are known good: a completed fdatasync
/// (or clean close) covered them. Stored as 28 bytes: segment base i64 | position u64 | next
/// offset i64 | CRC-32C u32 of the first 24 bytes, all big-endian. The file is rewritten in place
/// after every flush without its own fsync: a lost or torn update leaves an older point or a
/// CRC mismatch, and both only make recovery scan more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub segment_base: Offset,
    pub pos: FilePos,
    pub next_offset: Offset,
}

impl RecoveryPoint {
    pub fn encode(&self) -> [u8; 28] {
        let mut b = [0u8; 28];
        b[0..8].copy_from_slice(&self.segment_base.0.to_be_bytes());
        b[8..16].copy_from_slice(&self.pos.0.to_be_bytes());
        b[16..24].copy_from_slice(&self.next_offset.0.to_be_bytes());
        let crc = crc32c::crc32c(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<RecoveryPoint> {
        if b.len() != 28 {
            return None;
        }
        let crc = u32::from_be_bytes([b[24], b[25], b[26], b[27]]);
        if crc != crc32c::crc32c(&b[..24]) {
            return None;
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            w
        };
        Some(RecoveryPoint {
            segment_base: Offset(i64::from_be_bytes(word(0))),
            pos: FilePos(u64::from_be_bytes(word(8))),
            next_offset: Offset(i64::from_be_bytes(word(16))),
        })
    }

    /// Reads the recovery point of the partition in `dir`; `None` if absent or damaged.
    pub fn load(dir: &std::path::Path) -> Option<RecoveryPoint> {
        std::fs::read(dir.join(RECOVERY_POINT_FILE))
            .ok()
            .and_then(|b| RecoveryPoint::decode(&b))
    }

    /// Writes the recovery point in place (a small page-cache write; see the type's doc for why
    /// it needs no fsync).
    pub fn store(&self, dir: &std::path::Path) -> Result<()> {
        let path = dir.join(RECOVERY_POINT_FILE);
        std::fs::write(&path, self.encode()).map_err(|e| Error::io("write recovery point", path, e))
    }

    /// Removes the recovery point (before a truncation invalidates it).
    pub fn remove(dir: &std::path::Path) -> Result<()> {
        let path = dir.join(RECOVERY_POINT_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove recovery point", path, e)),
        }
    }
}

/// Scans the last segment from `point` (when it belongs to this segment and lies inside the
/// file) or from its start, validating every batch, rebuilds its in-memory facts (and its indexes
/// when scanning from the start; otherwise they are rebuilt lazily), and truncates a torn or
/// corrupt tail away (syncing the truncation).
pub async fn recover_last_segment(
    seg: &Segment,
    interval_bytes: u32,
    point: Option<RecoveryPoint>,
) -> Result<TailRecovery> {
    let file_len = seg
        .file()
        .size()
        .await
        .map_err(|e| Error::io("stat segment", seg.log_path(), e))?;
    let point = point.filter(|p| {
        p.segment_base == seg.base() && p.pos.0 <= file_len && p.next_offset >= seg.base()
    });
    // Indexes persisted by a clean close are kept when they stay below the recovery point; the
    // tail scan then extends them. Otherwise they are rebuilt lazily on first use.
    let persisted = match point {
        Some(p) => seg.load_indexes_within(p.pos.0, p.next_offset).await.ok(),
        None => None,
    };
    let mut fresh = match point {
        Some(p) => {
            let (index, time_index) = match persisted {
                Some((ix, tix)) => (Some(ix), Some(tix)),
                None => (None, None),
            };
            SegmentMeta {
                next_offset: p.next_offset,
                size: p.pos.0,
                max_timestamp: time_index.as_ref().and_then(|t| t.last(seg.base())),
                index,
                time_index,
                bytes_since_index: u64::from(interval_bytes),
                ..SegmentMeta::default()
            }
        }
        None => SegmentMeta {
            next_offset: seg.base(),
            index: Some(OffsetIndex::default()),
            time_index: Some(TimeIndex::default()),
            ..SegmentMeta::default()
        },
    };
    let start = point.map_or(0, |p| p.pos.0);
    let mut scanner = Scanner::new(seg.file(), start, file_len, SCAN_CHUNK_BYTES);
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
                let good = batch_ok(&bytes, fresh.next_offset, Continuity::Exact);
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
        scanned_from: FilePos(start),
    })
}

/// Cheap start-up check of a closed segment whose successor starts at `next_base`: reads the last
/// entry of its index (the full indexes are loaded, or rebuilt if unusable, lazily on first use),
/// then validates the batches from that entry to the end and checks that they end at
/// `next_base`. The work per closed segment is a few small reads, whatever its size.
pub async fn check_closed_segment(
    seg: &Segment,
    next_base: Offset,
    interval_bytes: u32,
) -> Result<()> {
    seg.meta.borrow_mut().next_offset = next_base;
    let _ = interval_bytes;
    let Some((expect, start)) = seg.last_index_entries().await else {
        // Index missing or unusable: rebuilt on first use; nothing cheap left to check.
        return Ok(());
    };
    let start = start.0;
    let readable = seg.readable();
    let mut scanner = Scanner::new(seg.file(), start, readable, SCAN_CHUNK_BYTES);
    let mut next = expect;
    loop {
        match scanner.next(true).await? {
            ScanItem::End => break,
            ScanItem::Batch { pos, bytes, .. } => {
                if !batch_ok(&bytes, next, Continuity::GapsAllowed) {
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
    // A cleaned segment may end before the next one starts (its last batches were removed),
    // never after.
    if next > next_base {
        return Err(Error::CorruptLog {
            segment: seg.log_path(),
            pos: FilePos(readable),
            detail: format!(
                "closed segment ends at offset {next}, past the next segment's start {next_base}"
            ),
        });
    }
    Ok(())
}

/// A batch read back from disk is good when it validates and continues the offsets: starting
/// exactly at `expected_base`, or at or after it in a segment the cleaner may have rewritten
/// (`Continuity::GapsAllowed`: compaction removes whole batches and leaves their offsets unused).
fn batch_ok(bytes: &[u8], expected_base: Offset, continuity: Continuity) -> bool {
    match BatchView::parse(bytes, 0) {
        Ok(v) => {
            v.validate_stored(0, BATCH_BYTES_MAX).is_ok()
                && match continuity {
                    Continuity::Exact => v.base_offset() == expected_base,
                    Continuity::GapsAllowed => v.base_offset() >= expected_base,
                }
        }
        Err(_) => false,
    }
}

/// How the offsets of consecutive batches must follow each other.
#[derive(Clone, Copy)]
enum Continuity {
    /// The last segment was never cleaned (the cleaner skips the active segment).
    Exact,
    /// Closed segments may be the cleaner's output.
    GapsAllowed,
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
            .map(|v| v.validate_stored(0, BATCH_BYTES_MAX).is_ok())
            .unwrap_or(false)),
        _ => Ok(false),
    }
}
