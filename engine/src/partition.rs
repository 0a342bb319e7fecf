//! A partition log: a directory of segments with one active segment, the offsets, the
//! durability bookkeeping and the public API the broker uses (append, read, list offsets,
//! truncate, delete records, close).
//!
//! Owned by the partition's home shard; never crosses cores (`Rc` + `RefCell`, and no RefCell
//! borrow is ever held across an `.await`). An append takes its place in the partition's
//! [`AppendOrder`] synchronously, when `append` is called; the places are served one at a time
//! through the short critical section that may roll the segment and then assigns offsets and
//! copies bytes into the write buffer, so offsets follow call order while the waits for the
//! device write and the group-committed fdatasync overlap across callers.
//!
//! Offsets, with the invariant `log_start <= durable <= high_watermark <= log_end` for the
//! durable offset and `log_start <= high_watermark <= log_end` always:
//! - `log_end_offset`: one past the last offset assigned (appended, maybe not yet written);
//! - `high_watermark`: one past the last offset whose bytes are written to the device. On a
//!   single node this is what consumers may read: data is readable once a read can return it
//!   from the file, and it survives a process crash (not necessarily a power loss);
//! - `durable_offset`: one past the last offset covered by a completed fdatasync.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::{
    set_base_offset, set_log_append_time_split, set_partition_leader_epoch, BatchHeader, BatchIter,
};
use crate::batch_cache::{BatchCache, CachedBatch};
use crate::config::{LogConfig, MessageTimestampType, FLUSH_OFF};
use crate::durability::{Durability, FlushTarget, ShardFlusher};
use crate::error::{Error, InvalidRecord, Result};
use crate::histogram::LatencyHistogram;
use crate::io::{align_down, IoBackend, LogFile};
use crate::limits::{BATCH_CACHE_BYTES_DEFAULT, BATCH_HEADER_BYTES};
use crate::order::{AppendOrder, Ticket};
use crate::producer_state::{self, BatchMeta, IncomingBatch, ProducerStateTable, Verdict};
use crate::recovery::{check_closed_segment, recover_last_segment, RecoveryPoint, TailRecovery};
use crate::segment::{parse_log_file_name, Segment};
use crate::segment_reader::{batch_ends, locate, read_batches, Located, ScanItem, Scanner};
use crate::segment_writer::SegmentWriter;
use crate::txn_index::{AbortedTxn, AbortedTxnEntry, TxnIndex};
use crate::types::{FilePos, Offset, TopicPartition};

/// Name of the per-partition file holding the log start offset.
pub const LOG_START_CHECKPOINT: &str = "log-start-offset";

/// ListOffsets special timestamps.
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const LATEST_TIMESTAMP: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;

/// The shard-level objects every partition of a shard shares. Constructible without the shard
/// runtime (tests build one directly inside a `LocalExecutor`).
#[derive(Clone)]
pub struct ShardContext {
    pub flusher: Rc<ShardFlusher>,
    pub cache: Rc<BatchCache>,
    pub io: IoBackend,
    /// How long each write of an active segment took, from submission to the writer seeing it
    /// complete: what an acks=1 append waits for, beyond the wait for the write before it.
    pub write_latency: Rc<LatencyHistogram>,
}

impl Default for ShardContext {
    fn default() -> Self {
        ShardContext {
            flusher: ShardFlusher::new(),
            cache: BatchCache::new(BATCH_CACHE_BYTES_DEFAULT),
            io: IoBackend::Direct,
            write_latency: Rc::new(LatencyHistogram::new()),
        }
    }
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker time written into the batches, or -1 unless the topic uses LogAppendTime.
    pub log_append_time: i64,
    pub log_start_offset: Offset,
}

/// Where a piece of read data lives on disk, for zero-copy sends (splice/sendfile).
#[derive(Clone)]
pub struct FileSlice {
    pub segment: Rc<Segment>,
    pub pos: FilePos,
    pub len: u64,
}

impl std::fmt::Debug for FileSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileSlice({} @{} +{})",
            self.segment.log_path().display(),
            self.pos,
            self.len
        )
    }
}

/// The result of a read: whole batches as `Bytes` chunks (concatenated, they are the batches; a
/// batch may span several chunks, e.g. a cached batch is its header and its records), and the
/// same bytes as file slices.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub chunks: Vec<Bytes>,
    pub slices: Vec<FileSlice>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    /// Whether the data came from the batch cache.
    pub from_cache: bool,
}

impl ReadResult {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Bytes::is_empty)
    }
    /// All chunks concatenated (tests, small responses).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

/// One piece of a [`SendRead`].
#[derive(Debug, Clone)]
pub enum SendPiece {
    /// Bytes in memory (a buffer of the batch cache).
    Mem(Bytes),
    /// `len` bytes at `pos` of a segment file, opened for buffered reads; the `Arc` keeps the
    /// file readable until the send ends, even if the segment is deleted meanwhile. `Send`, so
    /// the connection's shard can splice it to its socket.
    File {
        file: Arc<std::fs::File>,
        pos: u64,
        len: u64,
    },
}

