//! Produce (key 0): appends record batches to partitions.
//!
//! The handler runs on the connection's shard. It groups the request's partitions by home
//! shard and sends one mesh call per shard carrying all of that shard's partitions; the records
//! travel as `Bytes` slices of the request frame (no copy). On the home shard every append
//! takes its place in its partition's log at once, in request order (`Partition::append`), and
//! the home shard reports that back; when every shard has, the connection's [`OrderPoint`] is
//! released and the connection's next Produce may start, while this one's appends wait
//! concurrently for the durability `acks` asks for (0 and 1: the device write, -1: fdatasync).
//! Then the partition's waiting fetches are woken. Results are gathered back into the
//! request's order.
//!
//! `timeout_ms` bounds the wait for durability of acks=-1, as Kafka bounds the wait for the
//! in-sync replicas: a partition whose fdatasync has not covered its append in time is answered
//! REQUEST_TIMED_OUT, while its append stays in the log and still becomes durable (the client
//! retries or gives up; the data may be there, as with Kafka). A non-positive `timeout_ms` puts
//! no bound on the wait. acks 0 and 1 wait for the device write only, which is not bounded.
//!
//! Before an append, the home shard applies the topic's record rules that the engine does not
//! know: a compacted topic refuses keyless records (INVALID_RECORD, with the batch index in
//! `record_errors`), and a topic whose `compression.type` is not `producer` gets its batches
//! recompressed. LogAppendTime is stamped by the engine itself.
//!
//! Transactions: a request carrying a transactional batch must name its `transactional_id`;
//! without one Kafka refuses the whole request with TRANSACTIONAL_ID_AUTHORIZATION_FAILED, and
//! so does this handler. Control batches (transaction markers) are written by the broker only;
//! one sent by a client is refused INVALID_RECORD by the engine. Before transactional batches
//! are appended, the transaction coordinator confirms that their partitions are in the
//! producer's ongoing transaction (KIP-890 part 1, `txn::verify_produce`; broker setting
//! `transaction.partition.verification.enable`, on by default as in Kafka); a batch for a
//! partition outside it would open a transaction there that no marker ever ends.
//!
//! acks=0 gets no response at all (the dispatcher turns the response into `Reply::None`, or
//! closes the connection when a partition failed, which is how Kafka tells such a producer
//! that something went wrong).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_engine::batch::{BatchHeader, BatchIter};
use sluice_engine::builder::{rewrite, Rewrite};
use sluice_engine::compression::Codec;
use sluice_engine::config::CleanupPolicy;
use sluice_engine::durability::Durability;
use sluice_engine::producer_state::IncomingBatch;
use sluice_engine::records::{decode_records, RecordIter};
use sluice_engine::types::{ShardId, TopicPartition};
use sluice_protocol::messages::produce_request::ProduceRequest;
use sluice_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::cluster::Slot;
use crate::connection::OrderPoint;
use crate::errors;
use crate::txn;

/// Versions served. v0–v2 can only carry the pre-v2 message formats, which Kafka 4 no longer
/// accepts either; v3+ carry v2 record batches.
pub const VERSIONS: (i16, i16) = (3, 11);

/// The in-sync replicas of every partition: this node alone.
const IN_SYNC_REPLICAS: i64 = 1;

/// The outcome of one partition's append, sent back from the home shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOutcome {
    pub error_code: i16,
    pub error_message: Option<String>,
    /// Index of the batch that was refused (INVALID_RECORD), for `record_errors`.
    pub bad_batch: Option<i32>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

