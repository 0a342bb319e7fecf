//! The log cleaner: compaction for topics with `cleanup.policy=compact` (or `compact,delete`),
//! keeping the latest record of every key, as Kafka's `LogCleaner` does.
//!
//! One [`Cleaner`] per shard cleans that shard's partitions from the shard's low-priority task
//! queue (the broker runs it every `log.cleaner.backoff.ms`). A round picks the partitions
//! whose dirty share reaches `min.cleanable.dirty.ratio` (or whose oldest dirty record is past
//! `max.compaction.lag.ms`), dirtiest first, and cleans each in passes (at one I/O rate for the
//! whole round, set by the round's backlog: [`CleanerOptions::backlog_pace`]):
//!
//! 1. **Range.** The log is clean below its cleaner checkpoint (`cleaner-offset-checkpoint` in
//!    the partition directory) and dirty from there up to the first uncleanable offset: the
//!    active segment's base, the last stable offset (an open transaction's records stay
//!    untouched), and the base of the first segment holding a record newer than
//!    `min.compaction.lag.ms`.
//! 2. **Map.** The dirty range's keys go into the [`KeyMap`] (key hash → latest offset) with its
//!    fixed memory budget; when the next batch would not fit, the pass stops there and the rest
//!    is left to the next pass, so any number of keys is cleaned in bounded memory.
//! 3. **Copy.** Every closed segment below the pass's end is rewritten, in groups of
//!    consecutive segments whose sizes add up to at most `segment.bytes` (so small segments
//!    merge), keeping a record only when no later offset of its key is in the map, and dropping
//!    tombstones (and transaction markers) whose delete horizon has passed; the batch rules are
//!    in [`filter`]. Aborted transactional records are removed and never enter the map.
//! 4. **Swap.** Each group's output replaces its segments atomically and crash-safely
//!    ([`swap`]); then the checkpoint moves to the pass's end.
//!
//! The cleaner never touches the active segment, never renumbers offsets, and only reads
//! closed segments, which are immutable; a swap checks that the segments it replaces are still
//! the partition's (retention or truncation may have removed them meanwhile) and gives up
//! otherwise. Owned by its shard; never crosses cores.

pub mod filter;
pub mod key_map;
pub mod swap;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::OpenOptions;

use crate::batch::{BatchHeader, BatchView};
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::limits::BATCH_BYTES_MAX;
use crate::partition::Partition;
use crate::records::decode_records;
use crate::segment::{note_batch_in, Segment, SegmentMeta};
use crate::segment_reader::{ScanItem, Scanner};
use crate::txn_index::AbortedTxnEntry;
use crate::types::{FilePos, Offset};

pub use filter::{EmptyBatch, FilterCounts, Filtered};
pub use key_map::KeyMap;
pub use swap::SwapStep;

/// The per-partition file holding the offset below which the log is clean.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Kafka's default `log.cleaner.dedupe.buffer.size` is 128 MiB for all cleaner threads; a shard
/// gets this share.
pub const KEY_MAP_BYTES_DEFAULT: usize = 32 * 1024 * 1024;

/// Bytes of cleaned output gathered before one write to the `.cleaned` file.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// The cleaner's read size. The cleaner shares the device with the shard's produce writes,
/// and each of its requests is one a produce write may queue behind: at about 1 GB/s a 1 MiB
/// read holds the device for a millisecond, a 256 KiB one for a quarter of that.
const READ_CHUNK_BYTES: usize = 256 * 1024;
const _: () = assert!(READ_CHUNK_BYTES >= 2 * crate::limits::BATCH_HEADER_BYTES);

/// Key-map slots freed between two chances to yield (768 KiB of the table).
const CLEAR_STEP_SLOTS: usize = 32 * 1024;

/// How long a round of a cleaner without a fixed I/O limit spreads its work over (see
/// [`CleanerOptions::backlog_pace`]).
pub const BACKLOG_PACE_DEFAULT: Duration = Duration::from_secs(60);

/// The slowest a paced cleaner goes, in bytes of I/O per second: a small backlog is still
/// cleaned within seconds.
pub const PACE_FLOOR_BYTES_PER_SEC: u64 = 8 << 20;

/// Settings of one shard's cleaner.
#[derive(Debug, Clone)]
pub struct CleanerOptions {
    /// Memory of the key map.
    pub key_map_bytes: usize,
    /// Kafka's `log.cleaner.io.max.bytes.per.second`: the most bytes the cleaner reads and
    /// writes per second together, as Kafka counts them (`None`: no cap). The cleaner shares
    /// the device with the request path; this keeps its I/O from queueing ahead of produce
    /// writes whatever the backlog.
    pub io_bytes_per_sec: Option<u64>,
    /// Paces the cleaner by its backlog: each round's I/O, estimated from the dirty and clean
    /// bytes of the logs it is about to clean, is spread over about this long (`None`: as fast
    /// as the device allows, which is Kafka's behaviour without an I/O limit). Cleaning is not
    /// latency-sensitive and produce writes are; a cleaner at full speed doubles the produce
    /// p99 of its shard on a shared device. The rate is the backlog over this time (at least
    /// [`PACE_FLOOR_BYTES_PER_SEC`]) and grows with the backlog without bound, so a busy
    /// compacted topic cannot outgrow its cleaner the way it can outgrow a fixed limit;
    /// `io_bytes_per_sec`, when set, caps it.
    pub backlog_pace: Option<Duration>,
    /// Fault injection (tests): stop a swap after this step as if the process died there.
    pub crash_at: Option<SwapStep>,
    /// While set, the cleaner does no work and issues no I/O between two batches (the I/O limit
    /// does not count the pause). The cleaner benchmark alternates it to measure produce latency
    /// with and without cleaning in the same minute, so that the device's drift over time does
    /// not decide the comparison.
    pub pause: Option<Rc<Cell<bool>>>,
}

