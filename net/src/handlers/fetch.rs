//! Fetch (key 1): reads record batches from partitions, with long polling and fetch sessions.
//!
//! The handler runs on the connection's shard:
//! 1. It resolves the request's session fields ([`crate::fetch_sessions`]) into the list of
//!    partitions to read (the request's own for a full fetch, the session's for an incremental).
//! 2. It reads them with one mesh call per home shard (the shards read concurrently), each
//!    partition from its fetch offset up to its `partition_max_bytes`, then trims the results in
//!    request order to the request's `max_bytes` at batch boundaries, always keeping the first
//!    batch found (KIP-74) so a record larger than every limit can still be consumed.
//! 3. With fewer than `min_bytes` found, no error, and time left before `max_wait_ms`, it sends
//!    one wait job to each home shard ([`crate::notify`]), sleeps until the first of them says
//!    an append arrived (or the deadline passes, or the broker starts to shut down), and reads
//!    again. Nothing busy-polls.
//!
//! Record data is never copied (see ARCHITECTURE.md, "Zero-copy fetch"): the home shard
//! reads a partition with `Partition::read_for_send`, which gives the batch cache's buffers for
//! hot data and a range of the segment file for data on disk, with the positions where batches
//! end. Trimming to the limits cuts at those positions without looking at the bytes, the
//! pieces become the response's records as they are, and the connection writes the buffers
//! with one vectored send and splices the file ranges to the socket.
//!
//! Isolation: a `read_committed` fetch (isolation level 1) reads only below the partition's
//! last stable offset (LSO) and gets the aborted transactions that overlap the data it was
//! given (from its fetch offset to an offset at or past the end of that data, as Kafka bounds
//! the search), so its client drops their records; while it long-polls it waits for the LSO,
//! not the high watermark, to pass its offset. Both isolation levels are told the LSO.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::error::Error as EngineError;
use sluice_engine::partition::SendPiece;
use sluice_engine::txn_index::AbortedTxn;
use sluice_engine::types::{Offset, ShardId, TopicPartition};
use sluice_protocol::messages::fetch_request::FetchRequest;
use sluice_protocol::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::{FileRange, Records, RecordsPiece, Uuid};

use crate::broker::BrokerCtx;
use crate::cluster::Slot;
use crate::errors;
use crate::fetch_sessions::{PartKey, PartWant, Reported, Resolved, TopicRef};
use crate::topics::TopicsSnapshot;

/// Versions served. v0–v3 can only return the pre-v2 message formats to their clients, which
/// Kafka 4 no longer serves either; every current client fetches with v4+.
pub const VERSIONS: (i16, i16) = (4, 17);

/// Longest a fetch waits, whatever it asks: a bound on how long a waiter can be registered.
const FETCH_WAIT_MS_MAX: i32 = 60_000;

/// The `isolation_level` of a fetch that reads committed data only.
const READ_COMMITTED: i8 = 1;

/// One partition to read, resolved against the topics snapshot.
#[derive(Debug, Clone)]
struct Target {
    key: PartKey,
    want: PartWant,
    /// The partition, if the topic and partition exist; otherwise `error` says why not.
    tp: Option<TopicPartition>,
    home: Option<ShardId>,
    error: i16,
}

/// What reading one partition produced, sent back from its home shard.
#[derive(Debug, Clone, Default)]
pub struct PartRead {
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// The aborted transactions overlapping the data (`read_committed` reads only).
    pub aborted: Vec<AbortedTxn>,
    /// The records, in order: cached buffers and segment file ranges.
    pub pieces: Vec<RecordsPiece>,
    /// Positions in the concatenated pieces where a batch ends, ascending; the last is the
    /// total length (see `SendRead::batch_ends`).
    pub batch_ends: Vec<u64>,
}

