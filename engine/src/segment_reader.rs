//! Reading segments: a chunked scanner that hops from batch to batch (recovery, index rebuild,
//! timestamp search), and the KIP-74 read of whole batches starting at an offset.
//!
//! Reads go through the [`LogFile`] seam with large chunked reads and never past the segment's
//! readable length (bytes confirmed written). Runs on the partition's home shard.

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::error::{Error, Result};
use crate::io::{AnyFile, LogFile};
use crate::limits::BATCH_HEADER_BYTES;
use crate::segment::Segment;
use crate::types::{FilePos, Offset};

/// One step of a scan.
#[derive(Debug)]
pub enum ScanItem {
    /// A batch whose header is well formed and whose declared length fits before the end.
    /// `bytes` holds the whole batch when the scan asked for bodies, else it is empty.
    Batch {
        pos: FilePos,
        header: BatchHeader,
        bytes: Bytes,
    },
    /// The scan reached the end exactly at a batch boundary.
    End,
    /// The bytes at `pos` are not a batch that fits (`what` says why); the scan stops.
    Defect { pos: FilePos, what: &'static str },
}

/// Walks the batches of `[start, end)` of a file with reads of `chunk_bytes` (or one whole batch
/// when a batch is larger).
pub struct Scanner<'a> {
    file: &'a AnyFile,
    pos: u64,
    end: u64,
    chunk: Bytes,
    chunk_pos: u64,
    chunk_bytes: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(file: &'a AnyFile, start: u64, end: u64, chunk_bytes: usize) -> Scanner<'a> {
        Scanner {
            file,
            pos: start,
            end,
            chunk: Bytes::new(),
            chunk_pos: start,
            chunk_bytes,
        }
    }

    /// The position of the next batch.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next batch (with its bytes when `bodies`), the end, or the defect that stops the scan.
    pub async fn next(&mut self, bodies: bool) -> Result<ScanItem> {
        if self.pos >= self.end {
            return Ok(ScanItem::End);
        }
        let pos = self.pos;
        if self.end - pos < BATCH_HEADER_BYTES as u64 {
            return Ok(ScanItem::Defect {
                pos: FilePos(pos),
                what: "fewer bytes than a batch header",
            });
        }
        self.ensure(pos, BATCH_HEADER_BYTES).await?;
        let at = (pos - self.chunk_pos) as usize;
        let Some(header) = BatchHeader::read(&self.chunk[at..]) else {
            return Ok(ScanItem::Defect {
                pos: FilePos(pos),
                what: "batch length smaller than its header",
            });
        };
        if header.total_len > self.end - pos {
            return Ok(ScanItem::Defect {
                pos: FilePos(pos),
                what: "batch length reaches past the end",
            });
        }
        let len = header.total_len as usize;
        let bytes = if bodies {
            self.ensure(pos, len).await?;
            let at = (pos - self.chunk_pos) as usize;
            self.chunk.slice(at..at + len)
        } else {
            Bytes::new()
        };
        self.pos += header.total_len;
        Ok(ScanItem::Batch {
            pos: FilePos(pos),
            header,
            bytes,
        })
    }

    async fn ensure(&mut self, pos: u64, n: usize) -> Result<()> {
        let have_end = self.chunk_pos + self.chunk.len() as u64;
        if self.chunk_pos <= pos && pos + n as u64 <= have_end {
            return Ok(());
        }
        let want = (n.max(self.chunk_bytes) as u64).min(self.end - pos) as usize;
        let data = self
            .file
            .read_at(pos, want)
            .await
            .map_err(|e| Error::io("read segment", self.file.path(), e))?;
        if data.len() < n {
            return Err(Error::io(
                "read segment",
                self.file.path(),
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
            ));
        }
        self.chunk = data;
        self.chunk_pos = pos;
        Ok(())
    }
}

/// Where a batch lies: the segment-relative position and its header.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    pub pos: FilePos,
    pub header: BatchHeader,
}