impl Default for CleanerOptions {
    fn default() -> Self {
        CleanerOptions {
            key_map_bytes: KEY_MAP_BYTES_DEFAULT,
            crash_at: None,
            io_bytes_per_sec: None,
            backlog_pace: Some(BACKLOG_PACE_DEFAULT),
            pause: None,
        }
    }
}

/// What cleaning did (one pass, or summed over many).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerStats {
    pub passes: u64,
    /// Bytes read to build the key map.
    pub map_bytes_read: u64,
    /// Bytes of segments read to rewrite them.
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub segments_replaced: u64,
    pub segments_written: u64,
    /// Wall-clock time spent in passes, in microseconds.
    pub busy_us: u64,
}

impl CleanerStats {
    fn add(&mut self, o: &CleanerStats) {
        self.passes += o.passes;
        self.map_bytes_read += o.map_bytes_read;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.records_read += o.records_read;
        self.records_kept += o.records_kept;
        self.segments_replaced += o.segments_replaced;
        self.segments_written += o.segments_written;
        self.busy_us += o.busy_us;
    }
}

/// How dirty a partition's log is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dirtiness {
    /// The cleaner checkpoint (clamped to the log).
    pub first_dirty: Offset,
    /// The first offset the cleaner may not touch yet.
    pub first_uncleanable: Offset,
    /// Bytes of segments below `first_dirty`.
    pub clean_bytes: u64,
    /// Bytes of segments in `[first_dirty, first_uncleanable)`.
    pub dirty_bytes: u64,
    /// `max.compaction.lag.ms` has passed for the oldest dirty record.
    pub overdue: bool,
}

impl Dirtiness {
    /// The share of cleanable bytes that are dirty.
    pub fn ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }

    /// The I/O that cleaning the log as it is now takes, at most: building the key map reads
    /// the dirty bytes, and rewriting reads every closed segment below the dirty range's end
    /// and writes back at most as much.
    pub fn io_estimate(&self) -> u64 {
        self.dirty_bytes + 2 * (self.clean_bytes + self.dirty_bytes)
    }

    /// Whether the log is due for cleaning under `cfg`.
    pub fn due(&self, cfg: &LogConfig) -> bool {
        self.dirty_bytes > 0 && (self.overdue || self.ratio() >= cfg.min_cleanable_dirty_ratio)
    }
}

/// The partitions a cleaner gave up (Kafka's `uncleanable-partitions-count` and
/// `uncleanable-bytes`), as of its last round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uncleanable {
    /// Compacted partitions marked uncleanable.
    pub partitions: u64,
    /// Their dirty bytes, which stay uncleaned (their whole size when even that cannot be
    /// measured).
    pub bytes: u64,
}

impl Uncleanable {
    /// Counts `p`, an uncleanable partition.
    async fn add(&mut self, p: &Partition, now_ms: i64) {
        self.partitions += 1;
        self.bytes += match dirtiness(p, now_ms).await {
            Ok(d) => d.map_or(0, |d| d.dirty_bytes),
            Err(_) => p.size_bytes(),
        };
    }
}

/// One shard's cleaner: its key map (allocated once) and running totals. Owned by its shard.
pub struct Cleaner {
    map: KeyMap,
    opts: CleanerOptions,
    totals: CleanerStats,
    last_round_us: u64,
    uncleanable: Uncleanable,
    /// The I/O rate of the current (or last) round (`None`: unpaced).
    rate: Option<u64>,
}

/// The I/O rate of a cleaner facing `backlog` bytes of I/O: the backlog spread over `pace` (at
/// least [`PACE_FLOOR_BYTES_PER_SEC`]), capped by `cap` (`None`: unpaced).
pub fn io_rate(backlog: u64, pace: Option<Duration>, cap: Option<u64>) -> Option<u64> {
    let paced = pace.map(|h| {
        let per_sec = backlog as f64 / h.as_secs_f64().max(1e-3);
        (per_sec as u64).max(PACE_FLOOR_BYTES_PER_SEC)
    });
    match (paced, cap.filter(|c| *c > 0)) {
        (Some(p), Some(c)) => Some(p.min(c)),
        (p, c) => p.or(c),
    }
}

impl Cleaner {
    pub fn new(opts: CleanerOptions) -> Cleaner {
        Cleaner {
            map: KeyMap::with_budget(opts.key_map_bytes),
            opts,
            totals: CleanerStats::default(),
            last_round_us: 0,
            uncleanable: Uncleanable::default(),
            rate: None,
        }
    }

    /// The I/O rate (bytes read and written per second) of the current or last round; `None`
    /// when it was unpaced.
    pub fn io_rate(&self) -> Option<u64> {
        self.rate
    }

