//! The aborted-transaction index: which transactions of a partition were aborted, so that a
//! `read_committed` fetch can tell its client which records to drop.
//!
//! Kafka keeps one `.txnindex` file per segment; Sluice does the same, in the same entry
//! layout (big-endian: version i16 = 0, producer id i64, first offset i64, last offset i64,
//! last stable offset i64; 34 bytes). An entry belongs to the segment that holds its abort
//! marker (`last_offset`); its transaction may have started in an earlier segment.
//!
//! The entries of every segment are kept in memory as well (aborts are rare and an entry is
//! small), so a fetch never reads these files. The files exist for restarts:
//! - an entry is appended to its segment's file when the abort marker is appended, without an
//!   fsync of its own; the file is synced when its segment is sealed (roll, close), before the
//!   producer-state snapshot that lets recovery skip that segment is written;
//! - at open, a torn tail (not a whole entry) is dropped, and the entries of the range that
//!   recovery replays into the producer state (everything after the newest snapshot) are
//!   thrown away and rebuilt from the markers found there, so an entry lost in a crash, or one
//!   whose marker did not survive it, is put right;
//! - truncation drops the entries at or past the new log end and rewrites the affected
//!   files; deleting a segment deletes its file (`Segment::remove_files`).
//!
//! Owned by the partition (plain data, on the partition's home shard).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::types::Offset;

/// Bytes of one index entry on disk.
pub const TXN_INDEX_ENTRY_BYTES: usize = 34;

/// The only entry version there is.
const ENTRY_VERSION: i16 = 0;

/// The file name of the aborted-transaction index of the segment based at `base`.
pub fn txn_index_file_name(base: Offset) -> String {
    format!("{:020}.txnindex", base.0)
}

/// One aborted transaction, as indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxnEntry {
    pub producer_id: i64,
    /// The transaction's first offset on this partition.
    pub first_offset: Offset,
    /// The offset of its abort marker.
    pub last_offset: Offset,
    /// The partition's last stable offset right after the abort: no transaction that started
    /// below it is still open, which lets a search stop early.
    pub last_stable_offset: Offset,
}

impl AbortedTxnEntry {
    fn encode(&self) -> [u8; TXN_INDEX_ENTRY_BYTES] {
        let mut out = [0u8; TXN_INDEX_ENTRY_BYTES];
        out[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.0.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.0.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.0.to_be_bytes());
        out
    }

    /// An entry from its 34 bytes; `None` for an unknown version or offsets out of order
    /// (a damaged entry).
    fn decode(b: &[u8]) -> Option<AbortedTxnEntry> {
        let i64_at = |at: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(b.get(at..at + 8)?);
            Some(i64::from_be_bytes(v))
        };
        if i16::from_be_bytes([*b.first()?, *b.get(1)?]) != ENTRY_VERSION {
            return None;
        }
        let entry = AbortedTxnEntry {
            producer_id: i64_at(2)?,
            first_offset: Offset(i64_at(10)?),
            last_offset: Offset(i64_at(18)?),
            last_stable_offset: Offset(i64_at(26)?),
        };
        (entry.producer_id >= 0
            && Offset(0) <= entry.first_offset
            && entry.first_offset <= entry.last_offset)
            .then_some(entry)
    }
}

/// Removes `<base>.txnindex` files whose segment is not in `bases`, and every
/// `<base>.txnindex.tmp`.
fn remove_strays(dir: &Path, bases: &[Offset]) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let (stem, tmp) = match name.strip_suffix(".txnindex.tmp") {
            Some(stem) => (stem, true),
            None => match name.strip_suffix(".txnindex") {
                Some(stem) => (stem, false),
                None => continue,
            },
        };
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let orphan = stem
            .parse::<i64>()
            .is_ok_and(|b| !bases.contains(&Offset(b)));
        if tmp || orphan {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// An aborted transaction as a fetch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
}