impl PartitionOutcome {
    fn error(code: i16, message: impl Into<String>) -> PartitionOutcome {
        PartitionOutcome {
            error_code: code,
            error_message: Some(message.into()),
            bad_batch: None,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// Whether a produce request asked for no response (acks=0). The dispatcher uses this to
/// answer nothing.
pub fn wants_no_response(request: &ProduceRequest) -> bool {
    request.acks == 0
}

/// Whether any partition of a response failed (for acks=0, where the only signal Kafka gives
/// is closing the connection).
pub fn any_error(response: &ProduceResponse) -> bool {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .any(|p| p.error_code != errors::NONE)
}

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: ProduceRequest,
) -> ProduceResponse {
    handle_ordered(ctx, header, request, OrderPoint::unordered()).await
}

/// [`handle`] for a Produce in its connection's order: `order` is released once every append
/// of the request has its place in its partition's log.
///
/// Runs on the connection's shard.
pub async fn handle_ordered(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: ProduceRequest,
    order: OrderPoint,
) -> ProduceResponse {
    let version = header.request_api_version;
    let timeout = u64::try_from(request.timeout_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    let durability = match request.acks {
        // acks=0 still waits for the device write on the home shard: the client does not wait
        // for it, and waiting is what makes the append visible to fetches when they are woken.
        0 | 1 => Some(Durability::Written),
        -1 => Some(Durability::Synced),
        _ => None,
    };
    let snapshot = ctx.state().cluster.topics();
    let untagged_transactional = request.transactional_id.is_none()
        && request
            .topic_data
            .iter()
            .flat_map(|t| &t.partition_data)
            .filter_map(|p| p.records.as_deref())
            .any(|r| first_transactional_batch(r).is_some());

    // One outcome slot per (topic, partition) in request order; filled locally for errors found
    // here, or by the home shard's answer.
    let mut outcomes: Vec<Option<PartitionOutcome>> = Vec::new();
    let mut shape: Vec<(String, Vec<(i32, usize)>)> = Vec::with_capacity(request.topic_data.len());
    let mut per_shard: HashMap<ShardId, Vec<(usize, TopicPartition, Bytes)>> = HashMap::new();
    for topic in request.topic_data {
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for part in topic.partition_data {
            let slot = outcomes.len();
            parts.push((part.index, slot));
            if durability.is_none() {
                outcomes.push(Some(PartitionOutcome::error(
                    errors::INVALID_REQUIRED_ACKS,
                    format!("acks must be 0, 1 or -1, not {}", request.acks),
                )));
                continue;
            }
            if untagged_transactional {
                outcomes.push(Some(PartitionOutcome::error(
                    errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    "the request carries transactional records but no transactional id",
                )));
                continue;
            }
            let tp = TopicPartition::new(&topic.name, part.index);
            let Some(home) = snapshot.shard_for(&tp) else {
                outcomes.push(Some(PartitionOutcome::error(
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("this server does not host {tp}"),
                )));
                continue;
            };
            let Some(records) = part.records.filter(|r| !r.is_empty()) else {
                outcomes.push(Some(PartitionOutcome::error(
                    errors::INVALID_RECORD,
                    format!("the produce request for {tp} carries no records"),
                )));
                continue;
            };
            outcomes.push(None);
            per_shard.entry(home).or_default().push((slot, tp, records));
        }
        shape.push((topic.name, parts));
    }

    // KIP-890 part 1: transactional batches only for partitions in the ongoing transaction.
    let verify = ctx.state().config.transaction_partition_verification_enable;
    if let Some(transactional_id) = request.transactional_id.as_deref().filter(|_| verify) {
        let batches: Vec<txn::ProducedTxnBatch> = per_shard
            .values()
            .flatten()
            .filter_map(|(slot, tp, records)| {
                first_transactional_batch(records).map(|b| txn::ProducedTxnBatch {
                    slot: *slot,
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    producer_id: b.producer_id,
                    producer_epoch: b.epoch,
                })
            })
            .collect();
        if !batches.is_empty() {
            let refused = txn::verify_produce(ctx, transactional_id, batches).await;
            for (slot, code) in &refused {
                let message = match *code {
                    errors::INVALID_TXN_STATE => "the partition was not added to the transaction",
                    errors::NOT_ENOUGH_REPLICAS => {
                        "the partition's place in the transaction cannot be verified yet"
                    }
                    _ => "the transaction coordinator refused this producer",
                };
                if let Some(entry) = outcomes.get_mut(*slot) {
                    *entry = Some(PartitionOutcome::error(*code, message));
                }
            }
            for items in per_shard.values_mut() {
                items.retain(|(slot, _, _)| !refused.iter().any(|(s, _)| s == slot));
            }
            per_shard.retain(|_, items| !items.is_empty());
        }
    }

    if let Some(durability) = durability {
        // Every shard's call starts before any is awaited, so the shards work concurrently.
        let mut placements = Vec::with_capacity(per_shard.len());
        let calls: Vec<_> = per_shard
            .into_iter()
            .map(|(home, items)| {
                let ctx = ctx.clone();
                // Completes when the home shard has placed the appends (or dropped the call).
                let (placed, placed_rx) = futures_channel::oneshot::channel::<()>();
                placements.push(placed_rx);
                glommio::spawn_local(async move {
                    let slots: Vec<usize> = items.iter().map(|(slot, _, _)| *slot).collect();
                    let answer = ctx
                        .call(home, move |home_ctx: Rc<BrokerCtx>| async move {
                            append_on_home(home_ctx, items, durability, timeout, placed).await
                        })
                        .await;
                    match answer {
                        Ok(results) => results,
                        Err(e) => slots
                            .into_iter()
                            .map(|slot| {
                                (
                                    slot,
                                    PartitionOutcome::error(
                                        errors::NOT_LEADER_OR_FOLLOWER,
                                        format!("home shard {} is unavailable: {e}", home.0),
                                    ),
                                )
                            })
                            .collect(),
                    }
                })
            })
            .collect();
        for placement in placements {
            // `Err(Canceled)` means the call ended without placing (shard gone): also final.
            let _ = placement.await;
        }
        order.release();
        for call in calls {
            for (slot, outcome) in call.await {
                if let Some(entry) = outcomes.get_mut(slot) {
                    *entry = Some(outcome);
                }
            }
        }
    }

    let responses = shape
        .into_iter()
        .map(|(name, parts)| TopicProduceResponse {
            name,
            partition_responses: parts
                .into_iter()
                .map(|(index, slot)| {
                    let outcome = outcomes
                        .get_mut(slot)
                        .and_then(Option::take)
                        .unwrap_or_else(|| {
                            PartitionOutcome::error(errors::UNKNOWN_SERVER_ERROR, "no result")
                        });
                    partition_response(index, outcome, version)
                })
                .collect(),
            ..TopicProduceResponse::default()
        })
        .collect();
    ProduceResponse {
        responses,
        ..ProduceResponse::default()
    }
}

fn partition_response(index: i32, o: PartitionOutcome, version: i16) -> PartitionProduceResponse {
    let has_messages = version >= 8;
    PartitionProduceResponse {
        index,
        error_code: o.error_code,
        base_offset: o.base_offset,
        log_append_time_ms: o.log_append_time_ms,
        log_start_offset: o.log_start_offset,
        record_errors: match (has_messages, o.bad_batch) {
            (true, Some(batch_index)) => vec![BatchIndexAndErrorMessage {
                batch_index,
                batch_index_error_message: o.error_message.clone(),
                ..BatchIndexAndErrorMessage::default()
            }],
            _ => Vec::new(),
        },
        error_message: if has_messages { o.error_message } else { None },
        ..PartitionProduceResponse::default()
    }
}

/// Appends each item to its partition and returns the outcomes by slot. The appends take their
/// places in their logs synchronously, in the request's order, before `placed` is dropped;
/// then they wait for their durability concurrently. `timeout` bounds the wait of Synced
/// appends (the appends themselves run on, see the module doc).
///
/// Runs on the home shard of every partition in `items`.
async fn append_on_home(
    home: Rc<BrokerCtx>,
    items: Vec<(usize, TopicPartition, Bytes)>,
    durability: Durability,
    timeout: Option<Duration>,
    placed: futures_channel::oneshot::Sender<()>,
) -> Vec<(usize, PartitionOutcome)> {
    let deadline = timeout
        .filter(|_| durability == Durability::Synced)
        .map(|t| Instant::now() + t);
    let tasks: Vec<_> = items
        .into_iter()
        .map(|(slot, tp, records)| {
            // Each append is its own task, so a timed-out wait below does not cancel it.
            let append = place_append(&home, tp, records, durability);
            (slot, glommio::spawn_local(append).detach())
        })
        .collect();
    drop(placed);
    let mut out = Vec::with_capacity(tasks.len());
    for (slot, task) in tasks {
        out.push((slot, outcome_by(task, deadline, timeout).await));
    }
    out
}

/// The outcome of a placed append (`task`), or REQUEST_TIMED_OUT once `deadline` passes; the
/// append's task runs on either way.
///
/// Runs on the append's home shard.
async fn outcome_by(
    task: glommio::task::JoinHandle<PartitionOutcome>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
) -> PartitionOutcome {
    let outcome = match deadline {
        None => task.await,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            match glommio::timer::timeout(left, async { Ok(task.await) }).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return PartitionOutcome::error(
                        errors::REQUEST_TIMED_OUT,
                        format!(
                            "the append was not durable within timeout_ms ({} ms); it stays in \
                             the log and may still become durable",
                            timeout.map_or(0, |t| t.as_millis())
                        ),
                    )
                }
            }
        }
    };
    outcome.unwrap_or_else(|| {
        PartitionOutcome::error(errors::NOT_LEADER_OR_FOLLOWER, "the append was cancelled")
    })
}

