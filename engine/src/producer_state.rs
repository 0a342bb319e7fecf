//! Per-partition producer state: what makes idempotent and transactional produce work.
//!
//! For every producer id that wrote to the partition the table keeps the producer's epoch, the
//! metadata of its last [`CACHED_BATCHES`] batches (sequence range and offsets), when it last
//! appended, and the first offset of its open transaction, if any. Before a batch from an
//! idempotent producer is appended, [`ProducerStateTable::check`] decides, as Kafka does:
//!
//! - a batch whose sequence range equals one of the cached batches of the same epoch is a
//!   retried duplicate: nothing is written and the original offsets are answered;
//! - an older epoch is fenced (INVALID_PRODUCER_EPOCH);
//! - a newer epoch (an epoch bump, KIP-360) must start at sequence 0, unless the producer is
//!   unknown here (its state expired, or it never wrote to this partition);
//! - otherwise the batch must start right after the last sequence
//!   (OUT_OF_ORDER_SEQUENCE_NUMBER for a gap, or for a duplicate older than the cache).
//!
//! Sequences are per partition and wrap from `i32::MAX` to 0. After the batch has its offsets,
//! [`ProducerStateTable::record`] remembers it. Transaction markers (control batches) close the
//! producer's open transaction; the smallest first offset of the open transactions is the
//! partition's first unstable offset, which bounds the last stable offset (LSO).
//!
//! The table is rebuilt after a restart from a snapshot (written when a segment rolls, see
//! [`ProducerStateTable::encode_snapshot`]) plus a replay of the batches after the snapshot's
//! offset; replay goes through [`ProducerStateTable::replay`], which records without checking.
//! Without a snapshot (a log that never rolled since it was written, or one truncated below
//! every kept snapshot) the whole log is replayed: an open transaction must be known wherever
//! it started, or the last stable offset would pass it.
//! Snapshots keep all cached batches, not only the last, so duplicate detection is as good after
//! a restart as before it. Plain data: owned by the partition, on the partition's home shard.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use crate::batch::{
    BatchHeader, BatchView, ATTRIBUTES_AT, ATTRIBUTES_CONTROL, ATTRIBUTES_TRANSACTIONAL,
    BASE_SEQUENCE_AT, PRODUCER_EPOCH_AT, PRODUCER_ID_AT, RECORD_COUNT_AT,
};
use crate::limits::BATCH_HEADER_BYTES;
use crate::types::Offset;

/// The producer id of a batch from a producer that is neither idempotent nor transactional.
pub const NO_PRODUCER_ID: i64 = -1;
/// The epoch of such a batch.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// The sequence of such a batch.
pub const NO_SEQUENCE: i32 = -1;

/// How many batches per producer are remembered for duplicate detection. Kafka's producers
/// keep at most five requests in flight per connection when idempotent, so a retry is always
/// of one of the last five batches.
pub const CACHED_BATCHES: usize = 5;

/// Kafka error codes of a refused batch.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const TRANSACTION_COORDINATOR_FENCED: i16 = 52;

/// Identifies the snapshot file format.
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
const SNAPSHOT_VERSION: u16 = 1;

/// A batch as the producer state sees it: its producer fields and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: i64,
}

/// What a produced batch is, for the checks (before it has offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub record_count: i32,
    pub transactional: bool,
    pub control: bool,
}

impl IncomingBatch {
    /// The producer fields of a validated batch.
    pub fn of(view: &BatchView<'_>) -> IncomingBatch {
        IncomingBatch {
            producer_id: view.producer_id(),
            epoch: view.producer_epoch(),
            first_seq: view.base_sequence(),
            record_count: view.record_count(),
            transactional: view.is_transactional(),
            control: view.is_control(),
        }
    }