/// The aborted-transaction index of one partition: per segment base, its entries in marker
/// order.
#[derive(Debug, Default)]
pub struct TxnIndex {
    dir: PathBuf,
    segments: BTreeMap<Offset, Vec<AbortedTxnEntry>>,
}

impl TxnIndex {
    /// Loads the index files of the segments `bases` in `dir`. A missing file is an empty
    /// index; a torn or damaged tail is dropped (from the first entry that does not decode),
    /// recovery rebuilds what it covers. Index files of segments that are gone (a crash while
    /// a segment was being deleted) and temporary files of an interrupted rewrite are removed.
    pub fn load(dir: &Path, bases: impl IntoIterator<Item = Offset>) -> std::io::Result<TxnIndex> {
        let bases: Vec<Offset> = bases.into_iter().collect();
        remove_strays(dir, &bases)?;
        let mut index = TxnIndex {
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
        };
        for base in bases {
            let path = dir.join(txn_index_file_name(base));
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let entries: Vec<AbortedTxnEntry> = bytes
                .chunks_exact(TXN_INDEX_ENTRY_BYTES)
                .map_while(AbortedTxnEntry::decode)
                .collect();
            if entries.len() * TXN_INDEX_ENTRY_BYTES != bytes.len() {
                tracing::warn!(path = %path.display(), kept = entries.len(), "damaged tail of an aborted-transaction index dropped");
                index.dirty(base, &entries)?;
            }
            if !entries.is_empty() {
                index.segments.insert(base, entries);
            }
        }
        Ok(index)
    }

    /// Adds the entry of an abort marker written into the segment based at `segment_base`,
    /// in memory and at the end of the segment's file (not synced: see the module doc).
    pub fn append(&mut self, segment_base: Offset, entry: AbortedTxnEntry) -> std::io::Result<()> {
        let path = self.path(segment_base);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(&entry.encode())?;
        self.segments.entry(segment_base).or_default().push(entry);
        Ok(())
    }

    /// Makes the file of the segment based at `segment_base` durable (the segment is being
    /// sealed). Nothing to do when the segment has no aborted transaction.
    pub fn sync(&self, segment_base: Offset) -> std::io::Result<()> {
        if !self.segments.contains_key(&segment_base) {
            return Ok(());
        }
        std::fs::File::open(self.path(segment_base))?.sync_data()
    }

    /// Replaces every entry whose marker is at or after `from` by `rebuilt` (recovery: the
    /// entries found by replaying the log from `from`, each with its segment's base), and
    /// rewrites the files whose entries changed.
    pub fn rebuild_from(
        &mut self,
        from: Offset,
        rebuilt: Vec<(Offset, AbortedTxnEntry)>,
    ) -> std::io::Result<()> {
        let mut wanted: BTreeMap<Offset, Vec<AbortedTxnEntry>> = BTreeMap::new();
        for (base, entries) in &self.segments {
            let kept: Vec<AbortedTxnEntry> = entries
                .iter()
                .copied()
                .filter(|e| e.last_offset < from)
                .collect();
            wanted.insert(*base, kept);
        }
        for (base, entry) in rebuilt {
            wanted.entry(base).or_default().push(entry);
        }
        for (base, entries) in wanted {
            if self.segments.get(&base).map_or(&[][..], Vec::as_slice) != entries.as_slice() {
                self.dirty(base, &entries)?;
            }
            if entries.is_empty() {
                self.segments.remove(&base);
            } else {
                self.segments.insert(base, entries);
            }
        }
        Ok(())
    }

    /// Drops every entry whose marker is at or after `end` (the log was truncated there) and
    /// rewrites the files that changed; the entries of segments that are gone go with them.
    pub fn truncate_to(&mut self, end: Offset) -> std::io::Result<()> {
        let changed: Vec<Offset> = self
            .segments
            .iter()
            .filter(|(_, entries)| entries.iter().any(|e| e.last_offset >= end))
            .map(|(base, _)| *base)
            .collect();
        for base in changed {
            let kept: Vec<AbortedTxnEntry> = self.segments[&base]
                .iter()
                .copied()
                .filter(|e| e.last_offset < end)
                .collect();
            self.dirty(base, &kept)?;
            if kept.is_empty() {
                self.segments.remove(&base);
            } else {
                self.segments.insert(base, kept);
            }
        }
        Ok(())
    }