impl SendPiece {
    pub fn len(&self) -> usize {
        match self {
            SendPiece::Mem(b) => b.len(),
            SendPiece::File { len, .. } => *len as usize,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The result of a read for sending ([`Partition::read_for_send`]): whole batches as pieces
/// that are never copied, and where batches end, so the sender can cut the data to a byte
/// limit without looking at it.
#[derive(Debug, Clone, Default)]
pub struct SendRead {
    pub pieces: Vec<SendPiece>,
    /// Positions in the concatenation of `pieces` where a batch ends, ascending; the last is
    /// the total length. Not necessarily every batch end (cold reads know the ends that the
    /// sparse index and a short header scan give), but cutting at any of them leaves whole
    /// batches, and the first is the end of the first batch.
    pub batch_ends: Vec<u64>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    /// Whether the data came from the batch cache.
    pub from_cache: bool,
    /// An offset at or past the end of the returned batches and not past the read's bound:
    /// the upper end of the range whose aborted transactions a `read_committed` fetch lists.
    pub upper_bound: Offset,
}

impl SendRead {
    pub fn len(&self) -> usize {
        self.pieces.iter().map(SendPiece::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.pieces.iter().all(SendPiece::is_empty)
    }
}

/// What opening a partition found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub tail: TailRecovery,
}

/// A partition log. Cloning shares the same partition. Owned by its home shard.
#[derive(Clone)]
pub struct Partition {
    inner: Rc<Inner>,
}

struct Inner {
    tp: TopicPartition,
    dir: PathBuf,
    /// Replaced as a whole by `set_config`; never borrowed across an await.
    config: RefCell<Arc<LogConfig>>,
    ctx: ShardContext,
    cache_id: u64,
    /// Appends, truncations and close take their turns here, in call order.
    order: Rc<AppendOrder>,
    /// The recovery point the last flush stored (segment base, position, when); see
    /// [`Inner::recovery_point_due`].
    flush_point: Cell<Option<(Offset, u64, Instant)>>,
    st: RefCell<State>,
}

struct State {
    segments: BTreeMap<Offset, Rc<Segment>>,
    writer: Rc<SegmentWriter>,
    log_start: Offset,
    next_offset: Offset,
    durable: Offset,
    poisoned: Option<(&'static str, String)>,
    unflushed_records: i64,
    flush_timer_armed: bool,
    closed: bool,
    leader_epoch: i32,
    report: OpenReport,
    /// Idempotent and transactional producers' state (sequence checks, open transactions).
    producers: ProducerStateTable,
    /// The aborted transactions, per segment.
    txns: TxnIndex,
    /// Why the log cleaner gave this partition up (see [`Partition::uncleanable`]).
    uncleanable: Option<String>,
    /// Truncations so far (the cleaner does not move its checkpoint past a truncation it did
    /// not see).
    truncations: u64,
}

/// A transaction marker being appended (see [`Partition::append_marker`]).
#[derive(Debug, Clone, Copy)]
struct Marker {
    producer_id: i64,
    epoch: i16,
    committed: bool,
    coordinator_epoch: i32,
}

impl Partition {
    /// Opens (creating if needed) the log of `tp` under `root/<topic>-<partition>`, recovering it
    /// under [`crate::recovery::TolerateCorruptTail`]. A corrupt log returns `CorruptLog` and
    /// leaves the files alone: only this partition is offline. Runs on the home shard.
    pub async fn open(
        root: &Path,
        tp: TopicPartition,
        config: Arc<LogConfig>,
        ctx: ShardContext,
    ) -> Result<Partition> {
        let dir = root.join(tp.dir_name());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create partition dir", &dir, e))?;
        // A segment swap of the cleaner that a crash interrupted is finished (or its
        // uncommitted output deleted) before the segments are listed.
        crate::cleaner::swap::recover_interrupted_swaps(&dir)?;
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list partition", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list partition", &dir, e))?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_log_file_name) {
                bases.push(base);
            }
        }
        bases.sort();
        let checkpoint = read_checkpoint(&dir)?;
        let created = bases.is_empty();
        if created {
            bases.push(checkpoint.unwrap_or(Offset(0)));
        }
        let interval = config.index_interval_bytes;
        let mut segments = BTreeMap::new();
        for (i, &base) in bases.iter().enumerate() {
            let seg = Segment::open(&dir, base, &ctx.io, created).await?;
            if let Some(&next_base) = bases.get(i + 1) {
                check_closed_segment(&seg, next_base, interval).await?;
            }
            segments.insert(base, Rc::new(seg));
        }
        let last = segments
            .values()
            .next_back()
            .cloned()
            .ok_or_else(|| Error::CorruptLog {
                segment: dir.clone(),
                pos: FilePos(0),
                detail: "no segment".to_string(),
            })?;
        let tail = recover_last_segment(&last, interval, RecoveryPoint::load(&dir)).await?;
        // The active segment's index files are in memory now (or will be rebuilt); removing
        // them means such files only ever exist right after a roll or a clean close, when they
        // are complete.
        last.remove_index_files()?;
        // Recovered bytes may still sit in a device cache after a process crash: make them
        // durable before calling them durable.
        last.file()
            .sync()
            .await
            .map_err(|e| Error::io("sync segment", last.log_path(), e))?;
        if created {
            sync_dir(&dir)?;
        }
        let end = last.size();
        let next_offset = last.next_offset();
        RecoveryPoint {
            segment_base: last.base(),
            pos: FilePos(end),
            next_offset,
        }
        .store(&dir)?;
        let tail_bytes = read_tail(&last, end).await?;
        let first_base = bases[0];
        let log_start = checkpoint
            .map_or(first_base, |c| c.max(first_base))
            .min(next_offset);
        if last.size() > 0 {
            last.meta.borrow_mut().first_append_ms = Some(now_ms());
        }
        let (producers, replayed_from, aborted) =
            rebuild_producer_state(&dir, &segments, next_offset).await?;
        let mut txns = TxnIndex::load(&dir, segments.keys().copied())
            .map_err(|e| Error::io("read aborted-transaction index", &dir, e))?;
        txns.rebuild_from(replayed_from, aborted)
            .map_err(|e| Error::io("rebuild aborted-transaction index", &dir, e))?;
        let writer = SegmentWriter::new(
            last.clone(),
            end,
            tail_bytes,
            next_offset,
            ctx.write_latency.clone(),
        );
        let cache_id = ctx.cache.register();
        let report = OpenReport {
            segments: segments.len(),
            tail,
        };
        let inner = Rc::new(Inner {
            tp,
            dir,
            config: RefCell::new(config),
            ctx,
            cache_id,
            order: AppendOrder::new(),
            flush_point: Cell::new(None),
            st: RefCell::new(State {
                segments,
                writer,
                log_start,
                next_offset,
                durable: next_offset,
                poisoned: None,
                unflushed_records: 0,
                flush_timer_armed: false,
                closed: false,
                leader_epoch: 0,
                report,
                producers,
                txns,
                uncleanable: None,
                truncations: 0,
            }),
        });
        Ok(Partition { inner })
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.inner.tp
    }
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
    /// The log settings in effect.
    pub fn config(&self) -> Arc<LogConfig> {
        self.inner.config.borrow().clone()
    }
    /// Replaces the log settings (a topic config change). Appends, rolls, flush triggers, index
    /// intervals and retention use the new settings from their next decision on; data already
    /// written is not rewritten. Runs on the home shard.
    pub fn set_config(&self, config: Arc<LogConfig>) {
        *self.inner.config.borrow_mut() = config;
    }
    /// What recovery found when this partition was opened.
    pub fn open_report(&self) -> OpenReport {
        self.inner.st.borrow().report
    }
    pub fn log_start_offset(&self) -> Offset {
        self.inner.st.borrow().log_start
    }
    /// One past the last offset assigned.
    pub fn log_end_offset(&self) -> Offset {
        self.inner.st.borrow().next_offset
    }
    /// One past the last offset written to the device (see the module doc for why).
    pub fn high_watermark(&self) -> Offset {
        self.inner.st.borrow().writer.written_offset()
    }
    /// The last stable offset (LSO): what `read_committed` consumers may read up to. The first
    /// offset of the oldest open transaction, or the high watermark when that is lower or no
    /// transaction is open.
    pub fn last_stable_offset(&self) -> Offset {
        let st = self.inner.st.borrow();
        let hw = st.writer.written_offset();
        // A transaction whose start was deleted (DeleteRecords) cannot hold the LSO below the
        // log start.
        st.producers
            .first_unstable_offset()
            .map_or(hw, |first| first.max(st.log_start).min(hw))
    }
    /// Every aborted transaction that overlaps `[from, upto)` (a `read_committed` fetch of
    /// that range lists them so its client drops their records). Runs on the home shard.
    pub fn aborted_transactions(&self, from: Offset, upto: Offset) -> Result<Vec<AbortedTxn>> {
        Ok(self.inner.st.borrow().txns.collect(from, upto))
    }
    /// The state of every producer known here (DescribeProducers). Runs on the home shard.
    pub fn producer_states(&self) -> Vec<(i64, producer_state::ProducerEntry)> {
        let st = self.inner.st.borrow();
        st.producers.iter().map(|(id, e)| (id, e.clone())).collect()
    }
    /// One past the last offset covered by a completed fdatasync.
    pub fn durable_offset(&self) -> Offset {
        self.inner.st.borrow().durable
    }
    /// Sets the leader epoch written into appended batches.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.inner.st.borrow_mut().leader_epoch = epoch;
    }
    /// Number of segments, active included.
    pub fn segment_count(&self) -> usize {
        self.inner.st.borrow().segments.len()
    }
    /// Bytes of write buffer memory held right now (0 plus the partial last sector when idle).
    pub fn write_buffer_bytes(&self) -> usize {
        self.inner.st.borrow().writer.buffer_bytes()
    }
    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .st
            .borrow()
            .segments
            .values()
            .map(|s| s.size())
            .sum()
    }
    /// The error every write returns, if the partition is poisoned.
    pub fn poisoned(&self) -> Option<Error> {
        self.inner.writable().err()
    }

    /// Operations holding or waiting for the partition's append turn (appends, markers,
    /// truncation, retention, DeleteRecords, a cleaner swap, close).
    pub fn append_turns_queued(&self) -> u64 {
        self.inner.order.queued()
    }

    /// Why the log cleaner failed on this partition and skips it from then on (Kafka's
    /// uncleanable partitions), if it did. Only the cleaner gives up: reads and appends go on
    /// wherever the data allows. The mark lives with this open partition, so a restart or a
    /// deleted and re-created topic starts clean.
    pub fn uncleanable(&self) -> Option<String> {
        self.inner.st.borrow().uncleanable.clone()
    }

    /// How many times the log was truncated since it was opened.
    pub(crate) fn truncations(&self) -> u64 {
        self.inner.st.borrow().truncations
    }

    /// Marks the partition uncleanable for `reason`; false when it already was (the first
    /// reason stays).
    pub(crate) fn mark_uncleanable(&self, reason: String) -> bool {
        let mut st = self.inner.st.borrow_mut();
        if st.uncleanable.is_some() {
            return false;
        }
        st.uncleanable = Some(reason);
        true
    }

    /// Appends one or more v2 batches as received from a producer. Every batch is validated
    /// before anything is written. The append's place in the log is fixed by this call, before
    /// the returned future is first polled: appends get their offsets in the order `append` was
    /// called, however their futures are scheduled, so a caller that must keep several appends
    /// in order only has to call `append` in that order (and then may await them together).
    /// The future resolves when the requested durability is reached; dropping it before the
    /// append's turn gives the place up. Runs on the home shard.
    pub fn append(
        &self,
        records: Bytes,
        durability: Durability,
    ) -> impl Future<Output = Result<AppendInfo>> + 'static {
        let ticket = self.inner.order.ticket();
        let me = self.clone();
        async move {
            me.append_in_turn(ticket, records, durability, None, false)
                .await
        }
    }

    /// Appends a transactional batch that a coordinator writes to its own log under a
    /// producer's identity (Kafka's `AppendOrigin.COORDINATOR`: the group coordinator's
    /// TxnOffsetCommit). Such a batch carries no sequence numbers, so only the producer epoch
    /// is checked (an older one is INVALID_PRODUCER_EPOCH) and no retry is detected; like a
    /// client's transactional batch it opens the producer's transaction here, which holds the
    /// last stable offset until the marker. Otherwise as [`Partition::append`].
    pub fn append_from_coordinator(
        &self,
        records: Bytes,
        durability: Durability,
    ) -> impl Future<Output = Result<AppendInfo>> + 'static {
        let ticket = self.inner.order.ticket();
        let me = self.clone();
        async move {
            me.append_in_turn(ticket, records, durability, None, true)
                .await
        }
    }

    /// Appends a transaction marker (a control batch: commit or abort) for `producer_id`,
    /// ending its transaction on this partition, and resolves to the marker's offset once it
    /// is durable (fdatasync'd): the transaction coordinator completes the transaction only
    /// after every marker is. Takes its place in the append order at this call, like
    /// [`Partition::append`]. Refused with INVALID_PRODUCER_EPOCH for an epoch older than the
    /// producer's here, and TRANSACTION_COORDINATOR_FENCED for a coordinator epoch older than
    /// the one of the producer's last marker. An abort is added to the aborted-transaction
    /// index; the last stable offset moves past the transaction. Runs on the home shard.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        committed: bool,
        coordinator_epoch: i32,
    ) -> impl Future<Output = Result<Offset>> + 'static {
        let ticket = self.inner.order.ticket();
        let me = self.clone();
        let marker = Marker {
            producer_id,
            epoch: producer_epoch,
            committed,
            coordinator_epoch,
        };
        async move {
            let batch = crate::builder::control_marker_batch(
                committed,
                coordinator_epoch,
                producer_id,
                producer_epoch,
                now_ms(),
            )
            .map_err(|source| Error::Marker {
                tp: me.inner.tp.clone(),
                source,
            })?;
            let info = me
                .append_in_turn(ticket, batch, Durability::Synced, Some(marker), false)
                .await?;
            Ok(info.base_offset)
        }
    }

    async fn append_in_turn(
        &self,
        ticket: Ticket,
        records: Bytes,
        durability: Durability,
        marker: Option<Marker>,
        from_coordinator: bool,
    ) -> Result<AppendInfo> {
        let inner = &self.inner;
        let cfg = inner.config.borrow().clone();
        inner.writable()?;
        validate_records(&records, &cfg)?;
        if marker.is_none() {
            refuse_control_batches(&records)?;
        }
        let turn = ticket.turn().await;
        inner.writable()?;
        if let Some(m) = &marker {
            inner
                .st
                .borrow()
                .producers
                .check_marker(m.producer_id, m.epoch, m.coordinator_epoch)
                .map_err(|source| Error::Producer {
                    tp: inner.tp.clone(),
                    source,
                })?;
        }
        // Producer checks happen in the append's turn, so they see every earlier append.
        let producer = producer_batch(&records)?;
        if let Some(batch) = &producer {
            let verdict = {
                let st = inner.st.borrow();
                if from_coordinator {
                    st.producers.check_epoch(batch).map(|()| Verdict::Append)
                } else {
                    st.producers.check(batch)
                }
            };
            let verdict = verdict.map_err(|source| Error::Producer {
                tp: inner.tp.clone(),
                source,
            })?;
            if let Verdict::Duplicate(original) = verdict {
                drop(turn);
                return self.answer_duplicate(original, durability).await;
            }
        }
        let writer = inner.st.borrow().writer.clone();
        writer.wait_room().await;
        inner.maybe_roll(records.len()).await?;
        inner.writable()?;

        let now = now_ms();
        let log_append = cfg.message_timestamp_type == MessageTimestampType::LogAppendTime;
        let (info, writer, end) = {
            let mut st = inner.st.borrow_mut();
            let writer = st.writer.clone();
            let seg = writer.segment().clone();
            let base = st.next_offset;
            let mut next = base;
            let mut pos = seg.size();
            let mut at = 0usize;
            // Each batch goes in as its rewritten header plus its records section untouched:
            // one copy into the write buffer, and the cache keeps the records zero-copy.
            let mut placed = Vec::new();
            while at + BATCH_HEADER_BYTES <= records.len() {
                let Some(h) = BatchHeader::read(&records[at..]) else {
                    break;
                };
                let len = h.total_len as usize;
                let body = records.slice(at + BATCH_HEADER_BYTES..at + len);
                let mut header = [0u8; BATCH_HEADER_BYTES];
                header.copy_from_slice(&records[at..at + BATCH_HEADER_BYTES]);
                set_base_offset(&mut header, next);
                set_partition_leader_epoch(&mut header, st.leader_epoch);
                if log_append {
                    set_log_append_time_split(&mut header, &body, now);
                }
                let Some(h) = BatchHeader::read(&header) else {
                    break;
                };
                seg.note_batch(FilePos(pos), &h, cfg.index_interval_bytes, now);
                placed.push((header, body, h, pos));
                next = h.next_offset();
                pos += h.total_len;
                at += len;
            }
            let parts: Vec<&[u8]> = placed
                .iter()
                .flat_map(|(header, body, _, _)| [&header[..], &body[..]])
                .collect();
            let end = writer.append(&parts, next);
            drop(parts);
            let max_timestamp = placed
                .iter()
                .map(|(_, _, h, _)| h.max_timestamp)
                .max()
                .unwrap_or(-1);
            for (header, body, h, pos) in placed {
                inner.ctx.cache.insert(
                    inner.cache_id,
                    CachedBatch {
                        header: Bytes::copy_from_slice(&header),
                        body,
                        base_offset: h.base_offset,
                        next_offset: h.next_offset(),
                        segment_base: seg.base(),
                        pos: FilePos(pos),
                    },
                );
            }
            if let Some(batch) = &producer {
                st.producers
                    .record(batch, base, Offset(next.0 - 1), max_timestamp, now);
            }
            if let Some(m) = &marker {
                let done = st.producers.record_marker(
                    m.producer_id,
                    m.epoch,
                    m.committed,
                    m.coordinator_epoch,
                    base,
                    now,
                );
                if !m.committed {
                    let entry = aborted_entry(&st.producers, &done);
                    if let Err(e) = st.txns.append(seg.base(), entry) {
                        // The marker is in the log but its index entry is not: only a restart
                        // (which rebuilds the index) can set that right.
                        drop(st);
                        return Err(inner.poison("write aborted-transaction index", e.to_string()));
                    }
                }
            }
            st.next_offset = next;
            st.unflushed_records += next.0 - base.0;
            inner.check_invariants(&st);
            let info = AppendInfo {
                base_offset: base,
                last_offset: Offset(next.0 - 1),
                log_append_time: if log_append { now } else { -1 },
                log_start_offset: st.log_start,
            };
            (info, writer, end)
        };
        drop(turn);
        writer.kick();
        inner.background_flush_triggers();
        match durability {
            Durability::Buffered => {}
            Durability::Written => inner.wait_written(&writer, end).await?,
            Durability::Synced => {
                inner.wait_written(&writer, end).await?;
                let target: Rc<dyn FlushTarget> = self.inner.clone();
                inner.ctx.flusher.sync(target).await;
                inner.writable()?;
                let durable = inner.st.borrow().durable;
                if durable <= info.last_offset {
                    return Err(Error::Poisoned {
                        tp: inner.tp.clone(),
                        op: "fdatasync",
                        detail: format!(
                            "flush round ended with durable offset {durable} below {}",
                            info.last_offset
                        ),
                    });
                }
            }
        }
        Ok(info)
    }

    /// Answers a retried batch of an idempotent producer with the offsets its first attempt
    /// got, once that attempt has the requested durability (a retry can arrive while the
    /// original still waits for its write or fdatasync). Nothing is written.
    async fn answer_duplicate(
        &self,
        original: BatchMeta,
        durability: Durability,
    ) -> Result<AppendInfo> {
        let inner = &self.inner;
        if durability != Durability::Buffered && inner.st.borrow().durable <= original.last_offset {
            let target: Rc<dyn FlushTarget> = inner.clone();
            inner.ctx.flusher.sync(target).await;
            inner.writable()?;
            let durable = inner.st.borrow().durable;
            if durable <= original.last_offset {
                return Err(Error::Poisoned {
                    tp: inner.tp.clone(),
                    op: "fdatasync",
                    detail: format!(
                        "flush round ended with durable offset {durable} below {}",
                        original.last_offset
                    ),
                });
            }
        }
        Ok(AppendInfo {
            base_offset: original.first_offset,
            last_offset: original.last_offset,
            log_append_time: -1,
            log_start_offset: inner.st.borrow().log_start,
        })
    }

    /// Reads whole batches starting with the one containing `offset`, up to `max_bytes` but at
    /// least one batch if any exists at or after `offset` (KIP-74). Reading at the high
    /// watermark returns nothing; outside `[log_start, high_watermark]` is OFFSET_OUT_OF_RANGE.
    /// Runs on the home shard.
    pub async fn read(&self, offset: Offset, max_bytes: usize) -> Result<ReadResult> {
        let inner = &self.inner;
        let (log_start, hw) = inner.readable_range(offset)?;
        let mut out = ReadResult {
            high_watermark: hw,
            log_start_offset: log_start,
            ..ReadResult::default()
        };
        if offset == hw {
            return Ok(out);
        }
        if let Some(run) = inner.ctx.cache.read(inner.cache_id, offset, max_bytes, hw) {
            let st = inner.st.borrow();
            let segs: Option<Vec<Rc<Segment>>> = run
                .iter()
                .map(|b| st.segments.get(&b.segment_base).cloned())
                .collect();
            if let Some(segs) = segs {
                for (b, seg) in run.into_iter().zip(segs) {
                    out.slices.push(FileSlice {
                        segment: seg,
                        pos: b.pos,
                        len: b.len() as u64,
                    });
                    out.chunks.push(b.header);
                    out.chunks.push(b.body);
                }
                out.from_cache = true;
                return Ok(out);
            }
        }
        let (seg, readable, found) = inner.locate_offset(offset).await?;
        let Some(loc) = found else {
            return Ok(out);
        };
        let data = read_batches(&seg, loc, max_bytes, readable).await?;
        out.slices.push(FileSlice {
            segment: seg,
            pos: loc.pos,
            len: data.len() as u64,
        });
        out.chunks.push(data);
        Ok(out)
    }

    /// Reads like [`Partition::read`], for sending to a consumer without copying: batches in
    /// the batch cache come as their cached buffers, batches on disk as one range of the
    /// segment file (which the connection splices to its socket), with their boundaries found
    /// from the sparse index and batch headers, never by reading the data. Everything returned
    /// is below the returned high watermark. Runs on the home shard.
    pub async fn read_for_send(&self, offset: Offset, max_bytes: usize) -> Result<SendRead> {
        self.read_for_send_below(offset, max_bytes, Offset(i64::MAX))
            .await
    }

    /// [`Partition::read_for_send`] returning only batches below `bound` (a `read_committed`
    /// fetch passes the last stable offset, which is always a batch boundary). A read at or past
    /// the bound but within the high watermark returns nothing. Runs on the home shard.
    pub async fn read_for_send_below(
        &self,
        offset: Offset,
        max_bytes: usize,
        bound: Offset,
    ) -> Result<SendRead> {
        let inner = &self.inner;
        let (log_start, hw) = inner.readable_range(offset)?;
        let bound = bound.min(hw);
        let mut out = SendRead {
            high_watermark: hw,
            log_start_offset: log_start,
            upper_bound: bound,
            ..SendRead::default()
        };
        if offset >= bound {
            return Ok(out);
        }
        if let Some(run) = inner
            .ctx
            .cache
            .read(inner.cache_id, offset, max_bytes, bound)
        {
            let mut end = 0u64;
            if let Some(last) = run.last() {
                out.upper_bound = last.next_offset;
            }
            for b in run {
                end += b.len() as u64;
                out.batch_ends.push(end);
                out.pieces.push(SendPiece::Mem(b.header));
                out.pieces.push(SendPiece::Mem(b.body));
            }
            out.from_cache = true;
            return Ok(out);
        }
        let (seg, mut readable, found) = inner.locate_offset(offset).await?;
        let Some(loc) = found else {
            return Ok(out);
        };
        if bound < seg.next_offset() {
            // The bound is inside this segment: read only up to the batch that starts there.
            if loc.header.base_offset >= bound {
                return Ok(out);
            }
            let at = locate(&seg, loc.pos, bound, readable, inner.locate_chunk_bytes()).await?;
            if let Some(stop) = at {
                readable = readable.min(stop.pos.0);
            }
        } else {
            out.upper_bound = seg.next_offset();
        }
        let file = match seg.send_file() {
            Ok(f) => f,
            // Retention deleted the segment while the read was locating the batch: the offset
            // is below the log start now, which is what the consumer must be told.
            Err(_) if !inner.st.borrow().segments.contains_key(&seg.base()) => {
                let st = inner.st.borrow();
                return Err(Error::OffsetOutOfRange {
                    tp: inner.tp.clone(),
                    offset,
                    log_start: st.log_start,
                    log_end: st.writer.written_offset(),
                });
            }
            Err(e) => return Err(e),
        };
        let start = loc.pos.0;
        let limit = (start + (max_bytes as u64).max(loc.header.total_len)).min(readable);
        let ends = batch_ends(&seg, loc, limit, readable).await?;
        let stop = ends.last().copied().unwrap_or(start);
        if stop <= start || stop > readable {
            return Err(Error::CorruptLog {
                segment: seg.log_path(),
                pos: loc.pos,
                detail: format!(
                    "batch boundaries [{start}, {stop}) outside the readable {readable} bytes"
                ),
            });
        }
        out.batch_ends = ends.into_iter().map(|e| e - start).collect();
        out.pieces.push(SendPiece::File {
            file,
            pos: start,
            len: stop - start,
        });
        // `readable` was read after `hw`; what it covers is written, so report the high
        // watermark as of now, which covers every byte returned.
        out.high_watermark = inner.st.borrow().writer.written_offset();
        Ok(out)
    }

    /// ListOffsets: -2 earliest, -1 latest (high watermark), -3 the batch with the largest
    /// timestamp, otherwise the first batch whose max timestamp is >= `ts`. Returns the offset
    /// and timestamp (-1 for earliest/latest), or `None` when no batch qualifies. Offsets are at
    /// batch granularity: the base offset of the first qualifying batch (its records are not
    /// decoded), the last offset of the batch holding the max timestamp. Runs on the home shard.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>> {
        let inner = &self.inner;
        let (log_start, hw, segs) = {
            let st = inner.st.borrow();
            (
                st.log_start,
                st.writer.written_offset(),
                st.segments.values().cloned().collect::<Vec<_>>(),
            )
        };
        match ts {
            EARLIEST_TIMESTAMP => return Ok(Some((log_start, -1))),
            LATEST_TIMESTAMP => return Ok(Some((hw, -1))),
            _ => {}
        }
        let interval = inner.config.borrow().index_interval_bytes;
        let live = segs.into_iter().filter(|s| s.next_offset() > log_start);
        if ts == MAX_TIMESTAMP {
            let mut best: Option<(Offset, i64)> = None;
            for seg in live {
                seg.ensure_indexes(interval).await?;
                let m = seg.meta.borrow().max_timestamp;
                if let Some((t, off)) = m {
                    if off < hw && best.is_none_or(|(_, bt)| t > bt) {
                        best = Some((off, t));
                    }
                }
            }
            return Ok(best);
        }
        if ts < 0 {
            return Ok(None);
        }
        for seg in live {
            seg.ensure_indexes(interval).await?;
            let (start, max_ts) = {
                let m = seg.meta.borrow();
                let start = m
                    .time_index
                    .as_ref()
                    .map_or(seg.base(), |t| t.scan_start(seg.base(), ts))
                    .max(log_start);
                let pos = m
                    .index
                    .as_ref()
                    .map_or(FilePos(0), |ix| ix.lookup(seg.base(), start));
                (pos, m.max_timestamp)
            };
            if max_ts.is_none_or(|(t, _)| t < ts) {
                continue;
            }
            let mut scanner = Scanner::new(
                seg.file(),
                start.0,
                seg.readable(),
                inner.locate_chunk_bytes(),
            );
            loop {
                match scanner.next(false).await? {
                    ScanItem::Batch { header, .. } => {
                        if header.base_offset >= hw {
                            return Ok(None);
                        }
                        if header.next_offset() > log_start && header.max_timestamp >= ts {
                            return Ok(Some((
                                header.base_offset.max(log_start),
                                header.max_timestamp,
                            )));
                        }
                    }
                    ScanItem::End => break,
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
        Ok(None)
    }

    /// Drops every batch at or after `offset` (the batch containing `offset` goes too, so the
    /// new log end is that batch's base offset), across segments. For replication: followers
    /// truncate to the leader's epoch boundary. Runs on the home shard.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset> {
        let inner = &self.inner;
        inner.writable()?;
        let _turn = inner.order.ticket().turn().await;
        inner.writable()?;
        inner.st.borrow_mut().truncations += 1;
        inner.drain_active().await?;
        let (log_start, log_end) = {
            let st = inner.st.borrow();
            (st.log_start, st.next_offset)
        };
        if offset >= log_end {
            return Ok(log_end);
        }
        if offset < log_start {
            return Err(Error::OffsetOutOfRange {
                tp: inner.tp.clone(),
                offset,
                log_start,
                log_end,
            });
        }
        let (seg, readable, found) = inner.locate_offset(offset).await?;
        let (cut, new_end) = match found {
            Some(loc) => (loc.pos.0, loc.header.base_offset),
            None => (readable, seg.next_offset()),
        };
        // Later segments go first, so a crash in between leaves a log that recovery accepts.
        let later: Vec<Rc<Segment>> = {
            let st = inner.st.borrow();
            st.segments
                .range(Offset(seg.base().0 + 1)..)
                .map(|(_, s)| s.clone())
                .collect()
        };
        RecoveryPoint::remove(&inner.dir)?;
        // Snapshots beyond the new end describe batches about to go; removed first, so that
        // no crash can leave one to be trusted once the log grows past it again.
        producer_state::remove_snapshots_above(&inner.dir, new_end)
            .map_err(|e| Error::io("remove producer snapshots", &inner.dir, e))?;
        // Likewise the cleaner's checkpoint: offsets appended again past the new end are dirty.
        crate::cleaner::clamp_checkpoint(&inner.dir, new_end)?;
        for s in later.iter().rev() {
            s.remove_files()?;
        }
        seg.remove_index_files()?;
        let io_err = |op, e| Error::io(op, seg.log_path(), e);
        seg.file()
            .set_len(cut)
            .await
            .map_err(|e| io_err("truncate segment", e))?;
        seg.file()
            .sync()
            .await
            .map_err(|e| io_err("sync segment", e))?;
        sync_dir(&inner.dir)?;
        {
            let mut m = seg.meta.borrow_mut();
            if let Some(ix) = m.index.as_mut() {
                ix.truncate_to_pos(FilePos(cut));
            }
            let base = seg.base();
            if let Some(t) = m.time_index.as_mut() {
                t.truncate_to_offset(base, new_end);
            }
            m.max_timestamp = m.time_index.as_ref().and_then(|t| t.last(base));
            m.size = cut;
            m.readable = cut;
            m.next_offset = new_end;
            m.bytes_since_index = u64::from(inner.config.borrow().index_interval_bytes);
            m.first_append_ms = Some(now_ms());
        }
        RecoveryPoint {
            segment_base: seg.base(),
            pos: FilePos(cut),
            next_offset: new_end,
        }
        .store(&inner.dir)?;
        let tail = read_tail(&seg, cut).await?;
        let writer = SegmentWriter::new(
            seg.clone(),
            cut,
            tail,
            new_end,
            inner.ctx.write_latency.clone(),
        );
        // Cutting the batch that holds the log start moves the start back to the new end, and
        // the checkpoint must say so before later appends grow the log past the old start.
        if new_end < log_start {
            write_checkpoint(&inner.dir, new_end)?;
        }
        {
            let mut st = inner.st.borrow_mut();
            for s in &later {
                st.segments.remove(&s.base());
            }
            st.writer = writer;
            st.next_offset = new_end;
            st.durable = st.durable.min(new_end);
            st.log_start = st.log_start.min(new_end);
            st.unflushed_records = 0;
            for s in &later {
                st.txns.remove_segment(s.base());
            }
            st.txns
                .truncate_to(new_end)
                .map_err(|e| Error::io("truncate aborted-transaction index", &inner.dir, e))?;
            inner.check_invariants(&st);
        }
        crate::segment::retire(later);
        inner.ctx.cache.invalidate_from(inner.cache_id, new_end);
        // The producer state is rebuilt as at open (snapshot at or below the new end, then a
        // replay): trimming it would not do, as a cut marker must reopen its transaction.
        let segments = inner.st.borrow().segments.clone();
        match rebuild_producer_state(&inner.dir, &segments, new_end).await {
            Ok((producers, from, aborted)) => {
                let mut st = inner.st.borrow_mut();
                st.producers = producers;
                st.txns
                    .rebuild_from(from, aborted)
                    .map_err(|e| Error::io("rebuild aborted-transaction index", &inner.dir, e))?;
            }
            Err(e) => return Err(inner.poison("rebuild producer state", e.to_string())),
        }
        Ok(new_end)
    }

    /// Advances the log start offset to `offset` (DeleteRecords; -1 means the high watermark),
    /// persisting it durably, and deletes closed segments wholly below it. Returns the new log
    /// start offset. Runs on the home shard.
    pub async fn delete_records(&self, offset: Offset) -> Result<Offset> {
        let inner = &self.inner;
        // In the append order: a cleaner swap in progress finishes before segments go.
        let _turn = inner.order.ticket().turn().await;
        inner.writable()?;
        let (log_start, hw) = {
            let st = inner.st.borrow();
            (st.log_start, st.writer.written_offset())
        };
        let offset = if offset.0 == -1 { hw } else { offset };
        if offset < Offset(0) || offset > hw {
            return Err(Error::OffsetOutOfRange {
                tp: inner.tp.clone(),
                offset,
                log_start,
                log_end: hw,
            });
        }
        if offset <= log_start {
            return Ok(log_start);
        }
        write_checkpoint(&inner.dir, offset)?;
        inner.st.borrow_mut().log_start = offset;
        inner.delete_segments_below(offset)?;
        inner.ctx.cache.invalidate_below(inner.cache_id, offset);
        inner.check_invariants(&inner.st.borrow());
        Ok(offset)
    }

    /// Writes out and syncs everything, truncates the active segment to its exact size and
    /// persists its indexes. The partition accepts nothing afterwards. Runs on the home shard.
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        let _turn = inner.order.ticket().turn().await;
        if inner.st.borrow().closed {
            return Ok(());
        }
        inner.st.borrow_mut().closed = true;
        inner.ctx.cache.forget(inner.cache_id);
        if inner.st.borrow().poisoned.is_some() {
            return Ok(());
        }
        inner.drain_active().await?;
        let seg = inner.st.borrow().writer.segment().clone();
        // An empty active segment of a partition without producer state has nothing to seal
        // or snapshot (the roll that created it wrote the snapshot of the older segments).
        // Brokers hold many such partitions (the internal topics' 100); each used to cost a
        // truncate, a file fsync and a snapshot with two more fsyncs at every shutdown.
        let untouched = seg.size() == 0
            && inner.st.borrow().producers.is_empty()
            && seg.file().size().await.is_ok_and(|len| len == 0);
        if !untouched {
            inner.seal(&seg).await?;
            inner.snapshot_producers(seg.next_offset())?;
        }
        // A clean close vouches for the whole log: the next open scans nothing.
        RecoveryPoint {
            segment_base: seg.base(),
            pos: FilePos(seg.size()),
            next_offset: seg.next_offset(),
        }
        .store(&inner.dir)
    }

    /// Requests a flush of this partition now and waits for it (tests, admin).
    pub async fn flush(&self) -> Result<Offset> {
        let inner = &self.inner;
        inner.writable()?;
        let writer = inner.st.borrow().writer.clone();
        writer
            .drain()
            .await
            .map_err(|detail| inner.poison("write", detail))?;
        let target: Rc<dyn FlushTarget> = inner.clone();
        inner.ctx.flusher.sync(target).await;
        inner.writable()?;
        Ok(inner.st.borrow().durable)
    }

    /// The I/O backend of the partition's shard (the cleaner opens its new segments with it).
    pub(crate) fn io_backend(&self) -> IoBackend {
        self.inner.ctx.io.clone()
    }

    /// The aborted-transaction entries of the segments `bases`, or of every segment.
    pub(crate) fn aborted_entries(&self, bases: Option<&[Offset]>) -> Vec<AbortedTxnEntry> {
        let st = self.inner.st.borrow();
        match bases {
            Some(bases) => bases
                .iter()
                .flat_map(|b| st.txns.entries(*b).iter().copied())
                .collect(),
            None => st
                .segments
                .keys()
                .flat_map(|b| st.txns.entries(*b).iter().copied())
                .collect(),
        }
    }

    /// Replaces the consecutive closed segments `old` (oldest first) by `new`, the cleaner's
    /// rewrite of the same offsets, whose aborted-transaction entries are `txn_entries`.
    /// `commit` makes the change on disk (the cleaner's crash-safe swap, off the shard); it is
    /// polled only if every segment of `old` is still the partition's and closed, and runs in
    /// the partition's append order: the turn is held until the files are swapped and the
    /// segment list updated, so appends (a roll), truncation, retention, DeleteRecords and close
    /// of this partition wait for it, while the shard serves everything else. Returns whether
    /// the swap happened (the new segment's indexes are then persisted too). Reads already
    /// holding an old segment keep reading its (unlinked) file; a read that needs an old
    /// segment's index files meanwhile finds them gone and rebuilds the index from that file.
    /// Runs on the home shard.
    pub(crate) async fn replace_segments(
        &self,
        old: &[Rc<Segment>],
        new: Rc<Segment>,
        txn_entries: Vec<AbortedTxnEntry>,
        commit: impl Future<Output = Result<()>>,
    ) -> Result<bool> {
        let inner = &self.inner;
        let (Some(first), Some(last)) = (old.first(), old.last()) else {
            return Ok(false);
        };
        let _turn = inner.order.ticket().turn().await;
        inner.writable()?;
        {
            let st = inner.st.borrow();
            let active = st.writer.segment().base();
            let current = old.iter().all(|s| {
                s.base() != active && st.segments.get(&s.base()).is_some_and(|c| Rc::ptr_eq(c, s))
            });
            if !current {
                return Ok(false);
            }
        }
        // Open the descriptors zero-copy sends use before the files are renamed or removed,
        // so that a send of an old segment never opens the new file under the old name.
        for s in old {
            s.send_file()?;
        }
        // A swap that failed part-way leaves the files in a state only start-up recovery
        // resolves (it finishes or rolls back the swap); until then the in-memory segments may
        // name files that were renamed, so the partition stops taking writes.
        if let Err(e) = commit.await {
            return Err(inner.poison("cleaner segment swap", e.to_string()));
        }
        let bases: Vec<Offset> = old.iter().map(|s| s.base()).collect();
        let end = last.next_offset();
        {
            let mut st = inner.st.borrow_mut();
            for b in &bases {
                st.segments.remove(b);
            }
            st.segments.insert(new.base(), new.clone());
            st.txns.replace_segments(&bases, first.base(), txn_entries);
        }
        // Their files are removed or renamed over now.
        crate::segment::retire(old.to_vec());
        inner
            .ctx
            .cache
            .invalidate_range(inner.cache_id, first.base(), end);
        // The new segment's index files are written in the same turn: a truncation queued
        // behind the swap removes them when it makes the segment active again, and they must
        // not be written after that, stale, or fail half-way under it.
        new.persist_indexes().await?;
        Ok(true)
    }

    /// Runs `change` (a change to the partition's files that must not interleave with appends,
    /// truncation or close) in the append order, if the partition still takes writes: a closed
    /// (deleted) partition is `Error::Closed` and `change` is never polled. Runs on the home
    /// shard.
    pub(crate) async fn in_append_turn<T>(
        &self,
        change: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let _turn = self.inner.order.ticket().turn().await;
        self.inner.writable()?;
        change.await
    }

    /// The closed segments, oldest first (for retention).
    pub(crate) fn closed_segments(&self) -> Vec<Rc<Segment>> {
        let st = self.inner.st.borrow();
        let active = st.writer.segment().base();
        st.segments
            .values()
            .filter(|s| s.base() != active)
            .cloned()
            .collect()
    }

    /// Deletes the `n` oldest closed segments and moves the log start past them (retention).
    /// Takes the append turn, so that it never removes files a cleaner swap is replacing.
    pub(crate) async fn delete_oldest_segments(&self, n: usize) -> Result<Offset> {
        let inner = &self.inner;
        let _turn = inner.order.ticket().turn().await;
        inner.writable()?;
        let segs = self.closed_segments();
        let Some(last) = segs.get(n.min(segs.len()).wrapping_sub(1)) else {
            return Ok(self.log_start_offset());
        };
        let new_start = last.next_offset().max(self.log_start_offset());
        write_checkpoint(&inner.dir, new_start)?;
        inner.st.borrow_mut().log_start = new_start;
        inner.delete_segments_below(new_start)?;
        inner.ctx.cache.invalidate_below(inner.cache_id, new_start);
        inner.check_invariants(&inner.st.borrow());
        Ok(new_start)
    }
}