    /// The producer fields of the batch starting at `buf[0]`, read from its 61-byte header
    /// alone; `None` when fewer bytes are present.
    pub fn from_header(buf: &[u8]) -> Option<IncomingBatch> {
        if buf.len() < BATCH_HEADER_BYTES {
            return None;
        }
        let i16_at = |at: usize| i16::from_be_bytes([buf[at], buf[at + 1]]);
        let i32_at =
            |at: usize| i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&buf[PRODUCER_ID_AT..PRODUCER_ID_AT + 8]);
        let attributes = i16_at(ATTRIBUTES_AT);
        Some(IncomingBatch {
            producer_id: i64::from_be_bytes(id),
            epoch: i16_at(PRODUCER_EPOCH_AT),
            first_seq: i32_at(BASE_SEQUENCE_AT),
            record_count: i32_at(RECORD_COUNT_AT),
            transactional: attributes & ATTRIBUTES_TRANSACTIONAL != 0,
            control: attributes & ATTRIBUTES_CONTROL != 0,
        })
    }

    /// Whether the batch comes from an idempotent or transactional producer.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// The sequence of the batch's last record (sequences wrap from `i32::MAX` to 0); none
    /// for a batch without sequences (a coordinator's, see [`ProducerStateTable::check_epoch`]).
    pub fn last_seq(&self) -> i32 {
        if self.first_seq == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        add_seq(self.first_seq, self.record_count.saturating_sub(1).max(0))
    }
}

/// The outcome of a successful check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not an idempotent batch, or the next one in sequence: append it.
    Append,
    /// A retry of a batch already in the log: answer its offsets, write nothing.
    Duplicate(BatchMeta),
}

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("producer {producer_id} has epoch {current} here; epoch {got} is fenced")]
    FencedEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("producer {producer_id} sent sequence {got} but {expected} was expected")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} started epoch {epoch} at sequence {got}, not 0")]
    NewEpochNotAtZero {
        producer_id: i64,
        epoch: i16,
        got: i32,
    },
    #[error(
        "a marker for producer {producer_id} comes from coordinator epoch {got}, older than {current}"
    )]
    CoordinatorFenced {
        producer_id: i64,
        current: i32,
        got: i32,
    },
}

impl ProducerError {
    /// The error code Kafka answers with.
    pub fn kafka_code(&self) -> i16 {
        match self {
            ProducerError::FencedEpoch { .. } => INVALID_PRODUCER_EPOCH,
            ProducerError::OutOfOrder { .. } | ProducerError::NewEpochNotAtZero { .. } => {
                OUT_OF_ORDER_SEQUENCE_NUMBER
            }
            ProducerError::CoordinatorFenced { .. } => TRANSACTION_COORDINATOR_FENCED,
        }
    }
}

/// The state of one producer on this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The last batches, oldest first; at most [`CACHED_BATCHES`].
    batches: VecDeque<BatchMeta>,
    /// Broker time of the last append or marker, for expiry.
    pub last_append_ms: i64,
    /// First offset of the producer's open transaction on this partition.
    pub txn_first_offset: Option<Offset>,
    /// Epoch of the transaction coordinator that wrote the last marker.
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(CACHED_BATCHES),
            last_append_ms: 0,
            txn_first_offset: None,
            coordinator_epoch: -1,
        }
    }

    /// The producer's cached batches, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &BatchMeta> {
        self.batches.iter()
    }

    /// The sequence of the last record written, if any batch is cached.
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }
}

/// A transaction closed by a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    /// The marker's offset.
    pub last_offset: Offset,
    pub committed: bool,
}

/// Every producer's state on one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// The open transactions by first offset (to producer id), so the first unstable offset,
    /// asked for by every fetch, costs no scan of all producers. Mirrors the producers'
    /// `txn_first_offset`.
    open_txns: BTreeMap<Offset, i64>,
}

impl ProducerStateTable {
    pub fn new() -> ProducerStateTable {
        ProducerStateTable::default()
    }

