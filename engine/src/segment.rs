//! One segment of a partition log: a `.log` file of contiguous v2 batches named by its base
//! offset, with its sparse `.index` and `.timeindex`, plus the in-memory facts the partition
//! needs about it (next offset, size, newest timestamp).
//!
//! A segment is shared (`Rc`) by the partition, its writer while active, in-flight reads and the
//! file slices handed to zero-copy sends. Owned by the partition's home shard; never crosses
//! cores. Closed segments are immutable: they were truncated to their exact size and synced,
//! and their indexes were written and synced, when they rolled.

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::io::{BufferedFile, OpenOptions};

use crate::batch::BatchHeader;
use crate::error::{Error, Result};
use crate::index::{IndexDefect, OffsetIndex, TimeIndex};
use crate::io::{AnyFile, IoBackend, LogFile};
use crate::limits::{OFFSET_INDEX_ENTRY_BYTES, SCAN_CHUNK_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::segment_reader::{ScanItem, Scanner};
use crate::types::{FilePos, Offset};

/// `00000000000000000042.log` for base offset 42, as Kafka names segment files.
pub fn log_file_name(base: Offset) -> String {
    format!("{:020}.log", base.0)
}

/// The base offset encoded in a segment file name, if it is one.
pub fn parse_log_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

/// Mutable facts about a segment.
#[derive(Debug, Default)]
pub struct SegmentMeta {
    /// One past the last offset stored (assigned, possibly not yet written).
    pub next_offset: Offset,
    /// Logical bytes stored (assigned, possibly not yet written).
    pub size: u64,
    /// Bytes that are on the device and may be read.
    pub readable: u64,
    /// Newest batch max timestamp and that batch's last offset (`None` if unknown/empty).
    pub max_timestamp: Option<(i64, Offset)>,
    /// Wall-clock ms of the first append since the segment became active (for `segment.ms`).
    pub first_append_ms: Option<i64>,
    /// The offset index, `None` until loaded or rebuilt.
    pub index: Option<OffsetIndex>,
    pub time_index: Option<TimeIndex>,
    /// Bytes appended since the last index entry.
    pub bytes_since_index: u64,
}

/// One segment: its `.log` file and what is known about it. Owned by the partition's home shard;
/// never crosses cores.
pub struct Segment {
    base: Offset,
    dir: PathBuf,
    file: AnyFile,
    /// A buffered, read-only descriptor of the `.log` file for zero-copy sends, opened on first
    /// use (see [`Segment::send_file`]).
    send_file: RefCell<Option<Arc<File>>>,
    pub meta: RefCell<SegmentMeta>,
}

impl Segment {
    /// Opens or creates the `.log` file of the segment with base offset `base` in `dir`.
    pub async fn open(dir: &Path, base: Offset, io: &IoBackend, create: bool) -> Result<Segment> {
        let path = dir.join(log_file_name(base));
        let file = io
            .open(&path, create)
            .await
            .map_err(|e| Error::io("open segment", &path, e))?;
        let len = file
            .size()
            .await
            .map_err(|e| Error::io("stat segment", &path, e))?;
        Ok(Segment {
            base,
            dir: dir.to_path_buf(),
            file,
            send_file: RefCell::new(None),
            meta: RefCell::new(SegmentMeta {
                next_offset: base,
                size: len,
                readable: len,
                ..SegmentMeta::default()
            }),
        })
    }

    /// A segment over an already open `.log` file whose facts are known (the cleaner's output:
    /// written, synced and indexed before it replaces other segments under its final name).
    pub fn with_file(dir: &Path, base: Offset, file: AnyFile, meta: SegmentMeta) -> Segment {
        Segment {
            base,
            dir: dir.to_path_buf(),
            file,
            send_file: RefCell::new(None),
            meta: RefCell::new(meta),
        }
    }

    pub fn base(&self) -> Offset {
        self.base
    }
    pub fn file(&self) -> &AnyFile {
        &self.file
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(log_file_name(self.base))
    }
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(format!("{:020}.index", self.base.0))
    }
    pub fn time_index_path(&self) -> PathBuf {
        self.dir.join(format!("{:020}.timeindex", self.base.0))
    }
    /// The aborted-transaction index (see [`crate::txn_index`]); deleted with the segment.
    pub fn txn_index_path(&self) -> PathBuf {
        self.dir
            .join(crate::txn_index::txn_index_file_name(self.base))
    }
    pub fn next_offset(&self) -> Offset {
        self.meta.borrow().next_offset
    }
    pub fn size(&self) -> u64 {
        self.meta.borrow().size
    }
    pub fn readable(&self) -> u64 {
        self.meta.borrow().readable
    }

    /// The `.log` file opened for buffered reads, from which fetches splice record data to
    /// sockets (page cache → pipe → socket, never through user space). Opened on first use and
    /// then shared: a file range handed to a send holds the `Arc`, so the bytes stay readable
    /// even if retention deletes the segment before the send ends.
    ///
    /// Reading through the page cache a file that is written with O_DIRECT is coherent for
    /// what a fetch may read: a direct write invalidates the cached pages of its range once it
    /// completes, and only bytes below the readable length (written, and never rewritten with
    /// other contents) are ever read. The open is a short blocking call, once per segment.
    pub fn send_file(&self) -> Result<Arc<File>> {
        if let Some(f) = self.send_file.borrow().as_ref() {
            return Ok(f.clone());
        }
        let path = self.log_path();
        let f = Arc::new(
            File::open(&path).map_err(|e| Error::io("open segment for sending", &path, e))?,
        );
        *self.send_file.borrow_mut() = Some(f.clone());
        Ok(f)
    }

    /// Records a batch just placed at `pos` in the in-memory indexes and facts.
    pub fn note_batch(&self, pos: FilePos, h: &BatchHeader, interval_bytes: u32, now_ms: i64) {
        let mut m = self.meta.borrow_mut();
        note_batch_in(&mut m, self.base, pos, h, interval_bytes);
        if m.first_append_ms.is_none() {
            m.first_append_ms = Some(now_ms);
        }
    }

    /// Writes `.index` and `.timeindex` whole and syncs them. Called when the segment rolls or
    /// the partition closes cleanly. Runs on the partition's home shard.
    pub async fn persist_indexes(&self) -> Result<()> {
        let (ix, tix) = {
            let m = self.meta.borrow();
            (
                m.index.as_ref().map(OffsetIndex::encode),
                m.time_index.as_ref().map(TimeIndex::encode),
            )
        };
        if let Some(ix) = ix {
            write_whole_file(&self.index_path(), ix).await?;
        }
        if let Some(tix) = tix {
            write_whole_file(&self.time_index_path(), tix).await?;
        }
        Ok(())
    }

    /// Loads the persisted indexes of a closed segment, checking them cheaply; on any defect the
    /// indexes are rebuilt by scanning the segment's headers. Runs on the home shard.
    pub async fn ensure_indexes(&self, interval_bytes: u32) -> Result<()> {
        if self.meta.borrow().index.is_some() && self.meta.borrow().time_index.is_some() {
            return Ok(());
        }
        match self.load_indexes().await {
            Ok((ix, tix)) => {
                let mut m = self.meta.borrow_mut();
                if m.max_timestamp.is_none() {
                    m.max_timestamp = tix.last(self.base);
                }
                m.index = Some(ix);
                m.time_index = Some(tix);
                Ok(())
            }
            Err(defect) => {
                tracing::info!(segment = %self.log_path().display(), ?defect, "rebuilding segment indexes");
                self.rebuild_indexes(interval_bytes).await
            }
        }
    }

    /// Reads only the last entry of each persisted index (a few bytes, whatever the segment
    /// size), for the start-up check of a closed segment: the last offset-index entry, if it
    /// points inside the log, and the newest timestamp, which is recorded in the segment's facts.
    /// The full indexes are loaded lazily on first use.
    pub async fn last_index_entries(&self) -> Option<(Offset, FilePos)> {
        let (readable, next) = {
            let m = self.meta.borrow();
            (m.readable, m.next_offset)
        };
        let ix = read_file_tail(&self.index_path(), OFFSET_INDEX_ENTRY_BYTES).await?;
        let rel = u32::from_be_bytes([ix[0], ix[1], ix[2], ix[3]]);
        let pos = u32::from_be_bytes([ix[4], ix[5], ix[6], ix[7]]);
        if u64::from(pos) >= readable || self.base.0 + i64::from(rel) >= next.0 {
            return None;
        }
        if let Some(t) = read_file_tail(&self.time_index_path(), TIME_INDEX_ENTRY_BYTES).await {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&t[..8]);
            let trel = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
            if self.base.0 + i64::from(trel) < next.0 {
                self.meta.borrow_mut().max_timestamp =
                    Some((i64::from_be_bytes(ts), self.base.plus(i64::from(trel))));
            }
        }
        Some((self.base.plus(i64::from(rel)), FilePos(u64::from(pos))))
    }

    /// Loads the persisted indexes if they pass the cheap checks; reports the defect otherwise
    /// (the caller leaves them to be rebuilt lazily).
    pub async fn ensure_indexes_if_sound(&self) -> std::result::Result<(), IndexDefect> {
        let (ix, tix) = self.load_indexes().await?;
        let mut m = self.meta.borrow_mut();
        if let Some((t, off)) = tix.last(self.base) {
            if m.max_timestamp.is_none_or(|(mt, _)| t > mt) {
                m.max_timestamp = Some((t, off));
            }
        }
        m.index = Some(ix);
        m.time_index = Some(tix);
        Ok(())
    }

    async fn load_indexes(&self) -> std::result::Result<(OffsetIndex, TimeIndex), IndexDefect> {
        let (readable, next) = {
            let m = self.meta.borrow();
            (m.readable, m.next_offset)
        };
        self.load_indexes_within(readable, next).await
    }

    /// Loads the persisted indexes, accepting them only if every entry lies below `log_len`
    /// bytes and `next` offset.
    pub async fn load_indexes_within(
        &self,
        readable: u64,
        next: Offset,
    ) -> std::result::Result<(OffsetIndex, TimeIndex), IndexDefect> {
        let ix = read_whole_file(&self.index_path()).await?;
        let ix = OffsetIndex::decode(&ix, readable)?;
        let tix = read_whole_file(&self.time_index_path()).await?;
        let tix = TimeIndex::decode(&tix, next.0 - self.base.0)?;
        Ok((ix, tix))
    }

    /// Rebuilds both indexes from the batch headers in `[0, readable)`.
    pub async fn rebuild_indexes(&self, interval_bytes: u32) -> Result<()> {
        let readable = self.readable();
        let mut scanner = Scanner::new(&self.file, 0, readable, SCAN_CHUNK_BYTES);
        let mut fresh = SegmentMeta {
            index: Some(OffsetIndex::default()),
            time_index: Some(TimeIndex::default()),
            ..SegmentMeta::default()
        };
        loop {
            match scanner.next(false).await? {
                ScanItem::Batch { pos, header, .. } => {
                    note_batch_in(&mut fresh, self.base, pos, &header, interval_bytes)
                }
                ScanItem::End => break,
                ScanItem::Defect { pos, what } => {
                    return Err(Error::CorruptLog {
                        segment: self.log_path(),
                        pos,
                        detail: format!("while rebuilding the index: {what}"),
                    })
                }
            }
        }
        let mut m = self.meta.borrow_mut();
        if m.index.is_some() && m.time_index.is_some() {
            // Another task rebuilt them meanwhile.
            return Ok(());
        }
        m.index = fresh.index;
        m.time_index = fresh.time_index;
        // Appends made while this scan ran may hold a newer maximum than the scanned range.
        if fresh
            .max_timestamp
            .is_some_and(|(t, _)| m.max_timestamp.is_none_or(|(mt, _)| t > mt))
        {
            m.max_timestamp = fresh.max_timestamp;
        }
        Ok(())
    }

    /// Deletes the segment's files (retention, truncation). Missing files are fine.
    pub fn remove_files(&self) -> Result<()> {
        for p in [
            self.log_path(),
            self.index_path(),
            self.time_index_path(),
            self.txn_index_path(),
        ] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove segment file", p, e)),
            }
        }
        Ok(())
    }

    /// Deletes the index files only (the segment became active again and they are stale).
    pub fn remove_index_files(&self) -> Result<()> {
        for p in [self.index_path(), self.time_index_path()] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove index file", p, e)),
            }
        }
        Ok(())
    }
}

