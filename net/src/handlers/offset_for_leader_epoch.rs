//! OffsetForLeaderEpoch (key 23): the end offset of a leader epoch, which consumers use to
//! detect log truncation after a leader change.
//!
//! A single node has one leader epoch, 0, that never changes. Epoch 0 ends at the log end
//! offset; any other requested epoch is unknown to the log and answers epoch -1 and offset -1,
//! as Kafka does. A `current_leader_epoch` newer than 0 means the client knows of a leader this
//! broker does not (UNKNOWN_LEADER_EPOCH); -1 skips the check. Runs on the connection's shard;
//! the log end is read on each partition's home shard.

use std::rc::Rc;

use sluice_engine::partition::Partition;
use sluice_engine::types::TopicPartition;
use sluice_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use sluice_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::cluster;
use crate::errors;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);

/// The only leader epoch a single node has.
const LEADER_EPOCH: i32 = 0;

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let version = header.request_api_version;
    let mut pending = Vec::new();
    for topic in &request.topics {
        let mut parts = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let tp = TopicPartition::new(&topic.topic, p.partition);
            let current = if version >= 2 {
                p.current_leader_epoch
            } else {
                -1
            };
            let wanted = p.leader_epoch;
            let ctx = ctx.clone();
            let task = glommio::spawn_local(async move {
                let answer = cluster::with_partition(&ctx, tp, |p: Partition| async move {
                    p.log_end_offset().0
                })
                .await;
                match answer {
                    Err(e) => (e.kafka_code(), -1, -1),
                    Ok(_) if current > LEADER_EPOCH => (errors::UNKNOWN_LEADER_EPOCH, -1, -1),
                    Ok(_) if current < -1 => (errors::FENCED_LEADER_EPOCH, -1, -1),
                    Ok(end) if wanted == LEADER_EPOCH => (errors::NONE, LEADER_EPOCH, end),
                    Ok(_) => (errors::NONE, -1, -1),
                }
            });
            parts.push((p.partition, task));
        }
        pending.push((topic.topic.clone(), parts));
    }
    let mut topics = Vec::with_capacity(pending.len());
    for (topic, parts) in pending {
        let mut partitions = Vec::with_capacity(parts.len());
        for (partition, task) in parts {
            let (error_code, leader_epoch, end_offset) = task.await;
            partitions.push(EpochEndOffset {
                error_code,
                partition,
                leader_epoch,
                end_offset,
                ..EpochEndOffset::default()
            });
        }
        topics.push(OffsetForLeaderTopicResult {
            topic,
            partitions,
            ..OffsetForLeaderTopicResult::default()
        });
    }
    OffsetForLeaderEpochResponse {
        topics,
        ..OffsetForLeaderEpochResponse::default()
    }
}
