//! Sparse per-segment indexes: offset → file position and timestamp → offset.
//!
//! An entry is added every `index.interval.bytes` of log, at batch boundaries, so a lookup gives
//! a position at most one interval (plus one batch) before the wanted batch. Files are written
//! whole and synced when a segment rolls or the partition closes cleanly; they are checked
//! cheaply when loaded and rebuilt from the log when missing or inconsistent. Owned by the
//! partition's home shard.
//!
//! ```text
//! .index      entries of 8 bytes:  relative offset u32 BE | file position u32 BE
//! .timeindex  entries of 12 bytes: max timestamp so far i64 BE | relative offset u32 BE
//! ```

use crate::limits::{OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::types::{FilePos, Offset};

/// Why a persisted index was not usable (it is then rebuilt from the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexDefect {
    Missing,
    BadLength,
    NotMonotonic,
    PastEndOfLog,
}

/// Sparse offset index of one segment. Entries are strictly increasing in both fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn push(&mut self, base: Offset, offset: Offset, pos: FilePos) {
        let rel = (offset.0 - base.0) as u32;
        if let Some(&(r, p)) = self.entries.last() {
            if rel <= r || pos.0 as u32 <= p {
                return;
            }
        }
        self.entries.push((rel, pos.0 as u32));
    }

    /// The position of the last indexed batch starting at or before `offset` (0 if none).
    pub fn lookup(&self, base: Offset, offset: Offset) -> FilePos {
        let rel = offset.0 - base.0;
        let i = self.entries.partition_point(|&(r, _)| i64::from(r) <= rel);
        if i == 0 {
            FilePos(0)
        } else {
            FilePos(u64::from(self.entries[i - 1].1))
        }
    }

    /// The positions of the indexed batches that start in `(after, up_to]`, ascending. Each is
    /// also where the batch before it ends, so a read may stop there.
    pub fn positions_in(&self, after: FilePos, up_to: FilePos) -> impl Iterator<Item = u64> + '_ {
        let from = self
            .entries
            .partition_point(|&(_, p)| u64::from(p) <= after.0);
        self.entries[from..]
            .iter()
            .map(|&(_, p)| u64::from(p))
            .take_while(move |&p| p <= up_to.0)
    }

    /// The last entry, as an absolute offset and position.
    pub fn last(&self, base: Offset) -> Option<(Offset, FilePos)> {
        self.entries
            .last()
            .map(|&(r, p)| (base.plus(i64::from(r)), FilePos(u64::from(p))))
    }

    /// Drops entries at or past `pos` (after a truncation of the log).
    pub fn truncate_to_pos(&mut self, pos: FilePos) {
        let i = self.entries.partition_point(|&(_, p)| u64::from(p) < pos.0);
        self.entries.truncate(i);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_INDEX_ENTRY_BYTES);
        for &(r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Decodes a persisted index and checks it against the log length it describes.
    pub fn decode(bytes: &[u8], log_len: u64) -> Result<OffsetIndex, IndexDefect> {
        if bytes.len() % OFFSET_INDEX_ENTRY_BYTES != 0 {
            return Err(IndexDefect::BadLength);
        }
        let mut entries = Vec::with_capacity(bytes.len() / OFFSET_INDEX_ENTRY_BYTES);
        for c in bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let r = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let p = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
            if let Some(&(lr, lp)) = entries.last() {
                if r <= lr || p <= lp {
                    return Err(IndexDefect::NotMonotonic);
                }
            }
            if u64::from(p) >= log_len {
                return Err(IndexDefect::PastEndOfLog);
            }
            entries.push((r, p));
        }
        Ok(OffsetIndex { entries })
    }
}