/// Finds the batch containing `offset` or, if none, the first batch after it, in `[from,
/// readable)`; `None` when no batch ends after `offset`.
pub async fn locate(
    seg: &Segment,
    from: FilePos,
    offset: Offset,
    readable: u64,
    chunk_bytes: usize,
) -> Result<Option<Located>> {
    let mut scanner = Scanner::new(seg.file(), from.0, readable, chunk_bytes);
    loop {
        match scanner.next(false).await? {
            ScanItem::Batch { pos, header, .. } => {
                if header.last_offset() >= offset {
                    return Ok(Some(Located { pos, header }));
                }
            }
            ScanItem::End => return Ok(None),
            ScanItem::Defect { pos, what } => {
                return Err(Error::CorruptLog {
                    segment: seg.log_path(),
                    pos,
                    detail: what.to_string(),
                })
            }
        }
    }
}

/// Reads whole batches starting with the located batch, up to `max_bytes` but always the whole
/// first batch (KIP-74), never past `readable`. Returns the bytes and how many were taken.
pub async fn read_batches(
    seg: &Segment,
    first: Located,
    max_bytes: usize,
    readable: u64,
) -> Result<Bytes> {
    let start = first.pos.0;
    let want = (max_bytes as u64).max(first.header.total_len);
    let len = want.min(readable - start) as usize;
    let data = seg
        .file()
        .read_at(start, len)
        .await
        .map_err(|e| Error::io("read segment", seg.log_path(), e))?;
    // Keep whole batches only.
    let mut keep = 0usize;
    while keep + BATCH_HEADER_BYTES <= data.len() {
        let Some(h) = BatchHeader::read(&data[keep..]) else {
            break;
        };
        if keep + h.total_len as usize > data.len() {
            break;
        }
        keep += h.total_len as usize;
    }
    if keep == 0 {
        return Err(Error::CorruptLog {
            segment: seg.log_path(),
            pos: first.pos,
            detail: "batch unreadable at a position the index or scan pointed to".to_string(),
        });
    }
    Ok(data.slice(..keep))
}

/// How much a boundary scan reads at a time: it only needs batch headers, and it starts at most
/// one index interval (plus one batch) before where it stops.
const BOUNDARY_SCAN_BYTES: usize = 8 * 1024;

/// The ends of whole batches from the located batch on, up to `limit` (a file position at
/// most the segment's readable length), without reading the batches: the first batch's end
/// always (KIP-74: it is sent whole even when larger than the limit), every indexed batch start
/// in between (the sparse index lists batch starts, and a start is the previous batch's end),
/// and the batches after the last of those found by reading their headers alone. `readable` is
/// the segment's readable length that `limit` was derived from (a batch boundary). Positions
/// are absolute and ascending; the last is where a read of whole batches may stop.
///
/// The zero-copy read uses this: the length of a records range must be exact before the
/// response header is written, and the bytes themselves are moved by the kernel later.
pub async fn batch_ends(
    seg: &Segment,
    first: Located,
    limit: u64,
    readable: u64,
) -> Result<Vec<u64>> {
    let first_end = first.pos.0 + first.header.total_len;
    let mut ends = vec![first_end];
    if first_end >= limit {
        return Ok(ends);
    }
    if let Some(ix) = seg.meta.borrow().index.as_ref() {
        ends.extend(ix.positions_in(FilePos(first_end), FilePos(limit)));
    }
    let at = ends.last().copied().unwrap_or(first_end);
    if at == limit || limit == readable {
        // The readable end is a batch boundary: the writer only publishes whole appends.
        if at != limit {
            ends.push(limit);
        }
        return Ok(ends);
    }
    let mut scanner = Scanner::new(seg.file(), at, limit, BOUNDARY_SCAN_BYTES);
    // A batch that reaches past `limit` (or a short tail) ends the scan: it is left for the
    // next fetch. Corruption there is reported by the read that starts at it.
    while let ScanItem::Batch { pos, header, .. } = scanner.next(false).await? {
        ends.push(pos.0 + header.total_len);
    }
    Ok(ends)
}