    /// The state of one producer.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// How many producers have state here.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer with its state (for DescribeProducers), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Decides whether `batch` may be appended. Does not change the table: the caller records
    /// the batch once it has its offsets. Control batches are written by the broker itself and
    /// are not checked here.
    pub fn check(&self, batch: &IncomingBatch) -> Result<Verdict, ProducerError> {
        if !batch.is_idempotent() || batch.control {
            return Ok(Verdict::Append);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // Unknown here: the producer never wrote to this partition, or its state expired.
            // Kafka (since 2.5) accepts any sequence then, so a long-idle producer can go on.
            return Ok(Verdict::Append);
        };
        if batch.epoch < entry.epoch {
            return Err(ProducerError::FencedEpoch {
                producer_id: batch.producer_id,
                current: entry.epoch,
                got: batch.epoch,
            });
        }
        if batch.epoch > entry.epoch {
            // A bumped epoch restarts the sequences of every partition at 0.
            if batch.first_seq != 0 {
                return Err(ProducerError::NewEpochNotAtZero {
                    producer_id: batch.producer_id,
                    epoch: batch.epoch,
                    got: batch.first_seq,
                });
            }
            return Ok(Verdict::Append);
        }
        let last_seq = batch.last_seq();
        if let Some(original) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == last_seq)
        {
            return Ok(Verdict::Duplicate(*original));
        }
        match entry.last_seq() {
            // Same epoch, but nothing cached (only a marker was written in this epoch): Kafka
            // accepts the batch, as it cannot know the next sequence.
            None => Ok(Verdict::Append),
            Some(last) if add_seq(last, 1) == batch.first_seq => Ok(Verdict::Append),
            Some(last) => Err(ProducerError::OutOfOrder {
                producer_id: batch.producer_id,
                expected: add_seq(last, 1),
                got: batch.first_seq,
            }),
        }
    }

    /// Decides whether a batch that a coordinator writes under a producer's identity may be
    /// appended (Kafka checks only the epoch for `AppendOrigin.COORDINATOR`): it has no
    /// sequence numbers, so an older epoch is all that is refused. Does not change the table.
    pub fn check_epoch(&self, batch: &IncomingBatch) -> Result<(), ProducerError> {
        match self.producers.get(&batch.producer_id) {
            Some(entry) if batch.epoch < entry.epoch => Err(ProducerError::FencedEpoch {
                producer_id: batch.producer_id,
                current: entry.epoch,
                got: batch.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Remembers an appended batch of an idempotent or transactional producer (others are
    /// ignored). A transactional batch opens the producer's transaction if none is open.
    pub fn record(
        &mut self,
        batch: &IncomingBatch,
        first_offset: Offset,
        last_offset: Offset,
        max_timestamp: i64,
        now_ms: i64,
    ) {
        if !batch.is_idempotent() || batch.control {
            return;
        }
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry::new(batch.epoch));
        if batch.epoch != entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq(),
            first_offset,
            last_offset,
            max_timestamp,
        });
        entry.last_append_ms = now_ms;
        if batch.transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(first_offset);
            self.open_txns.insert(first_offset, batch.producer_id);
        }
    }

    /// Decides whether a transaction marker of `producer_id` may be written, as Kafka does for
    /// markers from the coordinator: an epoch older than the producer's epoch here is fenced
    /// (INVALID_PRODUCER_EPOCH), and so is a marker from a coordinator epoch older than the one
    /// that wrote this producer's last marker (TRANSACTION_COORDINATOR_FENCED: a coordinator
    /// that lost its role must not complete transactions any more). Does not change the table.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ProducerError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(ProducerError::FencedEpoch {
                producer_id,
                current: entry.epoch,
                got: epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(ProducerError::CoordinatorFenced {
                producer_id,
                current: entry.coordinator_epoch,
                got: coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Applies a transaction marker written at `offset` for `producer_id`: closes its open
    /// transaction and returns it. A marker without an open transaction completes an empty
    /// one starting at the marker itself, as in Kafka (an abort of it is indexed all the same).
    pub fn record_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        committed: bool,
        coordinator_epoch: i32,
        offset: Offset,
        now_ms: i64,
    ) -> CompletedTxn {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch));
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_append_ms = now_ms;
        CompletedTxn {
            producer_id,
            first_offset: match entry.txn_first_offset.take() {
                Some(first) => {
                    self.open_txns.remove(&first);
                    first
                }
                None => offset,
            },
            last_offset: offset,
            committed,
        }
    }

    /// Replays one whole batch read back from the log (recovery): records it without checks.
    /// Reads only the header fields (and a control batch's marker record), so a batch whose
    /// body is damaged still counts. Returns the transaction a marker completed, if a marker.
    pub fn replay(&mut self, batch: &[u8], now_ms: i64) -> Option<CompletedTxn> {
        let header = BatchHeader::read(batch)?;
        let incoming = IncomingBatch::from_header(batch)?;
        if !incoming.is_idempotent() {
            return None;
        }
        if incoming.control {
            let (committed, coordinator_epoch) = control_marker(batch)?;
            return Some(self.record_marker(
                incoming.producer_id,
                incoming.epoch,
                committed,
                coordinator_epoch,
                header.base_offset,
                now_ms,
            ));
        }
        self.record(
            &incoming,
            header.base_offset,
            header.last_offset(),
            header.max_timestamp,
            now_ms,
        );
        None
    }

    /// The smallest first offset of an open transaction: the LSO cannot pass it.
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.open_txns.keys().next().copied()
    }

    /// Forgets producers without an open transaction that have not appended for
    /// `expiration_ms` (Kafka's `producer.id.expiration.ms`). Returns how many were dropped.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_append_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    /// The table as snapshot bytes, valid for a log whose batches up to (not including)
    /// `next_offset` are reflected in it. Format (big-endian): magic "SLPS", version u16,
    /// next offset i64, producer count u32, then per producer: id i64, epoch i16, coordinator
    /// epoch i32, open transaction's first offset i64 (-1: none), last append ms i64, batch
    /// count u8 and per batch first/last sequence i32, first/last offset i64, max timestamp
    /// i64; then CRC-32C of everything before it.
    pub fn encode_snapshot(&self, next_offset: Offset) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.producers.len() * 80);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&next_offset.0.to_be_bytes());
        let count = u32::try_from(self.producers.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        for id in ids.into_iter().take(count as usize) {
            let e = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.txn_first_offset.map_or(-1, |o| o.0).to_be_bytes());
            out.extend_from_slice(&e.last_append_ms.to_be_bytes());
            // At most CACHED_BATCHES, so it fits in a byte.
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.0.to_be_bytes());
                out.extend_from_slice(&b.last_offset.0.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot written by [`encode_snapshot`](Self::encode_snapshot): the table and
    /// the offset it is valid up to. Any defect (a torn or foreign file) is an error; the
    /// caller then rebuilds from an older snapshot or from the log.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(ProducerStateTable, Offset), SnapshotError> {
        let body_len = bytes.len().checked_sub(4).ok_or(SnapshotError::Truncated)?;
        let (body, crc) = bytes.split_at(body_len);
        let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != crc {
            return Err(SnapshotError::Checksum);
        }
        let mut r = Reader { buf: body };
        if r.take(4)? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Magic);
        }
        let version = u16::from_be_bytes(r.array()?);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        let next_offset = Offset(i64::from_be_bytes(r.array()?));
        let count = u32::from_be_bytes(r.array()?);
        let mut table = ProducerStateTable::new();
        for _ in 0..count {
            let id = i64::from_be_bytes(r.array()?);
            let epoch = i16::from_be_bytes(r.array()?);
            let coordinator_epoch = i32::from_be_bytes(r.array()?);
            let txn = i64::from_be_bytes(r.array()?);
            let last_append_ms = i64::from_be_bytes(r.array()?);
            let nbatches = r.take(1)?[0] as usize;
            if nbatches > CACHED_BATCHES {
                return Err(SnapshotError::Malformed("too many batches for a producer"));
            }
            let mut batches = VecDeque::with_capacity(nbatches);
            for _ in 0..nbatches {
                batches.push_back(BatchMeta {
                    first_seq: i32::from_be_bytes(r.array()?),
                    last_seq: i32::from_be_bytes(r.array()?),
                    first_offset: Offset(i64::from_be_bytes(r.array()?)),
                    last_offset: Offset(i64::from_be_bytes(r.array()?)),
                    max_timestamp: i64::from_be_bytes(r.array()?),
                });
            }
            let entry = ProducerEntry {
                epoch,
                batches,
                last_append_ms,
                txn_first_offset: (txn >= 0).then_some(Offset(txn)),
                coordinator_epoch,
            };
            if table.producers.insert(id, entry).is_some() {
                return Err(SnapshotError::Malformed("a producer appears twice"));
            }
            if txn >= 0 && table.open_txns.insert(Offset(txn), id).is_some() {
                return Err(SnapshotError::Malformed(
                    "two transactions start at one offset",
                ));
            }
        }
        if !r.buf.is_empty() {
            return Err(SnapshotError::Malformed("bytes after the last producer"));
        }
        Ok((table, next_offset))
    }
}