/// Checks `tp`'s topic rules and places the append in `tp`'s log now (synchronously); the
/// returned future waits for the durability and wakes the partition's fetches.
///
/// Runs on `tp`'s home shard.
fn place_append(
    home: &Rc<BrokerCtx>,
    tp: TopicPartition,
    records: Bytes,
    durability: Durability,
) -> Pin<Box<dyn Future<Output = PartitionOutcome>>> {
    let ready = |o: PartitionOutcome| -> Pin<Box<dyn Future<Output = PartitionOutcome>>> {
        Box::pin(std::future::ready(o))
    };
    let partition = match home.state().cluster.slot(&tp) {
        Some(Slot::Online(p)) => p,
        Some(Slot::Offline(reason)) => {
            return ready(PartitionOutcome::error(
                errors::KAFKA_STORAGE_ERROR,
                format!("{tp} is offline: {reason}"),
            ))
        }
        None => {
            return ready(PartitionOutcome::error(
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                format!("this server does not host {tp}"),
            ))
        }
    };
    let topics = home.state().cluster.topics();
    let meta = topics.topic(&tp.topic);
    // The single node is the whole in-sync replica set: acks=all cannot be honoured on a topic
    // that asks for more in-sync replicas than that, and Kafka refuses such a write.
    let min_insync = meta
        .and_then(|m| m.configs.get("min.insync.replicas"))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(1);
    if durability == Durability::Synced && min_insync > IN_SYNC_REPLICAS {
        return ready(PartitionOutcome::error(
            errors::NOT_ENOUGH_REPLICAS,
            format!(
                "{tp} has min.insync.replicas={min_insync} but only {IN_SYNC_REPLICAS} in-sync replica"
            ),
        ));
    }
    let rules = match meta {
        Some(meta) => TopicRules {
            codec: meta
                .configs
                .get("compression.type")
                .and_then(|c| target_codec(c)),
            require_keys: matches!(
                meta.log_config.cleanup_policy,
                CleanupPolicy::Compact | CleanupPolicy::CompactDelete
            ),
            max_message_bytes: meta.log_config.max_message_bytes,
        },
        None => TopicRules::default(),
    };
    let records = match prepare(records, &rules) {
        Ok(records) => records,
        Err(refusal) => {
            let mut o = PartitionOutcome::error(refusal.code, refusal.message);
            o.bad_batch = refusal.batch_index;
            return ready(o);
        }
    };
    let bytes = records.len();
    let append = partition.append(records, durability);
    let home = home.clone();
    Box::pin(async move {
        match append.await {
            Ok(info) => {
                // The append is written, so the high watermark has moved past it: waiting
                // fetches can now read it.
                home.state().notifier.notify(&tp);
                let records = info.last_offset.0 - info.base_offset.0 + 1;
                home.state().metrics.produced(&tp, bytes, records);
                PartitionOutcome {
                    error_code: errors::NONE,
                    error_message: None,
                    bad_batch: None,
                    base_offset: info.base_offset.0,
                    log_append_time_ms: info.log_append_time,
                    log_start_offset: info.log_start_offset.0,
                }
            }
            Err(e) => {
                // A poisoned partition refuses every append, and the engine logged the cause
                // once when it poisoned it; one line per refused request would flood the log
                // (a full disk refuses thousands per second).
                match &e {
                    sluice_engine::error::Error::Poisoned { .. } => {
                        tracing::debug!(%tp, error = %e, "append refused")
                    }
                    _ if e.kafka_code() == errors::KAFKA_STORAGE_ERROR => {
                        tracing::error!(%tp, error = %e, "append failed")
                    }
                    _ => {}
                }
                // Part of a batch may have been appended before a storage failure was seen;
                // waking fetches is harmless either way.
                home.state().notifier.notify(&tp);
                PartitionOutcome::error(e.kafka_code(), e.to_string())
            }
        }
    })
}