impl Inner {
    /// The segment holding `offset`, its readable end, and the batch containing `offset` (or
    /// the first batch after it), found from the sparse index and a short scan.
    /// A cleaned segment may hold no batch at or after `offset` (compaction removed its last
    /// batches): the search then moves on to the next segment.
    async fn locate_offset(&self, offset: Offset) -> Result<(Rc<Segment>, u64, Option<Located>)> {
        let mut seg = self.segment_for(offset)?;
        let mut offset = offset;
        loop {
            let index_interval = self.config.borrow().index_interval_bytes;
            seg.ensure_indexes(index_interval).await?;
            let readable = seg.readable();
            let from = seg
                .meta
                .borrow()
                .index
                .as_ref()
                .map_or(FilePos(0), |ix| ix.lookup(seg.base(), offset));
            let found = locate(&seg, from, offset, readable, self.locate_chunk_bytes()).await?;
            let next = match found {
                Some(_) => None,
                None => {
                    let st = self.st.borrow();
                    st.segments
                        .range(Offset(seg.base().0 + 1)..)
                        .next()
                        .map(|(_, s)| s.clone())
                }
            };
            match next {
                Some(n) => {
                    offset = n.base();
                    seg = n;
                }
                None => return Ok((seg, readable, found)),
            }
        }
    }