/// Suffix of producer-state snapshot files: `<20-digit offset>.snapshot` in the partition's
/// directory, the offset being the log end the snapshot is valid for.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";

/// How many snapshot files a partition keeps (the newest ones); an older one only helps when
/// every newer one is damaged.
pub const SNAPSHOTS_KEPT: usize = 2;

/// The file name of the snapshot valid up to `offset`.
pub fn snapshot_file_name(offset: Offset) -> String {
    format!("{:020}{SNAPSHOT_SUFFIX}", offset.0)
}

/// The offsets of the snapshot files in `dir`, ascending.
pub fn list_snapshots(dir: &Path) -> std::io::Result<Vec<Offset>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX)) else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(offset) = stem.parse::<i64>() {
                out.push(Offset(offset));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes the snapshot of `table` valid up to `offset` durably (temporary file, fsync,
/// rename, directory fsync), then removes all but the newest [`SNAPSHOTS_KEPT`] snapshots.
/// Small blocking file calls, on the rare roll and close paths.
pub fn write_snapshot(
    dir: &Path,
    table: &ProducerStateTable,
    offset: Offset,
) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(snapshot_file_name(offset));
    let tmp = dir.join(format!("{}.tmp", snapshot_file_name(offset)));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&table.encode_snapshot(offset))?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    let all = list_snapshots(dir)?;
    for old in &all[..all.len().saturating_sub(SNAPSHOTS_KEPT)] {
        remove_snapshot(dir, *old)?;
    }
    Ok(())
}