    /// The partitions given up, as of the last round.
    pub fn uncleanable(&self) -> Uncleanable {
        self.uncleanable
    }

    /// Everything cleaned since start.
    pub fn totals(&self) -> CleanerStats {
        self.totals
    }

    /// Duration of the last round that cleaned something, in microseconds.
    pub fn last_round_us(&self) -> u64 {
        self.last_round_us
    }

    /// One round over `parts`: the compacted logs that are due, dirtiest first (overdue ones
    /// before all others), each cleaned until its dirty range is consumed. A partition whose
    /// log cannot be measured or cleaned (an I/O error, a batch that does not parse) is marked
    /// uncleanable, logged once with the reason, and skipped by every later round, as Kafka's
    /// cleaner does: retrying would fail the same way every `log.cleaner.backoff.ms`, and the
    /// other partitions must go on being cleaned. A partition closed or poisoned meanwhile is
    /// not marked (it is gone, or its own failure is reported). Runs on the partitions' home
    /// shard.
    pub async fn run_round(&mut self, parts: &[Partition], now_ms: i64) -> CleanerStats {
        let mut due = Vec::new();
        let mut uncleanable = Uncleanable::default();
        for p in parts {
            let cfg = p.config();
            if !cfg.compacts() || p.poisoned().is_some() {
                continue;
            }
            if p.uncleanable().is_some() {
                uncleanable.add(p, now_ms).await;
                continue;
            }
            match dirtiness(p, now_ms).await {
                Ok(Some(d)) if d.due(&cfg) => due.push((d, p.clone())),
                Ok(_) => {}
                Err(e) => {
                    if give_up(p, "measuring the log", &e) {
                        uncleanable.add(p, now_ms).await;
                    }
                }
            }
        }
        due.sort_by(|(a, _), (b, _)| {
            b.overdue
                .cmp(&a.overdue)
                .then(b.ratio().total_cmp(&a.ratio()))
        });
        // One rate for the round, from everything it is about to clean.
        let backlog = due.iter().map(|(d, _)| d.io_estimate()).sum();
        self.rate = io_rate(backlog, self.opts.backlog_pace, self.opts.io_bytes_per_sec);
        let started = Instant::now();
        let mut round = CleanerStats::default();
        for (_, p) in due {
            // Measured again: the round's earlier partitions may have taken minutes.
            match self.clean_at_rate(&p, now_ms, None).await {
                Ok(s) => {
                    tracing::info!(tp = %p.topic_partition(), passes = s.passes, read = s.bytes_read, written = s.bytes_written, "log cleaned");
                    round.add(&s);
                }
                Err(e) => {
                    if give_up(&p, "cleaning", &e) {
                        uncleanable.add(&p, now_ms).await;
                    }
                }
            }
        }
        if round.passes > 0 {
            self.last_round_us = started.elapsed().as_micros() as u64;
        }
        self.uncleanable = uncleanable;
        round
    }

    /// Cleans `p` until its dirty range is consumed (several passes when the keys do not fit
    /// the map at once), paced by its own backlog as a round of `p` alone would be. Runs on the
    /// partition's home shard.
    pub async fn clean(&mut self, p: &Partition, now_ms: i64) -> Result<CleanerStats> {
        let d = dirtiness(p, now_ms).await?;
        let backlog = d.as_ref().map_or(0, Dirtiness::io_estimate);
        self.rate = io_rate(backlog, self.opts.backlog_pace, self.opts.io_bytes_per_sec);
        self.clean_at_rate(p, now_ms, d).await
    }

    /// [`Cleaner::clean`] at the rate already chosen. `first` is the log's dirtiness measured
    /// just before, if it was; every later pass measures it again.
    async fn clean_at_rate(
        &mut self,
        p: &Partition,
        now_ms: i64,
        first: Option<Dirtiness>,
    ) -> Result<CleanerStats> {
        let mut total = CleanerStats::default();
        let mut measured = first;
        loop {
            let d = match measured.take() {
                Some(d) => d,
                None => match dirtiness(p, now_ms).await? {
                    Some(d) => d,
                    None => break,
                },
            };
            if d.dirty_bytes == 0 || d.first_dirty >= d.first_uncleanable {
                break;
            }
            let (end, s) = self.pass(p, &d, now_ms).await?;
            total.add(&s);
            self.totals.add(&s);
            if end <= d.first_dirty {
                break;
            }
        }
        Ok(total)
    }