/// How often a retired segment is checked for readers that still hold it.
const RETIRE_POLL: Duration = Duration::from_millis(100);
/// Bytes freed per truncation step of a retired segment's file.
const RETIRE_STEP_BYTES: u64 = 16 << 20;

/// Frees the blocks of segments whose files were removed (retention, truncation) or replaced
/// (cleaning), off the shard thread. The files are already unlinked or renamed over; their
/// blocks are freed when the last descriptor closes, and a segment's descriptors close on the
/// shard thread when it is dropped: ext4 held the shard for as long as freeing took (87 ms for
/// the four 64 MiB segments of one cleaning in the cleaner benchmark, stalling every produce
/// request of the shard). Instead, once nothing else holds a segment (a read or a zero-copy
/// send in progress may, for a while), its file is truncated to nothing in steps on the
/// blocking thread, and only then closed. Runs on the segments' shard.
pub fn retire(segments: Vec<Rc<Segment>>) {
    if segments.is_empty() {
        return;
    }
    glommio::spawn_local(async move {
        for s in segments {
            retire_one(s).await;
        }
    })
    .detach();
}

async fn retire_one(mut s: Rc<Segment>) {
    let seg = loop {
        match Rc::try_unwrap(s) {
            Ok(seg) => break seg,
            Err(held) => {
                s = held;
                glommio::timer::sleep(RETIRE_POLL).await;
            }
        }
    };
    // A zero-copy send in progress holds its own descriptor of the file.
    while seg
        .send_file
        .borrow()
        .as_ref()
        .is_some_and(|f| Arc::strong_count(f) > 1)
    {
        glommio::timer::sleep(RETIRE_POLL).await;
    }
    let Ok(file) = seg.file.duplicate() else {
        return; // closed as any segment is
    };
    let freed = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            let mut len = file.metadata()?.len();
            while len > 0 {
                len = len.saturating_sub(RETIRE_STEP_BYTES);
                file.set_len(len)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = freed {
        tracing::warn!(segment = %seg.log_path().display(), error = %e, "could not free a removed segment's blocks off the shard; they are freed when it closes");
    }
}

/// Adds one batch to the facts and sparse indexes in `m`.
pub(crate) fn note_batch_in(
    m: &mut SegmentMeta,
    base: Offset,
    pos: FilePos,
    h: &BatchHeader,
    interval_bytes: u32,
) {
    if m.bytes_since_index >= u64::from(interval_bytes) || pos.0 == 0 {
        if let Some(ix) = m.index.as_mut() {
            ix.push(base, h.base_offset, pos);
        }
        m.bytes_since_index = 0;
    }
    m.bytes_since_index += h.total_len;
    let newer = m.max_timestamp.is_none_or(|(t, _)| h.max_timestamp > t);
    if newer {
        m.max_timestamp = Some((h.max_timestamp, h.last_offset()));
        if let Some(t) = m.time_index.as_mut() {
            t.push(base, h.max_timestamp, h.last_offset());
        }
    }
    m.next_offset = h.next_offset();
    m.size = pos.0 + h.total_len;
}

async fn write_whole_file(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(path)
        .await
        .map_err(|e| Error::io("create index", path, e.into()))?;
    if !bytes.is_empty() {
        f.write_at(bytes, 0)
            .await
            .map_err(|e| Error::io("write index", path, e.into()))?;
    }
    f.fdatasync()
        .await
        .map_err(|e| Error::io("sync index", path, e.into()))?;
    f.close()
        .await
        .map_err(|e| Error::io("close index", path, e.into()))
}

/// The last `n` bytes of a file whose length is a non-zero multiple of `n`.
async fn read_file_tail(path: &Path, n: usize) -> Option<Vec<u8>> {
    let f = BufferedFile::open(path).await.ok()?;
    let len = f.file_size().await.ok()?;
    let out = if len == 0 || len % n as u64 != 0 {
        None
    } else {
        f.read_at(len - n as u64, n)
            .await
            .ok()
            .filter(|r| r.len() == n)
            .map(|r| r.to_vec())
    };
    let _ = f.close().await;
    out
}

async fn read_whole_file(path: &Path) -> std::result::Result<Vec<u8>, IndexDefect> {
    let f = BufferedFile::open(path)
        .await
        .map_err(|_| IndexDefect::Missing)?;
    let len = f.file_size().await.map_err(|_| IndexDefect::Missing)?;
    let data = if len == 0 {
        Vec::new()
    } else {
        f.read_at(0, len as usize)
            .await
            .map_err(|_| IndexDefect::Missing)?
            .to_vec()
    };
    let _ = f.close().await;
    if data.len() as u64 != len {
        return Err(IndexDefect::BadLength);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(log_file_name(Offset(42)), "00000000000000000042.log");
        assert_eq!(
            parse_log_file_name("00000000000000000042.log"),
            Some(Offset(42))
        );
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
    }
}