    fn writable(&self) -> Result<()> {
        let st = self.st.borrow();
        if let Some((op, detail)) = &st.poisoned {
            return Err(Error::Poisoned {
                tp: self.tp.clone(),
                op,
                detail: detail.clone(),
            });
        }
        if let Some(detail) = st.writer.failure() {
            drop(st);
            return Err(self.poison("write", detail));
        }
        if st.closed {
            return Err(Error::Closed {
                tp: self.tp.clone(),
            });
        }
        Ok(())
    }

    /// Marks the partition poisoned (first failure wins) and returns the error to report.
    fn poison(&self, op: &'static str, detail: String) -> Error {
        let mut st = self.st.borrow_mut();
        if st.poisoned.is_none() {
            tracing::error!(tp = %self.tp, op, %detail, "partition poisoned");
            st.poisoned = Some((op, detail));
        }
        let (op, detail) = st.poisoned.clone().unwrap_or((op, String::new()));
        Error::Poisoned {
            tp: self.tp.clone(),
            op,
            detail,
        }
    }

    async fn wait_written(&self, writer: &SegmentWriter, end: u64) -> Result<()> {
        writer
            .wait_written(end)
            .await
            .map_err(|detail| self.poison("write", detail))
    }

    async fn drain_active(&self) -> Result<()> {
        let writer = self.st.borrow().writer.clone();
        writer
            .drain()
            .await
            .map_err(|detail| self.poison("write", detail))
    }