/// The first batch of `records` with the transactional attribute (read from the batch headers
/// only; damaged data is left to validation). Only whole batches count, as in Kafka's batch
/// iterator: bytes whose length field runs past the end are a corrupt batch (CORRUPT_MESSAGE
/// from validation), not a transactional one, whatever their attribute bits say.
fn first_transactional_batch(records: &[u8]) -> Option<IncomingBatch> {
    let mut at = 0usize;
    while let Some(rest) = records.get(at..) {
        let header = BatchHeader::read(rest)?;
        if header.total_len == 0 || header.total_len > rest.len() as u64 {
            return None;
        }
        let batch = IncomingBatch::from_header(rest)?;
        if batch.transactional {
            return Some(batch);
        }
        at = at.saturating_add(header.total_len as usize);
    }
    None
}

/// The per-topic record rules applied before the engine sees a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicRules {
    /// Recompress every batch into this codec (`compression.type` other than `producer`).
    pub codec: Option<Codec>,
    /// Refuse records without a key (compacted topics).
    pub require_keys: bool,
    pub max_message_bytes: usize,
}

/// The codec a topic's `compression.type` asks for; `None` for `producer` (keep as sent).
pub fn target_codec(compression_type: &str) -> Option<Codec> {
    match compression_type {
        "producer" => None,
        "uncompressed" => Some(Codec::None),
        other => Codec::from_name(other),
    }
}