impl PartRead {
    fn error(code: i16) -> PartRead {
        PartRead {
            error_code: code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted: Vec::new(),
            pieces: Vec::new(),
            batch_ends: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.batch_ends.last().map_or(0, |&e| e as usize)
    }

    /// Keeps the longest prefix of whole batches that fits in `limit` bytes, cutting at a known
    /// batch end; slicing a buffer or a file range copies nothing.
    fn trim_to(&mut self, limit: usize) {
        let cut = self
            .batch_ends
            .iter()
            .copied()
            .take_while(|&e| e <= limit as u64)
            .last()
            .unwrap_or(0);
        if cut as usize == self.len() {
            return;
        }
        self.batch_ends.retain(|&e| e <= cut);
        let mut left = cut;
        let mut kept = Vec::with_capacity(self.pieces.len());
        for piece in std::mem::take(&mut self.pieces) {
            if left == 0 {
                break;
            }
            let len = piece.len() as u64;
            if len <= left {
                left -= len;
                kept.push(piece);
                continue;
            }
            kept.push(match piece {
                RecordsPiece::Bytes(b) => RecordsPiece::Bytes(b.slice(..left as usize)),
                RecordsPiece::File(f) => RecordsPiece::File(f.prefix(left)),
            });
            left = 0;
        }
        self.pieces = kept;
    }
}

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: FetchRequest,
) -> FetchResponse {
    let version = header.request_api_version;
    let by_id = version >= 13;
    let now = Instant::now();
    let requested: Vec<(PartKey, PartWant)> = request
        .topics
        .iter()
        .flat_map(|t| {
            let topic = topic_ref(by_id, &t.topic, t.topic_id);
            t.partitions.iter().map(move |p| {
                (
                    PartKey {
                        topic: topic.clone(),
                        partition: p.partition,
                    },
                    PartWant {
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes,
                        current_leader_epoch: if version >= 9 {
                            p.current_leader_epoch
                        } else {
                            -1
                        },
                    },
                )
            })
        })
        .collect();
    let forgotten: Vec<PartKey> = request
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let topic = topic_ref(by_id, &t.topic, t.topic_id);
            t.partitions.iter().map(move |&partition| PartKey {
                topic: topic.clone(),
                partition,
            })
        })
        .collect();

    // Sessions exist from v7; older requests are always sessionless full fetches.
    let resolved = if version >= 7 {
        ctx.state().fetch_sessions.resolve(
            request.session_id,
            request.session_epoch,
            &requested,
            &forgotten,
            now,
        )
    } else {
        Resolved::Sessionless
    };
    let (session_id, incremental, wanted) = match resolved {
        Resolved::Sessionless => (0, false, requested),
        Resolved::Created { id } => (id, false, requested),
        Resolved::Incremental { id, parts } => (id, true, parts),
        Resolved::Error(code) => {
            return FetchResponse {
                error_code: code,
                session_id: 0,
                ..FetchResponse::default()
            }
        }
    };

    let snapshot = ctx.state().cluster.topics();
    let targets: Vec<Target> = wanted
        .into_iter()
        .map(|(key, want)| resolve_target(&snapshot, key, want))
        .collect();

    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = now + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if version >= 3 {
        request.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    let committed = request.isolation_level == READ_COMMITTED;
    let reads = loop {
        let reads = read_all(ctx, &targets, max_bytes, committed).await;
        let bytes: usize = reads.iter().map(PartRead::len).sum();
        let any_error = reads.iter().any(|r| r.error_code != errors::NONE);
        if bytes >= min_bytes || any_error || Instant::now() >= deadline {
            break reads;
        }
        let _parked = ctx.state().metrics.fetch_parked();
        wait_for_appends(ctx, &targets, deadline, committed).await;
        if Instant::now() >= deadline || ctx.state().shutdown.is_triggered() {
            // One last read: the wait may have ended because of an append just before the
            // deadline (or the shutdown), and the client should get it.
            break read_all(ctx, &targets, max_bytes, committed).await;
        }
    };

    let sessions = &ctx.state().fetch_sessions;
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    for (target, read) in targets.into_iter().zip(reads) {
        let has_records = !read.pieces.is_empty();
        let report = if session_id != 0 {
            sessions.should_report(
                session_id,
                &target.key,
                Reported {
                    high_watermark: read.high_watermark,
                    last_stable_offset: read.last_stable_offset,
                    log_start_offset: read.log_start_offset,
                },
                has_records,
                read.error_code,
            )
        } else {
            true
        };
        if incremental && !report {
            continue;
        }
        let partition = PartitionData {
            partition_index: target.key.partition,
            error_code: read.error_code,
            high_watermark: read.high_watermark,
            last_stable_offset: read.last_stable_offset,
            log_start_offset: read.log_start_offset,
            // Kafka sends null for read_uncommitted and a list (maybe empty) for read_committed.
            aborted_transactions: committed.then(|| {
                read.aborted
                    .iter()
                    .map(|a| AbortedTransaction {
                        producer_id: a.producer_id,
                        first_offset: a.first_offset.0,
                        ..AbortedTransaction::default()
                    })
                    .collect()
            }),
            preferred_read_replica: -1,
            records: Some(Records::from_pieces(read.pieces)),
            ..PartitionData::default()
        };
        let same_topic = responses
            .last()
            .is_some_and(|t| response_topic_matches(t, &target.key.topic, by_id, &snapshot));
        if !same_topic {
            let (name, id) = response_topic(&target.key.topic, &snapshot);
            responses.push(FetchableTopicResponse {
                topic: if by_id { String::new() } else { name },
                topic_id: if by_id { id } else { Uuid::default() },
                partitions: Vec::new(),
                ..FetchableTopicResponse::default()
            });
        }
        if let Some(t) = responses.last_mut() {
            t.partitions.push(partition);
        }
    }
    FetchResponse {
        error_code: errors::NONE,
        session_id,
        responses,
        ..FetchResponse::default()
    }
}

