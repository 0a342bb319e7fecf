//! The write path of the active segment: aligned DMA write buffers, one write in flight, and
//! coalescing of everything appended meanwhile into the next writes.
//!
//! Appends copy bytes into the active buffer synchronously (so offsets and file order follow
//! call order) and return the logical end position. A buffer that fills up is queued whole and
//! the append continues in a new one (twice as large, up to [`WRITE_CHUNK_BYTES`]), so no byte
//! is copied twice however much arrives while a write is in flight. (A buffer started while
//! the partition is idle is sized for its append, so ten thousand partitions taking small
//! appends do not each hold a 256 KiB buffer; if more appends join it before its write starts,
//! it grows by copying, at most once and less than [`WRITE_BUFFER_BYTES`].) A detached writer task,
//! started when data is pending and no write is in flight, writes the queued buffers in file
//! order, then the active one as whole sectors starting at the sector that holds the first
//! unwritten byte: the partial last sector is rewritten as data arrives, so the file is one
//! contiguous Kafka log (the zero padding past the logical end is cut off when the segment rolls
//! or closes, and is treated as a zeroed tail by recovery after a crash). After each write the
//! buffer is released, keeping only the partial last sector (< 4 KiB), so an idle partition
//! holds no write buffer. A failed or short write fails the writer for good; nothing appended
//! after the failure point is ever acknowledged.
//! Owned by the partition's home shard; never crosses cores.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use glommio::io::DmaBuffer;

use crate::durability::Waiters;
use crate::histogram::LatencyHistogram;
use crate::io::{align_down, align_up, LogFile};
use crate::limits::{
    SECTOR_BYTES, WRITE_BUFFER_BYTES, WRITE_BUFFER_PENDING_BYTES_MAX, WRITE_CHUNK_BYTES,
};
use crate::segment::Segment;
use crate::types::Offset;

/// The writer of the active segment. Owned by the partition's home shard; never crosses cores.
pub struct SegmentWriter {
    seg: Rc<Segment>,
    st: RefCell<WriterState>,
    waiters: Waiters,
    /// The shard's histogram of write latencies (shared by every writer of the shard).
    write_latency: Rc<LatencyHistogram>,
}

struct WriterState {
    /// Full buffers waiting for their write, in file order, with the file position of each
    /// (sector aligned; each holds data up to its capacity).
    full: VecDeque<(DmaBuffer, u64)>,
    /// Bytes held in `full`.
    full_bytes: usize,
    /// The buffer appends go into; `None` while idle.
    buf: Option<DmaBuffer>,
    /// File position of `buf[0]` (sector aligned).
    buf_pos: u64,
    /// Bytes of `buf` holding data (`buf_pos + buf_len == end`).
    buf_len: usize,
    /// The bytes of the partial last sector while `buf` is `None`.
    tail: Vec<u8>,
    /// Logical end: bytes appended to the segment.
    end: u64,
    /// Bytes confirmed written to the device (a prefix of the file).
    written: u64,
    in_flight: bool,
    failed: Option<String>,
    /// `(end position, next offset)` of appends not yet written, in order.
    marks: VecDeque<(u64, Offset)>,
    /// One past the last offset whose bytes are written.
    written_offset: Offset,
    /// File position where the batch ending just before `written_offset` ends: the last batch
    /// boundary inside the written prefix. `written` itself may fall inside a batch, because
    /// a large batch can span two writes.
    written_boundary: u64,
    writes: u64,
}

impl SegmentWriter {
    /// A writer appending at `end` of `seg`; `tail` holds the file's bytes in
    /// `[align_down(end), end)` and `next_offset` is the offset of the next batch. Each write's
    /// latency is recorded in `write_latency`.
    pub fn new(
        seg: Rc<Segment>,
        end: u64,
        tail: Vec<u8>,
        next_offset: Offset,
        write_latency: Rc<LatencyHistogram>,
    ) -> Rc<Self> {
        debug_assert_eq!(tail.len() as u64, end - align_down(end));
        Rc::new(SegmentWriter {
            seg,
            st: RefCell::new(WriterState {
                full: VecDeque::new(),
                full_bytes: 0,
                buf: None,
                buf_pos: align_down(end),
                buf_len: 0,
                tail,
                end,
                written: end,
                in_flight: false,
                failed: None,
                marks: VecDeque::new(),
                written_offset: next_offset,
                written_boundary: end,
                writes: 0,
            }),
            waiters: Waiters::default(),
            write_latency,
        })
    }