    /// Forgets the entries of a deleted segment (its file goes with the segment's files).
    pub fn remove_segment(&mut self, segment_base: Offset) {
        self.segments.remove(&segment_base);
    }

    /// Every aborted transaction that overlaps `[from, upto)`: its marker is at or after
    /// `from` and it started before `upto`. Searches from the segment holding `from` on, and
    /// stops once an entry shows that no transaction starting below `upto` was still open
    /// after it (its last stable offset reaches `upto`), as Kafka's fetch does.
    pub fn collect(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        let start = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(Offset(i64::MIN), |(base, _)| *base);
        let mut out = Vec::new();
        for entries in self.segments.range(start..).map(|(_, e)| e) {
            for e in entries {
                if e.last_offset >= from && e.first_offset < upto {
                    out.push(AbortedTxn {
                        producer_id: e.producer_id,
                        first_offset: e.first_offset,
                    });
                }
                if e.last_stable_offset >= upto {
                    return out;
                }
            }
        }
        out
    }

    /// The cleaner replaced the segments `old` by one based at `base` whose index file (written
    /// by the cleaner's swap) holds `entries`: the in-memory side of that swap.
    pub fn replace_segments(
        &mut self,
        old: &[Offset],
        base: Offset,
        entries: Vec<AbortedTxnEntry>,
    ) {
        for b in old {
            self.segments.remove(b);
        }
        if !entries.is_empty() {
            self.segments.insert(base, entries);
        }
    }

    /// The file contents holding `entries`.
    pub fn encode_entries(entries: &[AbortedTxnEntry]) -> Vec<u8> {
        entries.iter().flat_map(|e| e.encode()).collect()
    }

    /// The entries of one segment (tests, tools).
    pub fn entries(&self, segment_base: Offset) -> &[AbortedTxnEntry] {
        self.segments.get(&segment_base).map_or(&[], Vec::as_slice)
    }

    fn path(&self, segment_base: Offset) -> PathBuf {
        self.dir.join(txn_index_file_name(segment_base))
    }

    /// Rewrites the file of `segment_base` to hold exactly `entries` (removed when empty):
    /// temporary file, fsync, rename, so a crash leaves the old or the new whole file.
    fn dirty(&self, segment_base: Offset, entries: &[AbortedTxnEntry]) -> std::io::Result<()> {
        let path = self.path(segment_base);
        if entries.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self
            .dir
            .join(format!("{}.tmp", txn_index_file_name(segment_base)));
        let mut f = std::fs::File::create(&tmp)?;
        for e in entries {
            f.write_all(&e.encode())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxnEntry {
        AbortedTxnEntry {
            producer_id: pid,
            first_offset: Offset(first),
            last_offset: Offset(last),
            last_stable_offset: Offset(lso),
        }
    }

    fn pids(v: &[AbortedTxn]) -> Vec<i64> {
        v.iter().map(|a| a.producer_id).collect()
    }

    #[test]
    fn collect_finds_overlapping_transactions_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = TxnIndex::load(dir.path(), []).unwrap();
        // Segment 0: txn of 1 in [0, 5]; txn of 2 opened at 3, aborted in segment 100 at 120
        // while 3's txn (from 110) stays open until 130.
        ix.append(Offset(0), entry(1, 0, 5, 3)).unwrap();
        ix.append(Offset(100), entry(2, 3, 120, 110)).unwrap();
        ix.append(Offset(100), entry(3, 110, 130, 131)).unwrap();
        ix.append(Offset(200), entry(4, 200, 210, 211)).unwrap();
        assert_eq!(pids(&ix.collect(Offset(0), Offset(4))), vec![1, 2]);
        assert_eq!(pids(&ix.collect(Offset(6), Offset(50))), vec![2]);
        assert_eq!(pids(&ix.collect(Offset(121), Offset(150))), vec![3]);
        assert_eq!(pids(&ix.collect(Offset(0), Offset(300))), vec![1, 2, 3, 4]);
        assert!(ix.collect(Offset(131), Offset(200)).is_empty());
        // The search stops at an entry whose LSO covers the upper bound.
        assert_eq!(pids(&ix.collect(Offset(100), Offset(111))), vec![2, 3]);
    }

    #[test]
    fn files_round_trip_and_torn_tails_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = TxnIndex::load(dir.path(), []).unwrap();
        ix.append(Offset(0), entry(1, 0, 5, 6)).unwrap();
        ix.append(Offset(0), entry(2, 7, 9, 10)).unwrap();
        ix.sync(Offset(0)).unwrap();
        let path = dir.path().join(txn_index_file_name(Offset(0)));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            2 * TXN_INDEX_ENTRY_BYTES as u64
        );
        let back = TxnIndex::load(dir.path(), [Offset(0)]).unwrap();
        assert_eq!(back.entries(Offset(0)), ix.entries(Offset(0)));