    /// One pass: map the dirty range from `d.first_dirty` as far as the map holds, rewrite
    /// every closed segment below that end, move the checkpoint. Returns the end.
    async fn pass(
        &mut self,
        p: &Partition,
        d: &Dirtiness,
        now_ms: i64,
    ) -> Result<(Offset, CleanerStats)> {
        let started = Instant::now();
        let cfg = p.config();
        let mut stats = CleanerStats {
            passes: 1,
            ..CleanerStats::default()
        };
        self.clear_map().await;
        let truncations = p.truncations();
        let aborted = p.aborted_entries(None);
        let end = self.build_map(p, d, &aborted, &mut stats).await?;
        if end <= d.first_dirty {
            return Err(Error::InvalidConfig {
                name: "log.cleaner.dedupe.buffer.size",
                value: self.opts.key_map_bytes.to_string(),
                reason: format!(
                    "{}: the key map cannot hold even one batch at offset {}",
                    p.topic_partition(),
                    d.first_dirty
                ),
            });
        }
        let producers: HashMap<i64, Offset> = p
            .producer_states()
            .into_iter()
            .filter_map(|(id, e)| e.batches().last().map(|b| (id, b.last_offset)))
            .collect();
        let mut rules = Rules {
            end,
            now_ms,
            delete_retention_ms: cfg.delete_retention_ms,
            producers,
            aborted,
            max_out: BATCH_BYTES_MAX,
            committed_open: HashSet::new(),
            aborted_open: HashSet::new(),
        };
        let segs: Vec<Rc<Segment>> = p
            .closed_segments()
            .into_iter()
            .filter(|s| s.base() < end)
            .collect();
        for group in group_segments(&segs, cfg.segment_bytes) {
            self.clean_group(p, &cfg, &group, &mut rules, &mut stats)
                .await?;
        }
        store_checkpoint(p, end, truncations).await?;
        stats.busy_us = started.elapsed().as_micros() as u64;
        Ok((end, stats))
    }

    /// Empties the key map between passes, a slice of slots at a time: rewriting the whole
    /// table at once would hold the shard for milliseconds.
    async fn clear_map(&mut self) {
        let mut pacer = Pacer::new(None, self.opts.pause.clone());
        let mut at = Some(0);
        while let Some(from) = at {
            at = self.map.clear_from(from, CLEAR_STEP_SLOTS);
            pacer.pace(0).await;
        }
    }

    /// Puts the keys of the dirty range into the map, batch by batch, until the range ends or
    /// the next batch may not fit. Returns the offset where the mapped range ends.
    async fn build_map(
        &mut self,
        p: &Partition,
        d: &Dirtiness,
        aborted: &[AbortedTxnEntry],
        stats: &mut CleanerStats,
    ) -> Result<Offset> {
        let interval = p.config().index_interval_bytes;
        let mut end = d.first_dirty;
        let mut pacer = Pacer::new(self.rate, self.opts.pause.clone());
        for seg in p.closed_segments() {
            if seg.next_offset() <= d.first_dirty {
                continue;
            }
            if seg.base() >= d.first_uncleanable {
                break;
            }
            seg.ensure_indexes(interval).await?;
            let mut scan = Scanner::new(seg.file(), 0, seg.readable(), READ_CHUNK_BYTES);
            loop {
                let (pos, bytes) = match scan.next(true).await? {
                    ScanItem::Batch { pos, bytes, .. } => (pos, bytes),
                    ScanItem::End => break,
                    ScanItem::Defect { pos, what } => return Err(corrupt(&seg, pos, what)),
                };
                pacer.pace(bytes.len()).await;
                let v = read_back(&bytes, &seg, pos)?;
                if v.last_offset() < d.first_dirty {
                    continue;
                }
                if v.base_offset() >= d.first_uncleanable {
                    return Ok(end);
                }
                if v.record_count() as usize > self.map.room() {
                    return Ok(end);
                }
                stats.map_bytes_read += v.total_len() as u64;
                if !v.is_control() && !is_aborted(&v, aborted) {
                    let decoded = decode_records(
                        v.attributes(),
                        v.records(),
                        v.record_count(),
                        BATCH_BYTES_MAX,
                    )
                    .map_err(|e| corrupt(&seg, pos, &e.to_string()))?;
                    for r in decoded.iter() {
                        let r = r.map_err(|e| corrupt(&seg, pos, &e.to_string()))?;
                        let offset = v.base_offset().plus(i64::from(r.offset_delta));
                        if let (Some(key), true) = (r.key, offset >= d.first_dirty) {
                            self.map.put(key, offset);
                        }
                    }
                }
                end = v.next_offset();
            }
            // The whole segment is mapped: the range reaches the next segment's base.
            end = end.max(seg.next_offset().min(d.first_uncleanable));
        }
        Ok(end)
    }