/// Why a produced record set was refused before reaching the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
    pub batch_index: Option<i32>,
}

/// Applies `rules` to a produced record set: checks keys and recompresses as the topic asks.
/// Returns the records unchanged (the same `Bytes`, no copy) when nothing needs doing.
///
/// Runs on the partition's home shard (pure CPU work, no I/O).
pub fn prepare(records: Bytes, rules: &TopicRules) -> Result<Bytes, Refusal> {
    if rules.codec.is_none() && !rules.require_keys {
        return Ok(records);
    }
    // Decompressed records may be larger than the batch; cap them generously but finitely so
    // a compression bomb cannot exhaust memory.
    let max_out = rules
        .max_message_bytes
        .max(1 << 20)
        .saturating_mul(64)
        .min(sluice_engine::limits::BATCH_BYTES_MAX);
    let mut rewritten: Option<BytesMut> = None;
    for (index, item) in BatchIter::new(&records).enumerate() {
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        let (pos, view) = item.map_err(|e| Refusal {
            code: e.kafka_code(),
            message: e.to_string(),
            batch_index: None,
        })?;
        // Rewriting trusts its input, and keys can only be checked on a sound batch: validate
        // it here as the engine will again on append.
        view.validate(pos, rules.max_message_bytes)
            .map_err(|e| Refusal {
                code: e.kafka_code(),
                message: e.to_string(),
                batch_index: None,
            })?;
        if rules.require_keys {
            let decoded = decode_records(
                view.attributes(),
                view.records(),
                view.record_count(),
                max_out,
            )
            .map_err(|e| Refusal {
                code: e.kafka_code(),
                message: e.to_string(),
                batch_index: Some(index),
            })?;
            for record in RecordIter::new(decoded.bytes(), view.record_count()) {
                let record = record.map_err(|e| Refusal {
                    code: e.kafka_code(),
                    message: e.to_string(),
                    batch_index: Some(index),
                })?;
                if record.key.is_none() {
                    return Err(Refusal {
                        code: errors::INVALID_RECORD,
                        message: "compacted topic cannot accept message without key".into(),
                        batch_index: Some(index),
                    });
                }
            }
        }
        let current = Codec::from_attributes(view.attributes()).ok();
        let rewrite_to = rules.codec.filter(|c| Some(*c) != current);
        match (rewrite_to, rewritten.as_mut()) {
            (Some(codec), _) => {
                let out = rewritten.get_or_insert_with(|| {
                    let mut b = BytesMut::with_capacity(records.len());
                    b.extend_from_slice(&records[..pos]);
                    b
                });
                let batch = rewrite(
                    view.as_bytes(),
                    &Rewrite {
                        codec,
                        level: None,
                        log_append_time_ms: None,
                        max_out,
                    },
                )
                .map_err(|e| Refusal {
                    code: e.kafka_code(),
                    message: e.to_string(),
                    batch_index: Some(index),
                })?;
                out.extend_from_slice(&batch);
            }
            (None, Some(out)) => out.extend_from_slice(view.as_bytes()),
            (None, None) => {}
        }
    }
    Ok(rewritten.map_or(records, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use sluice_engine::batch::BatchView;
    use sluice_engine::builder::BatchBuilder;

    use super::*;

    fn batch(codec: Codec, keys: &[Option<&[u8]>]) -> Bytes {
        let mut b = BatchBuilder::new(codec);
        for (i, k) in keys.iter().enumerate() {
            b.append(1000 + i as i64, *k, Some(b"value value value value"), &[])
                .unwrap();
        }
        b.build().unwrap()
    }

    #[test]
    fn only_whole_batches_count_as_transactional() {
        let mut b = BatchBuilder::new(Codec::None)
            .producer(7, 0, 0)
            .transactional(true);
        b.append(1, None, Some(b"v"), &[]).unwrap();
        let whole = b.build().unwrap();
        assert_eq!(
            first_transactional_batch(&whole).map(|t| t.producer_id),
            Some(7)
        );
        // After a plain batch, too.
        let mut both = batch(Codec::None, &[None]).to_vec();
        both.extend_from_slice(&whole);
        assert_eq!(
            first_transactional_batch(&both).map(|t| t.producer_id),
            Some(7)
        );
        // The same header with its length running past the data is garbage for validation
        // to refuse (CORRUPT_MESSAGE), not a transactional batch to refuse for its missing id.
        assert!(first_transactional_batch(&whole[..whole.len() - 1]).is_none());
    }

    fn codecs(records: &[u8]) -> Vec<Option<Codec>> {
        BatchIter::new(records)
            .map(|item| {
                let (_, view): (usize, BatchView<'_>) = item.unwrap();
                Codec::from_attributes(view.attributes()).ok()
            })
            .collect()
    }

    fn rules(codec: Option<Codec>, require_keys: bool) -> TopicRules {
        TopicRules {
            codec,
            require_keys,
            max_message_bytes: 1 << 20,
        }
    }

    #[test]
    fn producer_compression_keeps_the_request_bytes() {
        let records = batch(Codec::Gzip, &[Some(b"k"), None]);
        let out = prepare(records.clone(), &rules(None, false)).unwrap();
        assert_eq!(out.as_ptr(), records.as_ptr(), "no copy");
    }

    #[test]
    fn a_topic_codec_recompresses_every_batch_and_keeps_the_records() {
        let mut two = BytesMut::new();
        two.extend_from_slice(&batch(Codec::Gzip, &[Some(b"a"), Some(b"b")]));
        two.extend_from_slice(&batch(Codec::Zstd, &[Some(b"c")]));
        let out = prepare(two.freeze(), &rules(Some(Codec::Zstd), false)).unwrap();
        assert_eq!(codecs(&out), vec![Some(Codec::Zstd), Some(Codec::Zstd)]);
        // Every batch is still valid (CRC recomputed) and holds the same records.
        let mut keys = Vec::new();
        for item in BatchIter::new(&out) {
            let (pos, view) = item.unwrap();
            view.validate(pos, 1 << 20).unwrap();
            let decoded = decode_records(
                view.attributes(),
                view.records(),
                view.record_count(),
                1 << 20,
            )
            .unwrap();
            for r in RecordIter::new(decoded.bytes(), view.record_count()) {
                keys.push(r.unwrap().key.map(<[u8]>::to_vec));
            }
        }
        assert_eq!(
            keys,
            vec![
                Some(b"a".to_vec()),
                Some(b"b".to_vec()),
                Some(b"c".to_vec())
            ]
        );
        let plain = prepare(out, &rules(target_codec("uncompressed"), false)).unwrap();
        assert_eq!(codecs(&plain), vec![Some(Codec::None), Some(Codec::None)]);
    }

    #[test]
    fn a_compacted_topic_refuses_the_batch_with_a_keyless_record() {
        let mut two = BytesMut::new();
        two.extend_from_slice(&batch(Codec::None, &[Some(b"a")]));
        two.extend_from_slice(&batch(Codec::Lz4, &[Some(b"b"), None]));
        let refusal = prepare(two.freeze(), &rules(None, true)).unwrap_err();
        assert_eq!(refusal.code, errors::INVALID_RECORD);
        assert_eq!(refusal.batch_index, Some(1));
        assert!(prepare(batch(Codec::Snappy, &[Some(b"k")]), &rules(None, true)).is_ok());
    }

    #[test]
    fn a_corrupt_batch_is_refused_before_rewriting() {
        let mut bad = BytesMut::from(&batch(Codec::None, &[Some(b"a")])[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let refusal = prepare(bad.freeze(), &rules(Some(Codec::Gzip), false)).unwrap_err();
        assert_eq!(refusal.code, errors::CORRUPT_MESSAGE);
    }

    #[test]
    fn a_durability_wait_past_the_deadline_times_out_and_the_append_runs_on() {
        glommio::LocalExecutor::default().run(async {
            let finished = Rc::new(std::cell::Cell::new(false));
            let slow = {
                let finished = finished.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(60)).await;
                    finished.set(true);
                    PartitionOutcome::error(errors::NONE, "done")
                })
                .detach()
            };
            let timeout = Some(Duration::from_millis(10));
            let started = Instant::now();
            let o = outcome_by(slow, Some(started + Duration::from_millis(10)), timeout).await;
            assert_eq!(o.error_code, errors::REQUEST_TIMED_OUT);
            assert_eq!(o.base_offset, -1);
            assert!(started.elapsed() < Duration::from_millis(60));
            assert!(!finished.get());
            // The append was not cancelled by the timed-out wait: it completes on its own.
            glommio::timer::sleep(Duration::from_millis(100)).await;
            assert!(finished.get());

            // Within the deadline the append's own outcome is returned.
            let quick = glommio::spawn_local(async {
                PartitionOutcome::error(errors::NOT_ENOUGH_REPLICAS, "quick")
            })
            .detach();
            let o = outcome_by(
                quick,
                Some(Instant::now() + Duration::from_secs(5)),
                timeout,
            )
            .await;
            assert_eq!(o.error_code, errors::NOT_ENOUGH_REPLICAS);
            let unbounded =
                glommio::spawn_local(async { PartitionOutcome::error(errors::NONE, "unbounded") })
                    .detach();
            assert_eq!(
                outcome_by(unbounded, None, None).await.error_code,
                errors::NONE
            );
        });
    }

    #[test]
    fn compression_type_names_map_to_codecs() {
        assert_eq!(target_codec("producer"), None);
        assert_eq!(target_codec("uncompressed"), Some(Codec::None));
        assert_eq!(target_codec("zstd"), Some(Codec::Zstd));
        assert_eq!(target_codec("lz4"), Some(Codec::Lz4));
    }
}