    fn segment_for(&self, offset: Offset) -> Result<Rc<Segment>> {
        let st = self.st.borrow();
        st.segments
            .range(..=offset)
            .next_back()
            .or_else(|| st.segments.iter().next())
            .map(|(_, s)| s.clone())
            .ok_or_else(|| Error::CorruptLog {
                segment: self.dir.clone(),
                pos: FilePos(0),
                detail: "no segment".to_string(),
            })
    }

    fn locate_chunk_bytes(&self) -> usize {
        (self.config.borrow().index_interval_bytes as usize)
            .saturating_mul(2)
            .clamp(64 * 1024, 1024 * 1024)
    }

    /// Rolls the active segment if the incoming bytes would overflow `segment.bytes`, it is
    /// older than `segment.ms`, or its offset index is full. Called during an append's turn.
    async fn maybe_roll(&self, incoming: usize) -> Result<()> {
        let seg = self.st.borrow().writer.segment().clone();
        let cfg = self.config.borrow().clone();
        let (size, first, entries) = {
            let m = seg.meta.borrow();
            (
                m.size,
                m.first_append_ms,
                m.index.as_ref().map_or(0, |ix| ix.len()),
            )
        };
        let too_big = size + incoming as u64 > cfg.segment_bytes;
        let too_old = first.is_some_and(|t| now_ms() - t >= cfg.segment_ms);
        let index_full = (entries + 1) * crate::limits::OFFSET_INDEX_ENTRY_BYTES
            > cfg.segment_index_bytes as usize;
        if size == 0 || !(too_big || too_old || index_full) {
            return Ok(());
        }
        self.drain_active().await?;
        self.seal(&seg).await?;
        let base = self.st.borrow().next_offset;
        // The sealed segments hold everything below `base`: the snapshot at `base` is durable
        // with them, and recovery replays only the new segment after it.
        self.snapshot_producers(base)?;
        let fresh = Rc::new(Segment::open(&self.dir, base, &self.ctx.io, true).await?);
        sync_dir(&self.dir)?;
        let writer = SegmentWriter::new(
            fresh.clone(),
            0,
            Vec::new(),
            base,
            self.ctx.write_latency.clone(),
        );
        RecoveryPoint {
            segment_base: base,
            pos: FilePos(0),
            next_offset: base,
        }
        .store(&self.dir)?;
        let mut st = self.st.borrow_mut();
        st.segments.insert(base, fresh);
        st.writer = writer;
        st.durable = st.durable.max(base);
        st.unflushed_records = 0;
        self.check_invariants(&st);
        Ok(())
    }