    /// Rewrites one group of consecutive closed segments into one new segment and swaps it in.
    async fn clean_group(
        &mut self,
        p: &Partition,
        cfg: &LogConfig,
        group: &[Rc<Segment>],
        rules: &mut Rules,
        stats: &mut CleanerStats,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(());
        };
        let dir = p.dir().to_path_buf();
        let base = first.base();
        let path = swap::cleaned_log_path(&dir, base);
        let mut meta = SegmentMeta {
            next_offset: base,
            index: Some(OffsetIndex::default()),
            time_index: Some(TimeIndex::default()),
            ..SegmentMeta::default()
        };
        let mut counts = FilterCounts::default();
        let written = match self
            .write_cleaned(&path, cfg, group, rules, &mut meta, &mut counts, stats)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                let path = path.clone();
                let _ = swap::off_shard(move || std::fs::remove_file(path)).await;
                return Err(e);
            }
        };
        stats.records_read += counts.records_read;
        stats.records_kept += counts.records_kept;
        let bases: Vec<Offset> = group.iter().map(|s| s.base()).collect();
        let txn_entries = p.aborted_entries(Some(&bases));
        if !txn_entries.is_empty() {
            let txn_path = swap::cleaned_txn_index_path(&dir, base);
            let encoded = crate::txn_index::TxnIndex::encode_entries(&txn_entries);
            swap::off_shard(move || write_synced(&txn_path, &encoded)).await?;
        }
        let file = p
            .io_backend()
            .open(&path, false)
            .await
            .map_err(|e| Error::io("open cleaned segment", &path, e))?;
        meta.size = written;
        meta.readable = written;
        meta.next_offset = last.next_offset();
        meta.bytes_since_index = u64::from(cfg.index_interval_bytes);
        let new = Rc::new(Segment::with_file(&dir, base, file, meta));
        let commit = swap::commit_off_shard(dir.clone(), bases, self.opts.crash_at);
        let swapped = p
            .replace_segments(group, new.clone(), txn_entries, commit)
            .await?;
        if !swapped {
            let txn_path = swap::cleaned_txn_index_path(&dir, base);
            swap::off_shard(move || {
                let _ = std::fs::remove_file(path);
                let _ = std::fs::remove_file(txn_path);
            })
            .await;
            return Ok(());
        }
        stats.bytes_written += written;
        stats.segments_replaced += group.len() as u64;
        stats.segments_written += 1;
        Ok(())
    }

    /// Writes the retained batches of `group` to `path` and syncs it; returns its length.
    #[allow(clippy::too_many_arguments)]
    async fn write_cleaned(
        &self,
        path: &Path,
        cfg: &LogConfig,
        group: &[Rc<Segment>],
        rules: &mut Rules,
        meta: &mut SegmentMeta,
        counts: &mut FilterCounts,
        stats: &mut CleanerStats,
    ) -> Result<u64> {
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(path)
            .await
            .map_err(|e| Error::io("create cleaned segment", path, e.into()))?;
        let base = meta.next_offset;
        let mut written = 0u64;
        let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK_BYTES);
        let mut pacer = Pacer::new(self.rate, self.opts.pause.clone());
        for seg in group {
            seg.ensure_indexes(cfg.index_interval_bytes).await?;
            let mut scan = Scanner::new(seg.file(), 0, seg.readable(), READ_CHUNK_BYTES);
            loop {
                let (pos, bytes) = match scan.next(true).await? {
                    ScanItem::Batch { pos, bytes, .. } => (pos, bytes),
                    ScanItem::End => break,
                    ScanItem::Defect { pos, what } => return Err(corrupt(seg, pos, what)),
                };
                pacer.pace(bytes.len()).await;
                let v = read_back(&bytes, seg, pos)?;
                stats.bytes_read += v.total_len() as u64;
                let kept = rules.filter(&v, &self.map, counts).map_err(|e| match e {
                    Error::CorruptLog { detail, .. } => corrupt(seg, pos, &detail),
                    other => other,
                })?;
                let out_bytes: &[u8] = match &kept {
                    Filtered::Unchanged => v.as_bytes(),
                    Filtered::Rewritten(b) => b,
                    Filtered::Dropped => continue,
                };
                // Checked right before it is written: the new batch must read back as valid.
                let nv = BatchView::parse(out_bytes, 0).map_err(|e| corrupt_err(seg, pos, &e))?;
                nv.validate_stored(0, BATCH_BYTES_MAX)?;
                let h = BatchHeader::read(out_bytes)
                    .ok_or_else(|| corrupt(seg, pos, "cleaned batch without a header"))?;
                let at = FilePos(written + pending.len() as u64);
                note_batch_in(meta, base, at, &h, cfg.index_interval_bytes);
                pending.extend_from_slice(out_bytes);
                if pending.len() >= WRITE_CHUNK_BYTES {
                    let n = flush(&out, path, &mut pending, written).await?;
                    write_back(&out, path, written, n as usize).await?;
                    written += n;
                    pacer.pace(n as usize).await;
                }
            }
        }
        written += flush(&out, path, &mut pending, written).await?;
        out.fdatasync()
            .await
            .map_err(|e| Error::io("sync cleaned segment", path, e.into()))?;
        out.close()
            .await
            .map_err(|e| Error::io("close cleaned segment", path, e.into()))?;
        Ok(written)
    }
}

/// Marks `p` uncleanable after `e` failed `what`, logging the reason once; returns whether it
/// is marked. A closed or poisoned partition is not: a deletion may have closed it under the
/// cleaner, and a poisoned one reported its own failure and takes no more cleaning anyway.
fn give_up(p: &Partition, what: &str, e: &Error) -> bool {
    if let Some(state) = p.poisoned() {
        tracing::warn!(tp = %p.topic_partition(), error = %e, %state, "cleaning stopped: the partition is closed or poisoned");
        return false;
    }
    // Corruption found by the cleaner takes only the cleaning offline, not the partition.
    let error = match e {
        Error::CorruptLog {
            segment,
            pos,
            detail,
        } => format!(
            "corrupt log {} at position {pos}: {detail}",
            segment.display()
        ),
        other => other.to_string(),
    };
    if p.mark_uncleanable(format!("{what}: {error}")) {
        tracing::error!(
            tp = %p.topic_partition(),
            %error,
            "log cleaner failed {what}; the partition is marked uncleanable and skipped until \
             the broker restarts or the topic is re-created (reads and appends go on)"
        );
    }
    true
}

/// CPU time the cleaner works between two yields of its task queue.
const CLEANER_SLICE: Duration = Duration::from_micros(200);