/// Removes the snapshots for offsets above `offset` (the log was truncated below them).
pub fn remove_snapshots_above(dir: &Path, offset: Offset) -> std::io::Result<()> {
    for s in list_snapshots(dir)? {
        if s > offset {
            remove_snapshot(dir, s)?;
        }
    }
    Ok(())
}

fn remove_snapshot(dir: &Path, offset: Offset) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(snapshot_file_name(offset))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The newest readable snapshot valid for a log ending at `log_end` (offset <= `log_end`):
/// the table and its offset. Damaged snapshots are skipped (with a warning), so a torn write
/// costs a longer replay, never a wrong state.
pub fn load_latest_snapshot(
    dir: &Path,
    log_end: Offset,
) -> std::io::Result<Option<(ProducerStateTable, Offset)>> {
    for offset in list_snapshots(dir)?.into_iter().rev() {
        if offset > log_end {
            continue;
        }
        let path = dir.join(snapshot_file_name(offset));
        let bytes = std::fs::read(&path)?;
        match ProducerStateTable::decode_snapshot(&bytes) {
            Ok((table, at)) if at == offset => return Ok(Some((table, at))),
            Ok((_, at)) => {
                tracing::warn!(path = %path.display(), inner = at.0, "producer-state snapshot names another offset; skipped")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "damaged producer-state snapshot skipped")
            }
        }
    }
    Ok(None)
}