/// Sparse time index of one segment: each entry records a new maximum timestamp and the offset
/// of the batch that reached it. Timestamps are strictly increasing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn push(&mut self, base: Offset, max_ts: i64, offset: Offset) {
        let rel = (offset.0 - base.0) as u32;
        if let Some(&(t, r)) = self.entries.last() {
            if max_ts <= t || rel < r {
                return;
            }
        }
        self.entries.push((max_ts, rel));
    }

    /// An offset from which a forward scan finds the first batch with max timestamp >= `ts`:
    /// the offset of the last entry whose timestamp is below `ts`, or the segment base.
    pub fn scan_start(&self, base: Offset, ts: i64) -> Offset {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            base
        } else {
            base.plus(i64::from(self.entries[i - 1].1))
        }
    }

    /// The newest (largest) timestamp and the offset of its batch.
    pub fn last(&self, base: Offset) -> Option<(i64, Offset)> {
        self.entries
            .last()
            .map(|&(t, r)| (t, base.plus(i64::from(r))))
    }

    /// Drops entries for offsets at or past `end`.
    pub fn truncate_to_offset(&mut self, base: Offset, end: Offset) {
        let i = self
            .entries
            .partition_point(|&(_, r)| base.0 + i64::from(r) < end.0);
        self.entries.truncate(i);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_INDEX_ENTRY_BYTES);
        for &(t, r) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }

    /// Decodes a persisted time index, checking that it stays below `next_rel` (the relative
    /// offset one past the segment's last record).
    pub fn decode(bytes: &[u8], next_rel: i64) -> Result<TimeIndex, IndexDefect> {
        if bytes.len() % TIME_INDEX_ENTRY_BYTES != 0 {
            return Err(IndexDefect::BadLength);
        }
        let mut entries: Vec<(i64, u32)> = Vec::new();
        for c in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&c[..8]);
            let t = i64::from_be_bytes(t);
            let r = u32::from_be_bytes([c[8], c[9], c[10], c[11]]);
            if let Some(&(lt, lr)) = entries.last() {
                if t <= lt || r < lr {
                    return Err(IndexDefect::NotMonotonic);
                }
            }
            if i64::from(r) >= next_rel {
                return Err(IndexDefect::PastEndOfLog);
            }
            entries.push((t, r));
        }
        Ok(TimeIndex { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_encode_decode_truncate() {
        let base = Offset(100);
        let mut ix = OffsetIndex::default();
        ix.push(base, Offset(110), FilePos(4096));
        ix.push(base, Offset(120), FilePos(9000));
        ix.push(base, Offset(120), FilePos(9500)); // not increasing: ignored
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.lookup(base, Offset(105)), FilePos(0));
        assert_eq!(ix.lookup(base, Offset(110)), FilePos(4096));
        assert_eq!(ix.lookup(base, Offset(119)), FilePos(4096));
        assert_eq!(ix.lookup(base, Offset(500)), FilePos(9000));
        let bytes = ix.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 10_000), Ok(ix.clone()));
        assert_eq!(
            OffsetIndex::decode(&bytes, 9000),
            Err(IndexDefect::PastEndOfLog)
        );
        assert_eq!(
            OffsetIndex::decode(&bytes[..5], 10_000),
            Err(IndexDefect::BadLength)
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert_eq!(
            OffsetIndex::decode(&swapped, 10_000),
            Err(IndexDefect::NotMonotonic)
        );
        ix.truncate_to_pos(FilePos(9000));
        assert_eq!(ix.last(base), Some((Offset(110), FilePos(4096))));
    }

    #[test]
    fn time_index_finds_scan_start() {
        let base = Offset(0);
        let mut t = TimeIndex::default();
        t.push(base, 10, Offset(0));
        t.push(base, 20, Offset(5));
        t.push(base, 15, Offset(7)); // not a new maximum: ignored
        t.push(base, 30, Offset(9));
        assert_eq!(t.scan_start(base, 5), Offset(0));
        assert_eq!(t.scan_start(base, 20), Offset(0));
        assert_eq!(t.scan_start(base, 21), Offset(5));
        assert_eq!(t.scan_start(base, 99), Offset(9));
        assert_eq!(t.last(base), Some((30, Offset(9))));
        assert_eq!(TimeIndex::decode(&t.encode(), 10), Ok(t.clone()));
        assert_eq!(
            TimeIndex::decode(&t.encode(), 9),
            Err(IndexDefect::PastEndOfLog)
        );
        t.truncate_to_offset(base, Offset(9));
        assert_eq!(t.last(base), Some((20, Offset(5))));
    }
}