/// Makes the cleaner give its shard's CPU up every [`CLEANER_SLICE`] of work: it shares the
/// shard with the request path, and glommio's own preemption slice (100 ms) would let a pass
/// hold produce and fetch requests that long. Yielding the task queue lets every other queue
/// with work run first; with none, the cleaner resumes at once. With a rate (the round's pace
/// or the I/O limit) it also sleeps whenever the bytes read and written so far are ahead of it.
struct Pacer {
    since: Instant,
    started: Instant,
    bytes: u64,
    limit: Option<u64>,
    pause: Option<Rc<Cell<bool>>>,
}

impl Pacer {
    fn new(limit: Option<u64>, pause: Option<Rc<Cell<bool>>>) -> Pacer {
        let now = Instant::now();
        Pacer {
            since: now,
            started: now,
            bytes: 0,
            limit: limit.filter(|l| *l > 0),
            pause,
        }
    }

    async fn pace(&mut self, read: usize) {
        if let Some(pause) = &self.pause {
            let paused = Instant::now();
            while pause.get() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            // The pause is not time the limit allows I/O for.
            self.started += paused.elapsed();
        }
        self.bytes += read as u64;
        if let Some(limit) = self.limit {
            let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
            let spent = self.started.elapsed();
            if due > spent + CLEANER_SLICE {
                glommio::timer::sleep(due - spent).await;
                self.since = Instant::now();
                return;
            }
        }
        if self.since.elapsed() >= CLEANER_SLICE {
            glommio::executor().yield_task_queue_now().await;
            self.since = Instant::now();
        }
    }
}

/// Writes `pending` at `at` and empties it; returns the bytes written.
async fn flush(
    out: &glommio::io::BufferedFile,
    path: &Path,
    pending: &mut Vec<u8>,
    at: u64,
) -> Result<u64> {
    if pending.is_empty() {
        return Ok(0);
    }
    let chunk = std::mem::replace(pending, Vec::with_capacity(WRITE_CHUNK_BYTES));
    let n = chunk.len();
    let wrote = out
        .write_at(chunk, at)
        .await
        .map_err(|e| Error::io("write cleaned segment", path, e.into()))?;
    if wrote != n {
        return Err(Error::io(
            "write cleaned segment",
            path,
            std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
        ));
    }
    Ok(n as u64)
}