/// Why a snapshot could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot is truncated")]
    Truncated,
    #[error("the snapshot's checksum does not match")]
    Checksum,
    #[error("not a producer-state snapshot")]
    Magic,
    #[error("unknown producer-state snapshot version {0}")]
    Version(u16),
    #[error("malformed producer-state snapshot: {0}")]
    Malformed(&'static str),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.buf.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// `seq + n` in Kafka's sequence space, which wraps from `i32::MAX` to 0.
pub fn add_seq(seq: i32, n: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(n);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// The type (commit or abort) and coordinator epoch of a control batch's marker record.
///
/// A marker record's key is (version i16, type i16: 0 abort, 1 commit) and its value is
/// (version i16, coordinator epoch i32). Control batches are never compressed.
fn control_marker(batch: &[u8]) -> Option<(bool, i32)> {
    let count = IncomingBatch::from_header(batch)?.record_count;
    let mut records = crate::records::RecordIter::new(batch.get(BATCH_HEADER_BYTES..)?, count);
    let record = records.next()?.ok()?;
    let key = record.key?;
    let value = record.value?;
    if key.len() < 4 || value.len() < 6 {
        return None;
    }
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Some((kind == 1, coordinator_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 7;

    fn batch(epoch: i16, first_seq: i32, count: i32) -> IncomingBatch {
        IncomingBatch {
            producer_id: PID,
            epoch,
            first_seq,
            record_count: count,
            transactional: false,
            control: false,
        }
    }

    /// Checks and, when accepted, records the batch at the next offsets of a log ending at
    /// `*next`.
    fn produce(
        t: &mut ProducerStateTable,
        b: IncomingBatch,
        next: &mut i64,
    ) -> Result<Verdict, ProducerError> {
        let verdict = t.check(&b)?;
        if verdict == Verdict::Append {
            let first = *next;
            *next += i64::from(b.record_count);
            t.record(&b, Offset(first), Offset(*next - 1), 0, 1000);
        }
        Ok(verdict)
    }

    #[test]
    fn in_sequence_batches_append_and_retries_return_the_original_offsets() {
        let mut t = ProducerStateTable::new();
        let mut next = 0;
        assert_eq!(
            produce(&mut t, batch(0, 0, 3), &mut next),
            Ok(Verdict::Append)
        );
        assert_eq!(
            produce(&mut t, batch(0, 3, 2), &mut next),
            Ok(Verdict::Append)
        );
        assert_eq!(next, 5);
        let Ok(Verdict::Duplicate(original)) = produce(&mut t, batch(0, 0, 3), &mut next) else {
            panic!("a retry of the first batch must be a duplicate");
        };
        assert_eq!(
            (original.first_offset, original.last_offset),
            (Offset(0), Offset(2))
        );
        assert_eq!(next, 5, "a duplicate writes nothing");
    }

    #[test]
    fn gaps_and_duplicates_older_than_the_cache_are_out_of_order() {
        let mut t = ProducerStateTable::new();
        let mut next = 0;
        for i in 0..7 {
            produce(&mut t, batch(0, i, 1), &mut next).unwrap();
        }
        let gap = produce(&mut t, batch(0, 9, 1), &mut next).unwrap_err();
        assert_eq!(gap.kafka_code(), OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert_eq!(
            gap,
            ProducerError::OutOfOrder {
                producer_id: PID,
                expected: 7,
                got: 9
            }
        );
        // Sequence 1 was the second of seven batches: no longer among the last five.
        assert!(produce(&mut t, batch(0, 1, 1), &mut next).is_err());
        assert!(matches!(
            produce(&mut t, batch(0, 2, 1), &mut next),
            Ok(Verdict::Duplicate(_))
        ));
    }

    #[test]
    fn old_epochs_are_fenced_and_new_epochs_start_at_zero() {
        let mut t = ProducerStateTable::new();
        let mut next = 0;
        produce(&mut t, batch(3, 0, 2), &mut next).unwrap();
        let fenced = produce(&mut t, batch(2, 2, 1), &mut next).unwrap_err();
        assert_eq!(fenced.kafka_code(), INVALID_PRODUCER_EPOCH);
        let bad_bump = produce(&mut t, batch(4, 5, 1), &mut next).unwrap_err();
        assert_eq!(bad_bump.kafka_code(), OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert_eq!(
            produce(&mut t, batch(4, 0, 1), &mut next),
            Ok(Verdict::Append)
        );
        // The bump forgot the old epoch's batches: its sequence 0 is not a duplicate any more.
        assert_eq!(t.get(PID).unwrap().batches().count(), 1);
        assert_eq!(t.get(PID).unwrap().epoch, 4);
    }

    #[test]
    fn unknown_producers_may_start_anywhere_and_plain_batches_are_not_checked() {
        let t = ProducerStateTable::new();
        assert_eq!(t.check(&batch(0, 42, 1)), Ok(Verdict::Append));
        let mut plain = batch(NO_PRODUCER_EPOCH, NO_SEQUENCE, 3);
        plain.producer_id = NO_PRODUCER_ID;
        assert_eq!(t.check(&plain), Ok(Verdict::Append));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(add_seq(i32::MAX, 1), 0);
        assert_eq!(add_seq(i32::MAX - 1, 3), 1);
        let b = batch(0, i32::MAX - 1, 4);
        // Sequences MAX-1, MAX, 0, 1.
        assert_eq!(b.last_seq(), 1);
        let mut t = ProducerStateTable::new();
        let mut next = 0;
        produce(&mut t, b, &mut next).unwrap();
        assert!(produce(&mut t, batch(0, 3, 1), &mut next).is_err());
        assert_eq!(
            produce(&mut t, batch(0, 2, 1), &mut next),
            Ok(Verdict::Append)
        );
    }

    #[test]
    fn transactions_bound_the_first_unstable_offset_until_their_marker() {
        let mut t = ProducerStateTable::new();
        let mut txn = batch(0, 0, 2);
        txn.transactional = true;
        t.record(&txn, Offset(10), Offset(11), 0, 1);
        let mut other = batch(0, 0, 1);
        other.producer_id = 8;
        other.transactional = true;
        t.record(&other, Offset(12), Offset(12), 0, 1);
        assert_eq!(t.first_unstable_offset(), Some(Offset(10)));
        let done = t.record_marker(PID, 0, true, 3, Offset(13), 2);
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: PID,
                first_offset: Offset(10),
                last_offset: Offset(13),
                committed: true
            }
        );
        assert_eq!(t.first_unstable_offset(), Some(Offset(12)));
        assert_eq!(
            t.record_marker(8, 0, false, 3, Offset(14), 2).first_offset,
            Offset(12)
        );
        assert_eq!(t.first_unstable_offset(), None);
        // A marker without an open transaction completes an empty one at itself.
        assert_eq!(
            t.record_marker(8, 0, false, 3, Offset(15), 2).first_offset,
            Offset(15)
        );
    }

    #[test]
    fn coordinator_batches_without_sequences_are_checked_by_epoch_only() {
        let mut t = ProducerStateTable::new();
        let mut txn = batch(3, NO_SEQUENCE, 2);
        txn.transactional = true;
        assert_eq!(t.check_epoch(&txn), Ok(()), "unknown producers pass");
        t.record(&txn, Offset(10), Offset(11), 0, 1);
        assert_eq!(t.get(PID).unwrap().last_seq(), Some(NO_SEQUENCE));
        assert_eq!(t.first_unstable_offset(), Some(Offset(10)));
        // The same records again are a second write, not a retry: no sequence says otherwise.
        assert_eq!(t.check_epoch(&txn), Ok(()));
        t.record(&txn, Offset(12), Offset(13), 0, 2);
        assert_eq!(t.first_unstable_offset(), Some(Offset(10)));
        let mut fenced = txn;
        fenced.epoch = 2;
        assert_eq!(
            t.check_epoch(&fenced).unwrap_err().kafka_code(),
            INVALID_PRODUCER_EPOCH
        );
        let mut bumped = txn;
        bumped.epoch = 4;
        assert_eq!(t.check_epoch(&bumped), Ok(()));
    }

    #[test]
    fn markers_from_old_producer_or_coordinator_epochs_are_fenced() {
        let mut t = ProducerStateTable::new();
        let mut txn = batch(2, 0, 1);
        txn.transactional = true;
        t.record(&txn, Offset(0), Offset(0), 0, 1);
        assert_eq!(t.check_marker(PID, 2, 0), Ok(()));
        assert_eq!(t.check_marker(99, 0, 0), Ok(()), "unknown producers pass");
        let fenced = t.check_marker(PID, 1, 0).unwrap_err();
        assert_eq!(fenced.kafka_code(), INVALID_PRODUCER_EPOCH);
        t.record_marker(PID, 2, false, 5, Offset(1), 2);
        let old_coordinator = t.check_marker(PID, 2, 4).unwrap_err();
        assert_eq!(old_coordinator.kafka_code(), TRANSACTION_COORDINATOR_FENCED);
        // A bumped epoch (the coordinator fencing the producer) is accepted.
        assert_eq!(t.check_marker(PID, 3, 5), Ok(()));
    }

    #[test]
    fn idle_producers_expire_unless_a_transaction_is_open() {
        let mut t = ProducerStateTable::new();
        t.record(&batch(0, 0, 1), Offset(0), Offset(0), 0, 1_000);
        let mut open = batch(0, 0, 1);
        open.producer_id = 9;
        open.transactional = true;
        t.record(&open, Offset(1), Offset(1), 0, 1_000);
        assert_eq!(t.expire(5_000, 10_000), 0);
        assert_eq!(t.expire(11_000, 10_000), 1);
        assert!(t.get(PID).is_none());
        assert!(t.get(9).is_some());
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let mut t = ProducerStateTable::new();
        let mut next = 0;
        for i in 0..6 {
            produce(&mut t, batch(1, i * 2, 2), &mut next).unwrap();
        }
        let mut txn = batch(0, 0, 1);
        txn.producer_id = 99;
        txn.transactional = true;
        t.record(&txn, Offset(12), Offset(12), 5, 7);
        let bytes = t.encode_snapshot(Offset(13));
        let (back, offset) = ProducerStateTable::decode_snapshot(&bytes).unwrap();
        assert_eq!(offset, Offset(13));
        assert_eq!(back, t);
        assert!(matches!(
            back.check(&batch(1, 10, 2)),
            Ok(Verdict::Duplicate(_))
        ));

        for cut in [0, 3, 10, bytes.len() - 1] {
            assert!(
                ProducerStateTable::decode_snapshot(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(
            ProducerStateTable::decode_snapshot(&flipped),
            Err(SnapshotError::Checksum)
        );
    }

    #[test]
    fn snapshot_files_keep_the_newest_and_skip_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = ProducerStateTable::new();
        let mut next = 0;
        for (i, at) in [10, 20, 30].into_iter().enumerate() {
            produce(&mut t, batch(0, i as i32, 1), &mut next).unwrap();
            write_snapshot(dir.path(), &t, Offset(at)).unwrap();
        }
        assert_eq!(
            list_snapshots(dir.path()).unwrap(),
            vec![Offset(20), Offset(30)]
        );
        let (latest, at) = load_latest_snapshot(dir.path(), Offset(100))
            .unwrap()
            .unwrap();
        assert_eq!(
            (at, latest.get(PID).unwrap().last_seq()),
            (Offset(30), Some(2))
        );
        // A log that ends before the newest snapshot uses an older one.
        let (older, at) = load_latest_snapshot(dir.path(), Offset(25))
            .unwrap()
            .unwrap();
        assert_eq!(
            (at, older.get(PID).unwrap().last_seq()),
            (Offset(20), Some(1))
        );
        // A torn newest snapshot falls back to the previous one.
        std::fs::write(dir.path().join(snapshot_file_name(Offset(30))), b"SLPS\0").unwrap();
        assert_eq!(
            load_latest_snapshot(dir.path(), Offset(100))
                .unwrap()
                .unwrap()
                .1,
            Offset(20)
        );
        remove_snapshots_above(dir.path(), Offset(20)).unwrap();
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![Offset(20)]);
    }
}