        // A torn third entry is dropped, and the file is cut back to the whole entries.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&entry(3, 11, 12, 13).encode()[..20]).unwrap();
        drop(f);
        let back = TxnIndex::load(dir.path(), [Offset(0)]).unwrap();
        assert_eq!(back.entries(Offset(0)).len(), 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            2 * TXN_INDEX_ENTRY_BYTES as u64
        );
    }

    #[test]
    fn stray_files_are_removed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = TxnIndex::load(dir.path(), []).unwrap();
        ix.append(Offset(0), entry(1, 0, 5, 6)).unwrap();
        ix.append(Offset(10), entry(2, 10, 12, 13)).unwrap();
        let tmp = dir
            .path()
            .join(format!("{}.tmp", txn_index_file_name(Offset(10))));
        std::fs::write(&tmp, b"partial").unwrap();
        let other = dir.path().join("00000000000000000000.log");
        std::fs::write(&other, b"").unwrap();
        // Segment 0 is gone: its index goes too; segment 10's stays.
        let back = TxnIndex::load(dir.path(), [Offset(10)]).unwrap();
        assert_eq!(back.entries(Offset(10)), &[entry(2, 10, 12, 13)]);
        assert!(!dir.path().join(txn_index_file_name(Offset(0))).exists());
        assert!(!tmp.exists());
        assert!(other.exists(), "other files are left alone");
    }

    #[test]
    fn truncation_and_rebuild_rewrite_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = TxnIndex::load(dir.path(), []).unwrap();
        ix.append(Offset(0), entry(1, 0, 5, 6)).unwrap();
        ix.append(Offset(10), entry(2, 7, 12, 13)).unwrap();
        ix.append(Offset(10), entry(3, 14, 15, 16)).unwrap();
        ix.truncate_to(Offset(14)).unwrap();
        let back = TxnIndex::load(dir.path(), [Offset(0), Offset(10)]).unwrap();
        assert_eq!(back.entries(Offset(10)), &[entry(2, 7, 12, 13)]);
        ix.truncate_to(Offset(3)).unwrap();
        assert!(!dir.path().join(txn_index_file_name(Offset(10))).exists());
        assert!(!dir.path().join(txn_index_file_name(Offset(0))).exists());

        // Rebuild keeps entries below `from` and replaces the rest.
        let mut ix = TxnIndex::load(dir.path(), []).unwrap();
        ix.append(Offset(0), entry(1, 0, 5, 6)).unwrap();
        ix.append(Offset(0), entry(9, 6, 8, 9)).unwrap();
        ix.rebuild_from(Offset(6), vec![(Offset(0), entry(2, 6, 7, 8))])
            .unwrap();
        let back = TxnIndex::load(dir.path(), [Offset(0)]).unwrap();
        assert_eq!(
            back.entries(Offset(0)),
            &[entry(1, 0, 5, 6), entry(2, 6, 7, 8)]
        );
    }
}