/// Writes a chunk of the cleaned segment back to the device now and waits for it
/// (`sync_file_range`, on the blocking thread), instead of leaving it dirty in the page cache.
/// Left dirty, a whole cleaned segment (up to `segment.bytes`) went out in one burst at the
/// final fdatasync, or whenever the kernel's flusher chose, and every produce write of the
/// shard queued behind tens of megabytes. Chunk by chunk, the device sees the cleaner's writes
/// at the pace of its I/O limit. Durability still comes from the fdatasync before the swap
/// (sync_file_range writes no metadata and flushes no device cache), which also writes the
/// last chunk.
async fn write_back(out: &glommio::io::BufferedFile, path: &Path, at: u64, n: usize) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = out.as_raw_fd();
    let (Ok(offset), Ok(len)) = (i64::try_from(at), i64::try_from(n)) else {
        return Ok(());
    };
    // `out` stays open until this returns, so the descriptor is valid on the other thread.
    let rc = swap::off_shard(move || {
        // SAFETY: sync_file_range on an open descriptor; it touches no memory of ours.
        let rc = unsafe {
            libc::sync_file_range(
                fd,
                offset,
                len,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        (rc == 0)
            .then_some(())
            .ok_or_else(std::io::Error::last_os_error)
    })
    .await;
    rc.map_err(|e| Error::io("write back cleaned segment", path, e))
}

/// The retention rules of one pass.
struct Rules {
    /// End of the mapped range: records at or past it are kept as they are.
    end: Offset,
    now_ms: i64,
    delete_retention_ms: i64,
    /// Last offset of the last batch of every producer the partition knows.
    producers: HashMap<i64, Offset>,
    /// The partition's aborted transactions.
    aborted: Vec<AbortedTxnEntry>,
    max_out: usize,
    /// Producers with a committed transaction whose data batches this pass has passed and
    /// whose commit marker it has not reached yet.
    committed_open: HashSet<i64>,
    /// The same for aborted transactions.
    aborted_open: HashSet<i64>,
}

impl Rules {
    fn filter(
        &mut self,
        v: &BatchView<'_>,
        map: &KeyMap,
        counts: &mut FilterCounts,
    ) -> Result<Filtered> {
        if v.base_offset() >= self.end {
            return Ok(Filtered::Unchanged);
        }
        // Kafka keeps, even empty, the batch holding an active producer's last sequence (so the
        // producer's next batch is not out of sequence) and the last batch of the cleaned
        // range (so the range's last offset stays visible).
        let pid = v.producer_id();
        let keep_empty = (pid >= 0 && self.producers.get(&pid) == Some(&v.last_offset()))
            || v.next_offset() == self.end;
        let empty = if keep_empty {
            EmptyBatch::Keep
        } else {
            EmptyBatch::Drop
        };
        if v.is_control() {
            // A marker stays while records of its transaction may remain before it; it is
            // dropped once its delete horizon passed (the horizon is set on its first clean).
            return self.filter_marker(v, empty, counts);
        }
        if v.is_transactional() && is_aborted(v, &self.aborted) {
            self.aborted_open.insert(pid);
            return filter::filter_batch(
                v,
                self.now_ms,
                self.delete_retention_ms,
                false,
                empty,
                self.max_out,
                counts,
                |_, _| false,
            );
        }
        if v.is_transactional() {
            self.committed_open.insert(pid);
        }
        filter::filter_batch(
            v,
            self.now_ms,
            self.delete_retention_ms,
            false,
            empty,
            self.max_out,
            counts,
            |r, horizon_passed| {
                if r.offset >= self.end {
                    return true;
                }
                let Some(key) = r.key else {
                    return false;
                };
                if map.get(key).is_some_and(|latest| latest > r.offset) {
                    return false;
                }
                !(r.is_tombstone && horizon_passed)
            },
        )
    }

    /// Transaction markers, as Kafka's cleaner treats them: a marker stays while any data
    /// batch of its transaction is still in the log (this pass met one before reaching the
    /// marker: a commit marker's batches are ordinary data until compaction empties them, an
    /// abort marker's batches are removed by the pass that meets them). A marker with no
    /// batch left gets a delete horizon (`now + delete.retention.ms`) and goes in a pass after
    /// the horizon. Consumers and the coordinators' log replays thus never see a
    /// transaction's records without its marker.
    fn filter_marker(
        &mut self,
        v: &BatchView<'_>,
        empty: EmptyBatch,
        counts: &mut FilterCounts,
    ) -> Result<Filtered> {
        let pid = v.producer_id();
        let committed = marker_type(v, self.max_out)?;
        let batches_left = match committed {
            Some(true) => self.committed_open.remove(&pid),
            Some(false) => self.aborted_open.remove(&pid),
            // An emptied marker (kept only for its producer's state) holds no record.
            None => false,
        };
        if batches_left {
            counts.records_read += v.record_count().max(0) as u64;
            counts.records_kept += v.record_count().max(0) as u64;
            return Ok(Filtered::Unchanged);
        }
        let passed = v.has_delete_horizon() && v.base_timestamp() <= self.now_ms;
        filter::filter_batch(
            v,
            self.now_ms,
            self.delete_retention_ms,
            true,
            empty,
            self.max_out,
            counts,
            |_, _| !passed,
        )
    }
}

/// Whether a control batch is a commit (`Some(true)`) or abort (`Some(false)`) marker; `None`
/// when it holds no record.
fn marker_type(v: &BatchView<'_>, max_out: usize) -> Result<Option<bool>> {
    let decoded =
        decode_records(v.attributes(), v.records(), v.record_count(), max_out).map_err(|e| {
            Error::CorruptLog {
                segment: std::path::PathBuf::new(),
                pos: FilePos(0),
                detail: format!("transaction marker at {}: {e}", v.base_offset()),
            }
        })?;
    let first = decoded.iter().next().and_then(|r| r.ok());
    Ok(first.and_then(|r| r.key).and_then(|k| {
        // Key: version int16, type int16 (0 abort, 1 commit).
        (k.len() >= 4).then(|| i16::from_be_bytes([k[2], k[3]]) == 1)
    }))
}

/// Whether `v` is a data batch of an aborted transaction.
fn is_aborted(v: &BatchView<'_>, aborted: &[AbortedTxnEntry]) -> bool {
    v.is_transactional()
        && !v.is_control()
        && aborted.iter().any(|e| {
            e.producer_id == v.producer_id()
                && e.first_offset <= v.base_offset()
                && v.last_offset() < e.last_offset
        })
}

/// Consecutive segments grouped so that each group's bytes stay within `max_bytes` and its
/// offsets within what a segment's relative offsets can express.
fn group_segments(segs: &[Rc<Segment>], max_bytes: u64) -> Vec<Vec<Rc<Segment>>> {
    let mut groups: Vec<Vec<Rc<Segment>>> = Vec::new();
    let mut size = 0u64;
    for s in segs {
        let fits = groups.last().is_some_and(|g| {
            let base = g[0].base();
            size + s.size() <= max_bytes && s.next_offset().0 - base.0 <= i64::from(i32::MAX)
        });
        if fits {
            size += s.size();
            if let Some(g) = groups.last_mut() {
                g.push(s.clone());
            }
        } else {
            size = s.size();
            groups.push(vec![s.clone()]);
        }
    }
    groups
}

/// Measures `p`: its clean and dirty bytes and where cleaning must stop. `None` when the log
/// has no closed segment.
pub async fn dirtiness(p: &Partition, now_ms: i64) -> Result<Option<Dirtiness>> {
    let cfg = p.config();
    let segs = p.closed_segments();
    let Some(last) = segs.last() else {
        return Ok(None);
    };
    let log_start = p.log_start_offset();
    let first_dirty = read_checkpoint(p.dir())?
        .unwrap_or(Offset(0))
        .max(log_start)
        .max(segs[0].base());
    let mut first_uncleanable = last.next_offset().min(p.last_stable_offset());
    if cfg.min_compaction_lag_ms > 0 {
        for s in &segs {
            if s.next_offset() <= first_dirty {
                continue;
            }
            s.ensure_indexes(cfg.index_interval_bytes).await?;
            let newest = s.meta.borrow().max_timestamp.map(|(t, _)| t);
            if newest.is_some_and(|t| t > now_ms.saturating_sub(cfg.min_compaction_lag_ms)) {
                first_uncleanable = first_uncleanable.min(s.base());
                break;
            }
        }
    }
    let mut clean_bytes = 0u64;
    let mut dirty_bytes = 0u64;
    let mut first_dirty_seg = None;
    for s in &segs {
        if s.next_offset() <= first_dirty {
            clean_bytes += s.size();
        } else if s.base() < first_uncleanable {
            dirty_bytes += s.size();
            first_dirty_seg.get_or_insert_with(|| s.clone());
        }
    }
    let mut overdue = false;
    if let (Some(s), true) = (first_dirty_seg, cfg.max_compaction_lag_ms < i64::MAX) {
        let mut scan = Scanner::new(s.file(), 0, s.readable(), 4096);
        if let ScanItem::Batch { header, .. } = scan.next(false).await? {
            overdue = header.max_timestamp >= 0
                && now_ms.saturating_sub(header.max_timestamp) > cfg.max_compaction_lag_ms;
        }
    }
    Ok(Some(Dirtiness {
        first_dirty,
        first_uncleanable,
        clean_bytes,
        dirty_bytes,
        overdue,
    }))
}

/// The cleaner checkpoint of the partition in `dir`, if any.
pub fn read_checkpoint(dir: &Path) -> Result<Option<Offset>> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<i64>()
            .map(|v| Some(Offset(v)))
            .map_err(|e| Error::CorruptLog {
                segment: path,
                pos: FilePos(0),
                detail: format!("bad cleaner checkpoint: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read cleaner checkpoint", path, e)),
    }
}