    pub fn segment(&self) -> &Rc<Segment> {
        &self.seg
    }

    /// Copies `parts` (together whole batches ending just before offset `next`) into the write
    /// buffer and returns the segment's new logical end. Does not start a write: call
    /// [`Self::kick`].
    pub fn append(&self, parts: &[&[u8]], next: Offset) -> u64 {
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if st.buf.is_none() {
            let t = st.tail.len();
            // While a write is in flight, more appends will likely join this buffer before it
            // is written, so it starts large. From idle it is sized for this append (and
            // grows if others join it before its write starts, below): with many partitions
            // each taking small appends, a 256 KiB buffer per append left the heap fragmented
            // (10,000 partitions: 600 MiB of RSS beyond the batch cache, against 280 MiB).
            let least = if st.in_flight {
                WRITE_BUFFER_BYTES
            } else {
                SECTOR_BYTES as usize
            };
            let cap = align_up((t + total).clamp(least, WRITE_CHUNK_BYTES) as u64);
            let mut b = alloc_buffer(cap as usize);
            b.as_bytes_mut()[..t].copy_from_slice(&st.tail);
            st.tail = Vec::new();
            st.buf_pos = align_down(st.end);
            st.buf_len = t;
            st.buf = Some(b);
        }
        let mut left = total;
        for p in parts {
            let mut rest: &[u8] = p;
            while !rest.is_empty() {
                let cap = st.buf.as_ref().map_or(0, DmaBuffer::len);
                if st.buf_len == cap && cap < WRITE_BUFFER_BYTES {
                    // A small buffer started from idle, not yet taken by the writer: grow it
                    // (copying less than `WRITE_BUFFER_BYTES`, once) rather than write it on
                    // its own, so what arrives together still goes out in one write.
                    let grown = align_up(
                        (2 * cap)
                            .max(st.buf_len + left)
                            .clamp(WRITE_BUFFER_BYTES, WRITE_CHUNK_BYTES)
                            as u64,
                    );
                    let mut b = alloc_buffer(grown as usize);
                    if let Some(old) = st.buf.as_ref() {
                        b.as_bytes_mut()[..st.buf_len]
                            .copy_from_slice(&old.as_bytes()[..st.buf_len]);
                    }
                    st.buf = Some(b);
                    continue;
                }
                if st.buf_len == cap {
                    // Full (it starts and ends on sector boundaries): queue it whole and go on
                    // in a larger one.
                    if let Some(b) = st.buf.take() {
                        st.full.push_back((b, st.buf_pos));
                        st.full_bytes += cap;
                    }
                    st.buf_pos += cap as u64;
                    st.buf_len = 0;
                    let next_cap = (2 * cap)
                        .max(left)
                        .clamp(WRITE_BUFFER_BYTES, WRITE_CHUNK_BYTES);
                    st.buf = Some(alloc_buffer(align_up(next_cap as u64) as usize));
                    continue;
                }
                let n = rest.len().min(cap - st.buf_len);
                if let Some(b) = st.buf.as_mut() {
                    b.as_bytes_mut()[st.buf_len..st.buf_len + n].copy_from_slice(&rest[..n]);
                }
                st.buf_len += n;
                left -= n;
                rest = &rest[n..];
            }
        }
        st.end += total as u64;
        debug_assert_eq!(st.buf_pos + st.buf_len as u64, st.end);
        st.marks.push_back((st.end, next));
        st.end
    }

    /// Starts the writer task if data is pending and no write is in flight.
    pub fn kick(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        if st.in_flight || st.failed.is_some() || st.written == st.end {
            return;
        }
        st.in_flight = true;
        drop(st);
        // Spawn with no borrow held: glommio may start running the new task right away.
        let me = self.clone();
        glommio::spawn_local(async move { me.write_loop().await }).detach();
    }

    /// Waits until the bytes up to `end` are written. Err carries the write failure.
    pub async fn wait_written(&self, end: u64) -> Result<(), String> {
        self.waiters
            .until(|| {
                let st = self.st.borrow();
                if st.written >= end {
                    Some(Ok(()))
                } else {
                    st.failed.clone().map(Err)
                }
            })
            .await
    }

    /// Waits while a write is in flight and too many bytes are already waiting behind it.
    pub async fn wait_room(&self) {
        self.waiters
            .until(|| {
                let st = self.st.borrow();
                let full =
                    st.in_flight && st.full_bytes + st.buf_len > WRITE_BUFFER_PENDING_BYTES_MAX;
                (!full || st.failed.is_some()).then_some(())
            })
            .await
    }

