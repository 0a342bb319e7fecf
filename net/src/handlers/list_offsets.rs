//! ListOffsets (key 2): the earliest, latest, max-timestamp, or first-at-a-timestamp offset of
//! partitions.
//!
//! The handler runs on the connection's shard and asks each partition's home shard
//! concurrently. The engine answers timestamp lookups at batch granularity (from its time
//! index, without decoding records); the home shard then decodes that one batch to give the
//! exact record Kafka would: the first record whose timestamp is at or after the target, or the
//! first record holding the largest timestamp. The single node's leader epoch is always 0.
//!
//! Isolation (v2+), as Kafka: under `read_committed` the last fetchable offset is the last
//! stable offset, otherwise the high watermark; `latest` answers it, and a timestamp lookup
//! whose record is at or past it answers no offset (-1).

use std::rc::Rc;

use sluice_engine::batch::{BatchView, TimestampType};
use sluice_engine::partition::{Partition, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP};
use sluice_engine::records::{decode_records, RecordIter};
use sluice_engine::types::{Offset, TopicPartition};
use sluice_protocol::messages::list_offsets_request::ListOffsetsRequest;
use sluice_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::cluster;
use crate::errors;

/// Versions served (v0's list of old-style offsets included).
pub const VERSIONS: (i16, i16) = (0, 10);

/// KIP-405 special timestamps: the earliest offset kept locally, and the latest tiered offset.
/// Without tiered storage the first is the log start and nothing is tiered.
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
const LATEST_TIERED_TIMESTAMP: i64 = -5;

/// The `isolation_level` of a `read_committed` client.
const READ_COMMITTED: i8 = 1;

/// The answer for one partition: (error, offset, timestamp).
type Found = (i16, i64, i64);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let version = header.request_api_version;
    // Every partition's lookup starts before any is awaited, so the home shards work at once.
    let mut pending = Vec::new();
    for topic in &request.topics {
        let mut parts = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let tp = TopicPartition::new(&topic.name, p.partition_index);
            let timestamp = p.timestamp;
            let committed = version >= 2 && request.isolation_level == READ_COMMITTED;
            let epoch = if version >= 4 {
                p.current_leader_epoch
            } else {
                -1
            };
            let ctx = ctx.clone();
            let task = glommio::spawn_local(async move {
                if epoch > 0 {
                    return (errors::UNKNOWN_LEADER_EPOCH, -1, -1);
                }
                let answer = cluster::with_partition(&ctx, tp, move |p: Partition| async move {
                    lookup(&p, timestamp, committed).await
                })
                .await;
                match answer {
                    Ok(found) => found,
                    Err(e) => (e.kafka_code(), -1, -1),
                }
            });
            parts.push((p.partition_index, task));
        }
        pending.push((topic.name.clone(), parts));
    }
    let mut topics = Vec::with_capacity(pending.len());
    for (name, parts) in pending {
        let mut partitions = Vec::with_capacity(parts.len());
        for (index, task) in parts {
            let (error_code, offset, timestamp) = task.await;
            let found = error_code == errors::NONE && offset >= 0;
            partitions.push(ListOffsetsPartitionResponse {
                partition_index: index,
                error_code,
                old_style_offsets: if version == 0 && found {
                    vec![offset]
                } else {
                    Vec::new()
                },
                timestamp: if version >= 1 { timestamp } else { -1 },
                offset: if version >= 1 { offset } else { -1 },
                leader_epoch: if found && version >= 4 { 0 } else { -1 },
                ..ListOffsetsPartitionResponse::default()
            });
        }
        topics.push(ListOffsetsTopicResponse {
            name,
            partitions,
            ..ListOffsetsTopicResponse::default()
        });
    }
    ListOffsetsResponse {
        topics,
        ..ListOffsetsResponse::default()
    }
}

/// Runs on the partition's home shard.
async fn lookup(p: &Partition, timestamp: i64, committed: bool) -> Found {
    let target = match timestamp {
        EARLIEST_LOCAL_TIMESTAMP => EARLIEST_TIMESTAMP,
        LATEST_TIERED_TIMESTAMP => return (errors::NONE, -1, -1),
        t => t,
    };
    let last_fetchable = if committed {
        p.last_stable_offset()
    } else {
        p.high_watermark()
    };
    if target == LATEST_TIMESTAMP {
        return (errors::NONE, last_fetchable.0, -1);
    }
    match p.offset_for_timestamp(target).await {
        Ok(None) => (errors::NONE, -1, -1),
        Ok(Some((offset, ts))) => {
            if target == EARLIEST_TIMESTAMP || target == LATEST_TIMESTAMP {
                return (errors::NONE, offset.0, -1);
            }
            // The engine names the batch's last offset for the max timestamp, and the first
            // batch at or after a time by its base offset (clamped to the log start): the
            // former is searched from the batch's start, the latter from the offset given.
            let exact = if target == MAX_TIMESTAMP {
                exact_record(p, offset, false, |t| t == ts).await
            } else {
                exact_record(p, offset, true, |t| t >= target).await
            };
            let (offset, ts) = exact.unwrap_or((offset.0, ts));
            if offset >= last_fetchable.0 {
                return (errors::NONE, -1, -1);
            }
            (errors::NONE, offset, ts)
        }
        Err(e) => (e.kafka_code(), -1, -1),
    }
}

/// The first record of the batch holding `offset` (at or after `offset` when `from_offset`)
/// whose timestamp satisfies `wanted`: its offset and timestamp. `None` when the batch cannot be read or no
/// record qualifies (the caller then keeps the batch-level answer).
///
/// Runs on the partition's home shard.
async fn exact_record(
    p: &Partition,
    offset: Offset,
    from_offset: bool,
    wanted: impl Fn(i64) -> bool,
) -> Option<(i64, i64)> {
    let read = p.read(offset, 1).await.ok()?;
    // The engine may hand a batch out in pieces (a cached batch is its header and its body);
    // this rare lookup joins them rather than parse across pieces.
    let joined: Vec<u8> = read.chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let view = BatchView::parse(&joined, 0).ok()?;
    let log_append = view.timestamp_type() == TimestampType::LogAppendTime;
    if log_append {
        // Every record of a LogAppendTime batch carries the batch's time.
        let t = view.max_timestamp();
        let first = if from_offset {
            offset.0.max(view.base_offset().0)
        } else {
            view.base_offset().0.max(p.log_start_offset().0)
        };
        return wanted(t).then_some((first, t));
    }
    let decoded = decode_records(
        view.attributes(),
        view.records(),
        view.record_count(),
        sluice_engine::limits::BATCH_BYTES_MAX,
    )
    .ok()?;
    for record in RecordIter::new(decoded.bytes(), view.record_count()) {
        let record = record.ok()?;
        let at = view.base_offset().0 + i64::from(record.offset_delta);
        if (from_offset && at < offset.0) || at < p.log_start_offset().0 {
            continue;
        }
        let t = record.timestamp(view.base_timestamp())?;
        if wanted(t) {
            return Some((at, t));
        }
    }
    None
}