/// Moves the cleaner checkpoint of the partition in `dir` down to `end` if it is past it (the
/// log is being truncated to `end`: what is appended there again has not been cleaned).
pub(crate) fn clamp_checkpoint(dir: &Path, end: Offset) -> Result<()> {
    match read_checkpoint(dir)? {
        Some(c) if c > end => write_checkpoint(dir, end),
        _ => Ok(()),
    }
}

/// Moves the cleaner checkpoint to `end` after a pass, without blocking the shard: the new
/// value is written and synced to a file of its own off the shard, renamed into place in the
/// partition's append order (a partition closed meanwhile, deleted perhaps, gets nothing written
/// into its directory), and the directory synced. When the log was truncated since the pass
/// began (`truncations` then), the checkpoint stays: what was appended again below `end` has not
/// been cleaned, and the truncation already moved the checkpoint down
/// ([`clamp_checkpoint`]). A lost update only makes the next pass map again what is already
/// clean.
async fn store_checkpoint(p: &Partition, end: Offset, truncations: u64) -> Result<()> {
    let dir = p.dir().to_path_buf();
    let tmp = dir.join(format!("{CLEANER_CHECKPOINT_FILE}.pass.tmp"));
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let (t, bytes) = (tmp.clone(), format!("{}\n", end.0));
    swap::off_shard(move || write_synced(&t, bytes.as_bytes())).await?;
    let moved = p
        .in_append_turn(async {
            if p.truncations() != truncations {
                return Ok(false);
            }
            swap::off_shard(move || {
                std::fs::rename(&tmp, &path)
                    .map_err(|e| Error::io("rename cleaner checkpoint", &path, e))
            })
            .await?;
            Ok(true)
        })
        .await?;
    if !moved {
        tracing::info!(tp = %p.topic_partition(), %end, "log truncated during cleaning; the cleaner checkpoint stays");
        return Ok(());
    }
    swap::off_shard(move || swap::sync_dir(&dir)).await
}

/// Writes the cleaner checkpoint durably (blocking; for truncation, which runs in the append
/// turn). A lost update only makes the next pass map again what is already clean.
fn write_checkpoint(dir: &Path, offset: Offset) -> Result<()> {
    let tmp = dir.join(format!("{CLEANER_CHECKPOINT_FILE}.tmp"));
    write_synced(&tmp, format!("{}\n", offset.0).as_bytes())?;
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename cleaner checkpoint", &path, e))?;
    swap::sync_dir(dir)
}

/// Creates `path` with `bytes` and syncs it (small files: a checkpoint, an index).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io("create file", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write file", path, e))
}

/// A batch the cleaner read from `seg` at `pos`, checked (length, magic, CRC-32C, records)
/// right after the read: a batch damaged on disk must stop the cleaning, never be rewritten
/// into a new batch with a fresh, valid CRC.
fn read_back<'a>(bytes: &'a [u8], seg: &Segment, pos: FilePos) -> Result<BatchView<'a>> {
    let v = BatchView::parse(bytes, 0).map_err(|e| corrupt_err(seg, pos, &e))?;
    v.validate_stored(0, BATCH_BYTES_MAX)
        .map_err(|e| corrupt_err(seg, pos, &e))?;
    Ok(v)
}

fn corrupt(seg: &Segment, pos: FilePos, what: &str) -> Error {
    Error::CorruptLog {
        segment: seg.log_path(),
        pos,
        detail: format!("cleaner: {what}"),
    }
}

fn corrupt_err(seg: &Segment, pos: FilePos, e: &Error) -> Error {
    corrupt(seg, pos, &e.to_string())
}