    /// Writes everything appended so far and waits for it.
    pub async fn drain(self: &Rc<Self>) -> Result<(), String> {
        self.kick();
        let end = self.st.borrow().end;
        self.wait_written(end).await
    }

    /// One past the last offset whose bytes reached the device.
    pub fn written_offset(&self) -> Offset {
        self.st.borrow().written_offset
    }

    /// The last batch boundary inside the written prefix and the offset that starts there,
    /// read together: what a recovery point may name. (The written prefix itself can end
    /// inside a batch that spans two writes; a recovery point there would make recovery
    /// start scanning mid-batch and keep a batch whose tail never reached the disk.)
    pub fn written_mark(&self) -> (u64, Offset) {
        let st = self.st.borrow();
        (st.written_boundary, st.written_offset)
    }

    /// The logical end position (appended bytes).
    pub fn end(&self) -> u64 {
        self.st.borrow().end
    }

    pub fn failure(&self) -> Option<String> {
        self.st.borrow().failed.clone()
    }

    /// Bytes of memory the writer holds for buffering right now.
    pub fn buffer_bytes(&self) -> usize {
        let st = self.st.borrow();
        st.full_bytes + st.buf.as_ref().map_or(0, DmaBuffer::len) + st.tail.capacity()
    }

    /// Number of DMA writes completed.
    pub fn writes(&self) -> u64 {
        self.st.borrow().writes
    }

    async fn write_loop(self: Rc<Self>) {
        loop {
            let job = {
                let mut guard = self.st.borrow_mut();
                let st = &mut *guard;
                let queued = if st.failed.is_some() {
                    None
                } else {
                    st.full.pop_front()
                };
                let buf = if queued.is_some() || st.failed.is_some() || st.written == st.end {
                    None
                } else {
                    st.buf.take()
                };
                if let Some((buf, pos)) = queued {
                    // A full buffer: every byte is data, and the write ends where it does.
                    let len = buf.len();
                    st.full_bytes -= len;
                    Some((buf, pos, len, pos + len as u64))
                } else {
                    match buf {
                        None => {
                            st.in_flight = false;
                            None
                        }
                        Some(mut buf) => {
                            let len = st.buf_len;
                            let aligned = align_up(len as u64) as usize;
                            buf.as_bytes_mut()[len..aligned].fill(0);
                            buf.trim_to_size(aligned);
                            let partial = align_down(len as u64) as usize;
                            st.tail = buf.as_bytes()[partial..len].to_vec();
                            let pos = st.buf_pos;
                            st.buf_pos = pos + partial as u64;
                            st.buf_len = 0;
                            Some((buf, pos, aligned, st.end))
                        }
                    }
                }
            };
            let Some((buf, pos, aligned, target)) = job else {
                self.waiters.wake_all();
                return;
            };
            let started = Instant::now();
            let result = self.seg.file().write_at(Rc::new(buf), pos).await;
            self.write_latency.observe(started.elapsed());
            {
                let mut st = self.st.borrow_mut();
                match result {
                    Ok(n) if n >= aligned => {
                        st.written = target;
                        st.writes += 1;
                        while let Some(&(e, next)) = st.marks.front() {
                            if e > target {
                                break;
                            }
                            st.written_offset = next;
                            st.written_boundary = e;
                            st.marks.pop_front();
                        }
                        // Readers see whole batches only: the written prefix may end inside
                        // a batch that spans two writes.
                        self.seg.meta.borrow_mut().readable = st.written_boundary;
                    }
                    Ok(n) => {
                        st.failed = Some(format!(
                            "short write of {n} of {aligned} bytes at {pos} in {}",
                            self.seg.log_path().display()
                        ));
                    }
                    Err(e) => {
                        st.failed = Some(format!(
                            "write of {aligned} bytes at {pos} in {}: {e}",
                            self.seg.log_path().display()
                        ));
                    }
                }
            }
            self.waiters.wake_all();
        }
    }
}

/// Write buffers live for one write round (they are dropped when the write completes), so they
/// come from the executor's DMA pool: pre-allocated, pre-faulted memory registered with
/// io_uring, which avoids a page-fault storm and page pinning per write. glommio falls back to the
/// system allocator when the pool is exhausted.
fn alloc_buffer(cap: usize) -> DmaBuffer {
    glommio::allocate_dma_buffer(cap)
}