    /// Writes the producer state, valid for the log up to `offset`, as a snapshot file (after
    /// forgetting producers idle for longer than [`PRODUCER_ID_EXPIRATION_MS`]).
    fn snapshot_producers(&self, offset: Offset) -> Result<()> {
        let mut st = self.st.borrow_mut();
        st.producers.expire(now_ms(), PRODUCER_ID_EXPIRATION_MS);
        producer_state::write_snapshot(&self.dir, &st.producers, offset)
            .map_err(|e| Error::io("write producer snapshot", &self.dir, e))
    }

    /// Truncates a fully written segment to its exact size, syncs it and persists its indexes.
    async fn seal(&self, seg: &Segment) -> Result<()> {
        let size = seg.size();
        if let Err(e) = seg.file().set_len(size).await {
            return Err(self.poison("truncate", e.to_string()));
        }
        if let Err(e) = seg.file().sync().await {
            return Err(self.poison("fdatasync", e.to_string()));
        }
        seg.persist_indexes().await?;
        self.st
            .borrow()
            .txns
            .sync(seg.base())
            .map_err(|e| Error::io("sync aborted-transaction index", &self.dir, e))?;
        let mut st = self.st.borrow_mut();
        st.durable = st.durable.max(seg.next_offset());
        Ok(())
    }