fn topic_ref(by_id: bool, name: &str, id: Uuid) -> TopicRef {
    if by_id {
        TopicRef::Id(id)
    } else {
        TopicRef::Name(Arc::from(name))
    }
}

/// The name and id a response uses for a topic reference.
fn response_topic(topic: &TopicRef, snapshot: &TopicsSnapshot) -> (String, Uuid) {
    match topic {
        TopicRef::Name(name) => (
            name.to_string(),
            snapshot.topic(name).map_or(Uuid::default(), |m| m.id),
        ),
        TopicRef::Id(id) => (
            snapshot
                .topic_by_id(id)
                .map_or(String::new(), |m| m.name.to_string()),
            *id,
        ),
    }
}

fn response_topic_matches(
    t: &FetchableTopicResponse,
    topic: &TopicRef,
    by_id: bool,
    snapshot: &TopicsSnapshot,
) -> bool {
    let (name, id) = response_topic(topic, snapshot);
    if by_id {
        t.topic_id == id
    } else {
        t.topic == name
    }
}

fn resolve_target(snapshot: &TopicsSnapshot, key: PartKey, want: PartWant) -> Target {
    let (name, missing) = match &key.topic {
        TopicRef::Name(name) => (
            snapshot.topic(name).map(|m| m.name.clone()),
            errors::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        TopicRef::Id(id) => (
            snapshot.topic_by_id(id).map(|m| m.name.clone()),
            errors::UNKNOWN_TOPIC_ID,
        ),
    };
    let Some(name) = name else {
        return Target {
            key,
            want,
            tp: None,
            home: None,
            error: missing,
        };
    };
    let tp = TopicPartition {
        topic: name,
        partition: key.partition,
    };
    let home = snapshot.shard_for(&tp);
    // The single node's leader epoch is always 0: a client that knows a newer one is talking
    // about a leader this broker has not heard of; one that knows an older one is fenced.
    let error = if home.is_none() {
        errors::UNKNOWN_TOPIC_OR_PARTITION
    } else if want.current_leader_epoch > 0 {
        errors::UNKNOWN_LEADER_EPOCH
    } else if want.current_leader_epoch < -1 {
        errors::FENCED_LEADER_EPOCH
    } else {
        errors::NONE
    };
    Target {
        key,
        want,
        tp: Some(tp),
        home,
        error,
    }
}

/// Reads every target (one mesh call per home shard, concurrently) and trims the results to
/// `max_bytes` in target order. Results are in target order.
///
/// Runs on the connection's shard.
async fn read_all(
    ctx: &Rc<BrokerCtx>,
    targets: &[Target],
    max_bytes: usize,
    committed: bool,
) -> Vec<PartRead> {
    let mut reads: Vec<PartRead> = targets.iter().map(|t| PartRead::error(t.error)).collect();
    let mut per_shard: HashMap<ShardId, Vec<(usize, TopicPartition, i64, usize)>> = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        if let (errors::NONE, Some(tp), Some(home)) = (t.error, &t.tp, t.home) {
            per_shard.entry(home).or_default().push((
                i,
                tp.clone(),
                t.want.fetch_offset,
                (t.want.max_bytes.max(0) as usize).min(max_bytes),
            ));
        }
    }
    let calls: Vec<_> = per_shard
        .into_iter()
        .map(|(home, items)| {
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                let slots: Vec<usize> = items.iter().map(|(i, ..)| *i).collect();
                let answer = ctx
                    .call(home, move |home_ctx: Rc<BrokerCtx>| async move {
                        read_on_home(&home_ctx, items, max_bytes, committed).await
                    })
                    .await;
                match answer {
                    Ok(results) => results,
                    Err(_) => slots
                        .into_iter()
                        .map(|i| (i, PartRead::error(errors::NOT_LEADER_OR_FOLLOWER)))
                        .collect(),
                }
            })
        })
        .collect();
    for call in calls {
        for (i, read) in call.await {
            if let Some(slot) = reads.get_mut(i) {
                *slot = read;
            }
        }
    }
    // The request-wide limit, in request order: the first partition with data keeps at least
    // one batch; later ones keep only whole batches that still fit.
    let mut remaining = max_bytes;
    let mut first = true;
    for read in &mut reads {
        if read.pieces.is_empty() {
            continue;
        }
        let limit = if first {
            remaining.max(read.batch_ends.first().map_or(0, |&e| e as usize))
        } else {
            remaining
        };
        read.trim_to(limit);
        if !read.pieces.is_empty() {
            first = false;
        }
        remaining = remaining.saturating_sub(read.len());
    }
    reads
}