    fn delete_segments_below(&self, offset: Offset) -> Result<()> {
        let doomed: Vec<Rc<Segment>> = {
            let st = self.st.borrow();
            let active = st.writer.segment().base();
            st.segments
                .values()
                .filter(|s| s.base() != active && s.next_offset() <= offset)
                .cloned()
                .collect()
        };
        let mut removed = Vec::with_capacity(doomed.len());
        let mut result = Ok(());
        for s in doomed {
            if let Err(e) = s.remove_files() {
                result = Err(e);
                break;
            }
            let mut st = self.st.borrow_mut();
            st.segments.remove(&s.base());
            st.txns.remove_segment(s.base());
            removed.push(s);
        }
        crate::segment::retire(removed);
        result
    }

    fn background_flush_triggers(self: &Rc<Self>) {
        let cfg = self.config.borrow().clone();
        let (count_due, arm_timer) = {
            let mut st = self.st.borrow_mut();
            let count_due =
                cfg.flush_messages != FLUSH_OFF && st.unflushed_records >= cfg.flush_messages;
            let arm = cfg.flush_ms != FLUSH_OFF && !st.flush_timer_armed;
            if arm {
                st.flush_timer_armed = true;
            }
            (count_due, arm)
        };
        if count_due {
            let me = self.clone();
            glommio::spawn_local(async move {
                let writer = me.st.borrow().writer.clone();
                if writer.drain().await.is_ok() {
                    me.ctx.flusher.request_background(me.clone());
                }
            })
            .detach();
        }
        if arm_timer {
            let me = self.clone();
            let delay = Duration::from_millis(cfg.flush_ms.max(0) as u64);
            glommio::spawn_local(async move {
                glommio::timer::sleep(delay).await;
                me.st.borrow_mut().flush_timer_armed = false;
                let writer = me.st.borrow().writer.clone();
                if writer.drain().await.is_ok() {
                    me.ctx.flusher.request_background(me.clone());
                }
            })
            .detach();
        }
    }

    /// The log start offset and high watermark, when a read may start at `offset`
    /// (`[log_start, high_watermark]`); OFFSET_OUT_OF_RANGE otherwise.
    fn readable_range(&self, offset: Offset) -> Result<(Offset, Offset)> {
        let st = self.st.borrow();
        let (log_start, hw) = (st.log_start, st.writer.written_offset());
        if offset < log_start || offset > hw {
            return Err(Error::OffsetOutOfRange {
                tp: self.tp.clone(),
                offset,
                log_start,
                log_end: hw,
            });
        }
        Ok((log_start, hw))
    }

    /// Checks `log_start <= durable <= high_watermark <= log_end`, naming all values.
    fn check_invariants(&self, st: &State) {
        let hw = st.writer.written_offset();
        debug_assert!(
            st.log_start <= hw && hw <= st.next_offset && st.durable <= st.next_offset,
            "{}: offsets out of order: log_start {} durable {} high_watermark {} log_end {}",
            self.tp,
            st.log_start,
            st.durable,
            hw,
            st.next_offset
        );
    }
}

/// A flush stores the recovery point again only after this much more data was flushed or this
/// long since the last store. Each store rewrites a small file through the page cache, which
/// the next journal commit must write too; at hundreds of acks=all rounds per second across
/// many partitions those stores made every fdatasync slower (16 partitions: 60 against 80-100
/// MB/s). A stale point only makes a crash recovery scan further, at most this much.
const RECOVERY_POINT_STORE_BYTES: u64 = 16 << 20;
const RECOVERY_POINT_STORE_INTERVAL: Duration = Duration::from_secs(1);