/// Reads each partition of `items` in turn, each up to its own limit, stopping early once
/// `max_bytes` were read in total (the caller trims exactly); `committed` reads below the
/// last stable offset only, with the aborted transactions of what was read.
///
/// Runs on the home shard of every partition in `items`.
async fn read_on_home(
    home: &Rc<BrokerCtx>,
    items: Vec<(usize, TopicPartition, i64, usize)>,
    max_bytes: usize,
    committed: bool,
) -> Vec<(usize, PartRead)> {
    let mut out = Vec::with_capacity(items.len());
    let mut total = 0usize;
    for (i, tp, offset, limit) in items {
        let partition = match home.state().cluster.slot(&tp) {
            Some(Slot::Online(p)) => p,
            Some(Slot::Offline(_)) => {
                out.push((i, PartRead::error(errors::KAFKA_STORAGE_ERROR)));
                continue;
            }
            None => {
                out.push((i, PartRead::error(errors::UNKNOWN_TOPIC_OR_PARTITION)));
                continue;
            }
        };
        let hw = partition.high_watermark();
        let lso = partition.last_stable_offset();
        let log_start = partition.log_start_offset();
        let bound = if committed { lso } else { Offset(i64::MAX) };
        let empty = PartRead {
            error_code: errors::NONE,
            high_watermark: hw.0,
            last_stable_offset: lso.0,
            log_start_offset: log_start.0,
            aborted: Vec::new(),
            pieces: Vec::new(),
            batch_ends: Vec::new(),
        };
        // Offsets assigned but not yet written are not out of range, just not readable yet.
        if Offset(offset) > hw && Offset(offset) <= partition.log_end_offset() {
            out.push((i, empty));
            continue;
        }
        if total >= max_bytes && Offset(offset) >= log_start && Offset(offset) <= hw {
            // The response is already full; the caller would drop this partition's data.
            out.push((i, empty));
            continue;
        }
        let read = match partition
            .read_for_send_below(Offset(offset), limit, bound)
            .await
        {
            Ok(r) => PartRead {
                error_code: errors::NONE,
                high_watermark: r.high_watermark.0,
                last_stable_offset: lso.0,
                log_start_offset: r.log_start_offset.0,
                aborted: if committed && !r.is_empty() {
                    match partition.aborted_transactions(Offset(offset), r.upper_bound) {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(%tp, offset, error = %e, "aborted transactions not read");
                            out.push((i, PartRead::error(e.kafka_code())));
                            continue;
                        }
                    }
                } else {
                    Vec::new()
                },
                pieces: r
                    .pieces
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| match p {
                        SendPiece::Mem(b) => RecordsPiece::Bytes(b),
                        SendPiece::File { file, pos, len } => RecordsPiece::File(FileRange {
                            file,
                            offset: pos,
                            len,
                        }),
                    })
                    .collect(),
                batch_ends: r.batch_ends,
            },
            Err(e @ EngineError::OffsetOutOfRange { .. }) => PartRead {
                error_code: e.kafka_code(),
                high_watermark: partition.high_watermark().0,
                last_stable_offset: partition.last_stable_offset().0,
                log_start_offset: partition.log_start_offset().0,
                aborted: Vec::new(),
                pieces: Vec::new(),
                batch_ends: Vec::new(),
            },
            Err(e) => {
                tracing::warn!(%tp, offset, error = %e, "fetch read failed");
                PartRead::error(e.kafka_code())
            }
        };
        total += read.len();
        out.push((i, read));
    }
    out
}

/// Waits until an append reaches one of `targets` (or, for `committed`, until the last stable
/// offset passes one's offset), or the deadline passes: one wait job per home shard, resuming
/// at the first answer. The other jobs are told they are no longer needed and end at their
/// next wake-up or their deadline.
///
/// Runs on the connection's shard.
async fn wait_for_appends(
    ctx: &Rc<BrokerCtx>,
    targets: &[Target],
    deadline: Instant,
    committed: bool,
) {
    let mut per_shard: HashMap<ShardId, Vec<(TopicPartition, Offset)>> = HashMap::new();
    for t in targets {
        if let (Some(tp), Some(home)) = (&t.tp, t.home) {
            per_shard
                .entry(home)
                .or_default()
                .push((tp.clone(), Offset(t.want.fetch_offset)));
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let timer = async {
        glommio::timer::Timer::new(deadline.saturating_duration_since(Instant::now())).await;
    };
    // At shutdown a parked fetch answers with what it has (see `ShutdownSignal`).
    let timer_or_shutdown = futures_lite::future::or(timer, ctx.state().shutdown.wait());
    if per_shard.is_empty() {
        timer_or_shutdown.await;
        return;
    }
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<()>(per_shard.len());
    let tx = Rc::new(tx);
    for (home, parts) in per_shard {
        let ctx = ctx.clone();
        let done = done.clone();
        let tx = tx.clone();
        glommio::spawn_local(async move {
            let _ = ctx
                .call(home, move |home_ctx: Rc<BrokerCtx>| async move {
                    let resolved: Vec<_> = parts
                        .into_iter()
                        .filter_map(|(tp, offset)| match home_ctx.state().cluster.slot(&tp) {
                            Some(Slot::Online(p)) => Some((p, offset)),
                            _ => None,
                        })
                        .collect();
                    if resolved.is_empty() {
                        // A partition vanished since the read: the next read reports it.
                        return;
                    }
                    home_ctx
                        .state()
                        .notifier
                        .wait_any(resolved, deadline, done, committed)
                        .await;
                })
                .await;
            let _ = tx.try_send(());
        })
        .detach();
    }
    futures_lite::future::or(
        async {
            let _ = rx.recv().await;
        },
        timer_or_shutdown,
    )
    .await;
    done.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn read_of(pieces: Vec<RecordsPiece>, ends: &[u64]) -> PartRead {
        PartRead {
            pieces,
            batch_ends: ends.to_vec(),
            ..PartRead::error(errors::NONE)
        }
    }

    fn lens(r: &PartRead) -> Vec<usize> {
        r.pieces.iter().map(RecordsPiece::len).collect()
    }

    #[test]
    fn trimming_cuts_at_known_batch_ends_across_pieces() {
        // Three 100-byte batches, each a 61-byte header buffer and a body buffer.
        let b = Bytes::from(vec![7u8; 300]);
        let mut pieces = Vec::new();
        for i in 0..3 {
            pieces.push(RecordsPiece::Bytes(b.slice(i * 100..i * 100 + 61)));
            pieces.push(RecordsPiece::Bytes(b.slice(i * 100 + 61..(i + 1) * 100)));
        }
        let full = read_of(pieces, &[100, 200, 300]);
        let mut r = full.clone();
        r.trim_to(1000);
        assert_eq!(r.len(), 300);
        let mut r = full.clone();
        r.trim_to(250);
        assert_eq!((r.len(), lens(&r)), (200, vec![61, 39, 61, 39]));
        let mut r = full.clone();
        r.trim_to(130);
        assert_eq!((r.len(), r.pieces.len()), (100, 2));
        let mut r = full.clone();
        r.trim_to(99);
        assert!(r.pieces.is_empty() && r.batch_ends.is_empty());
    }

    #[test]
    fn trimming_a_file_range_takes_a_prefix_of_it() {
        let file = Arc::new(std::fs::File::open("Cargo.toml").unwrap());
        let range = FileRange {
            file,
            offset: 4096,
            len: 10_000,
        };
        // Only some batch ends are known for a range read from disk.
        let full = read_of(
            vec![RecordsPiece::File(range.clone())],
            &[1000, 4000, 9000, 10_000],
        );
        let mut r = full.clone();
        r.trim_to(8999);
        assert_eq!(r.batch_ends, vec![1000, 4000]);
        assert_eq!(r.pieces, vec![RecordsPiece::File(range.prefix(4000))]);
        let mut r = full;
        r.trim_to(10_000);
        assert_eq!(r.pieces, vec![RecordsPiece::File(range)]);
    }
}