impl Inner {
    /// Whether a flush that made `pos` of segment `base` durable should store it as the
    /// recovery point (and if so, remembers that it did). Rolls, truncations and closes store
    /// their own points unconditionally.
    fn recovery_point_due(&self, base: Offset, pos: u64) -> bool {
        let now = Instant::now();
        let due = match self.flush_point.get() {
            None => true,
            Some((b, p, at)) => {
                b != base
                    || pos.abs_diff(p) >= RECOVERY_POINT_STORE_BYTES
                    || now.duration_since(at) >= RECOVERY_POINT_STORE_INTERVAL
            }
        };
        if due {
            self.flush_point.set(Some((base, pos, now)));
        }
        due
    }
}

impl FlushTarget for Inner {
    fn flush(self: Rc<Self>) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let (writer, (pos, covered)) = {
                let st = self.st.borrow();
                if st.poisoned.is_some() || st.closed {
                    return;
                }
                (st.writer.clone(), st.writer.written_mark())
            };
            // Never retry a failed fdatasync: the kernel may have dropped the dirty pages.
            match writer.segment().file().sync().await {
                Ok(()) => {
                    // A roll or truncation since the capture replaced the writer: the roll
                    // synced and accounted for the old segment itself, and a truncation may
                    // have cut below `covered`, so this round's result no longer applies.
                    let same_writer = {
                        let mut st = self.st.borrow_mut();
                        let same = Rc::ptr_eq(&st.writer, &writer);
                        if same {
                            st.durable = st.durable.max(covered);
                            st.unflushed_records = st.next_offset.0 - st.durable.0;
                        }
                        same
                    };
                    if same_writer && self.recovery_point_due(writer.segment().base(), pos) {
                        let point = RecoveryPoint {
                            segment_base: writer.segment().base(),
                            pos: FilePos(pos),
                            next_offset: covered,
                        };
                        if let Err(e) = point.store(&self.dir) {
                            tracing::warn!(tp = %self.tp, error = %e, "recovery point not updated");
                        }
                    }
                }
                Err(e) => {
                    let _ = self.poison("fdatasync", e.to_string());
                }
            }
        })
    }

    fn flush_id(&self) -> u64 {
        self.cache_id
    }
}

/// Validates every batch of a Produce `records` blob before anything is written.
fn validate_records(records: &[u8], cfg: &LogConfig) -> Result<()> {
    if records.is_empty() {
        return Err(Error::InvalidRecord {
            pos: 0,
            reason: InvalidRecord::Empty,
        });
    }
    if records.len() as u64 > cfg.segment_bytes {
        return Err(Error::RecordListTooLarge {
            size: records.len(),
            max: cfg.segment_bytes as usize,
        });
    }
    for item in BatchIter::new(records) {
        let (pos, batch) = item?;
        batch.validate(pos, cfg.max_message_bytes)?;
    }
    Ok(())
}

/// The bytes of `[align_down(end), end)`: the partial last sector the writer rewrites.
async fn read_tail(seg: &Segment, end: u64) -> Result<Vec<u8>> {
    let start = align_down(end);
    if start == end {
        return Ok(Vec::new());
    }
    let data = seg
        .file()
        .read_at(start, (end - start) as usize)
        .await
        .map_err(|e| Error::io("read segment tail", seg.log_path(), e))?;
    if data.len() as u64 != end - start {
        return Err(Error::CorruptLog {
            segment: seg.log_path(),
            pos: FilePos(start),
            detail: "short read of the last sector".to_string(),
        });
    }
    Ok(data.to_vec())
}

/// Kafka's default `producer.id.expiration.ms` (one day): an idempotent producer that has not
/// written for this long is forgotten (its next batch is accepted as from a new producer).
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

/// Bytes read per step when replaying batches into the producer state.
const PRODUCER_REPLAY_CHUNK_BYTES: usize = 1 << 20;

/// The one batch of an idempotent or transactional producer in `records`, if it is one; an
/// error when such a batch does not come alone. `records` was validated.
fn producer_batch(records: &[u8]) -> Result<Option<IncomingBatch>> {
    let mut found = None;
    let mut batches = 0usize;
    let mut at = 0usize;
    while let Some(h) = BatchHeader::read(&records[at..]) {
        if let Some(b) = IncomingBatch::from_header(&records[at..]) {
            if b.is_idempotent() {
                found = Some(b);
            }
        }
        batches += 1;
        at += h.total_len as usize;
        if at >= records.len() {
            break;
        }
    }
    if found.is_some() && batches > 1 {
        return Err(Error::InvalidRecord {
            pos: 0,
            reason: InvalidRecord::ProducerBatchNotAlone,
        });
    }
    Ok(found)
}

/// Rebuilds the producer state at open: the newest snapshot valid for the log, then every
/// batch after it; without a snapshot, every batch of the log. Returns the table,
/// the offset the replay started from, and the aborted transactions whose markers it met
/// (with their segments' bases), from which the aborted-transaction index of that range is
/// rebuilt.
async fn rebuild_producer_state(
    dir: &Path,
    segments: &BTreeMap<Offset, Rc<Segment>>,
    log_end: Offset,
) -> Result<(ProducerStateTable, Offset, Vec<(Offset, AbortedTxnEntry)>)> {
    let loaded = producer_state::load_latest_snapshot(dir, log_end)
        .map_err(|e| Error::io("read producer snapshot", dir, e))?;
    // Without a snapshot every segment is replayed: a transaction still open in an older
    // segment must hold the last stable offset back (a log that never rolled has one segment;
    // truncation below every kept snapshot is the other, rare, case).
    let first_base = segments.keys().next().copied().unwrap_or(Offset(0));
    let (mut table, from) = loaded.unwrap_or_else(|| (ProducerStateTable::new(), first_base));
    let now = now_ms();
    let mut aborted = Vec::new();
    for seg in segments.values() {
        if seg.next_offset() <= from {
            continue;
        }
        let mut scan = Scanner::new(seg.file(), 0, seg.size(), PRODUCER_REPLAY_CHUNK_BYTES);
        while let ScanItem::Batch { header, bytes, .. } = scan.next(true).await? {
            if header.last_offset() >= from {
                if let Some(done) = table.replay(&bytes, now).filter(|d| !d.committed) {
                    aborted.push((seg.base(), aborted_entry(&table, &done)));
                }
            }
        }
    }
    Ok((table, from, aborted))
}

/// The index entry of an aborted transaction, once its marker is recorded in `table`: the
/// last stable offset right after the abort is the first offset of the oldest transaction
/// still open, or just past the marker.
fn aborted_entry(
    table: &ProducerStateTable,
    done: &producer_state::CompletedTxn,
) -> AbortedTxnEntry {
    AbortedTxnEntry {
        producer_id: done.producer_id,
        first_offset: done.first_offset,
        last_offset: done.last_offset,
        last_stable_offset: table
            .first_unstable_offset()
            .unwrap_or(Offset(done.last_offset.0 + 1)),
    }
}

/// Refuses control batches in records from a producer: only the broker writes transaction
/// markers (Kafka answers INVALID_RECORD). `records` was validated.
fn refuse_control_batches(records: &[u8]) -> Result<()> {
    let mut at = 0usize;
    while let Some(h) = BatchHeader::read(&records[at..]) {
        if IncomingBatch::from_header(&records[at..]).is_some_and(|b| b.control) {
            return Err(Error::InvalidRecord {
                pos: at,
                reason: InvalidRecord::ControlBatchFromClient,
            });
        }
        at += h.total_len as usize;
        if at >= records.len() {
            break;
        }
    }
    Ok(())
}

fn read_checkpoint(dir: &Path) -> Result<Option<Offset>> {
    let path = dir.join(LOG_START_CHECKPOINT);
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<i64>()
            .map(|v| Some(Offset(v)))
            .map_err(|e| Error::CorruptLog {
                segment: path,
                pos: FilePos(0),
                detail: format!("bad log start checkpoint: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read checkpoint", path, e)),
    }
}

/// Writes the log start checkpoint durably: temp file, fsync, rename, fsync the directory.
/// These are small blocking calls on a rare admin/retention path.
fn write_checkpoint(dir: &Path, offset: Offset) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{LOG_START_CHECKPOINT}.tmp"));
    let path = dir.join(LOG_START_CHECKPOINT);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create checkpoint", &tmp, e))?;
    f.write_all(format!("{}\n", offset.0).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write checkpoint", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename checkpoint", &path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
