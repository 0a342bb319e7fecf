//! OffsetCommit (key 8): a group's consumers store their positions. The offsets are written to
//! the group's partition of `__consumer_offsets` with fdatasync before the answer, so an
//! acknowledged commit survives a crash.
//!
//! A member commits within its generation (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION,
//! REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID otherwise); a standalone consumer commits with
//! generation -1 and an empty member id to a group without members. Partitions of unknown
//! topics are UNKNOWN_TOPIC_OR_PARTITION and metadata longer than
//! `offset.metadata.max.bytes` is OFFSET_METADATA_TOO_LARGE, each on its own; the other
//! partitions are committed. Runs on the connection's shard; the commit runs on the
//! coordinator shard.

use std::rc::Rc;

use sluice_engine::partition::now_ms;
use sluice_protocol::messages::offset_commit_request::OffsetCommitRequest;
use sluice_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::coordinator::{self, OffsetToCommit};
use crate::groups::state::CommittedOffset;
use crate::groups::{self, OFFSET_METADATA_BYTES_MAX};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 9);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let now = now_ms();
    let snapshot = ctx.state().cluster.topics();
    // Per topic, each partition's own error, or None when it goes to the coordinator.
    type TopicResults = (String, Vec<(i32, Option<i16>)>);
    let mut results: Vec<TopicResults> = Vec::new();
    let mut to_commit = Vec::new();
    for t in &request.topics {
        let count = snapshot.topic(&t.name).map(|m| m.partitions);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let metadata = p.committed_metadata.clone().unwrap_or_default();
            let error = if request.group_id.is_empty() {
                Some(errors::INVALID_GROUP_ID)
            } else if !count.is_some_and(|c| (0..c).contains(&p.partition_index)) {
                Some(errors::UNKNOWN_TOPIC_OR_PARTITION)
            } else if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                Some(errors::OFFSET_METADATA_TOO_LARGE)
            } else {
                None
            };
            if error.is_none() {
                let commit_timestamp_ms = if p.commit_timestamp >= 0 {
                    p.commit_timestamp
                } else {
                    now
                };
                to_commit.push(OffsetToCommit {
                    topic: t.name.clone(),
                    partition: p.partition_index,
                    offset: CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata,
                        commit_timestamp_ms,
                        expire_timestamp_ms: (request.retention_time_ms >= 0)
                            .then(|| commit_timestamp_ms.saturating_add(request.retention_time_ms)),
                        // Known once written.
                        record_offset: -1,
                    },
                });
            }
            parts.push((p.partition_index, error));
        }
        results.push((t.name.clone(), parts));
    }
    let outcome = if request.group_id.is_empty() {
        Err(errors::INVALID_GROUP_ID)
    } else {
        let group_id = request.group_id.clone();
        let member_id = request.member_id.clone();
        let instance_id = request.group_instance_id.clone();
        let generation = request.generation_id_or_member_epoch;
        groups::on_coordinator(ctx, &request.group_id, move |home, partition| async move {
            coordinator::commit(
                &home,
                partition,
                &group_id,
                &member_id,
                instance_id.as_deref(),
                generation,
                to_commit,
            )
            .await
        })
        .await
        .and_then(|r| r)
    };
    let group_code = outcome.err().unwrap_or(errors::NONE);
    OffsetCommitResponse {
        topics: results
            .into_iter()
            .map(|(name, parts)| OffsetCommitResponseTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(|(partition_index, error)| OffsetCommitResponsePartition {
                        partition_index,
                        error_code: error.unwrap_or(group_code),
                        ..OffsetCommitResponsePartition::default()
                    })
                    .collect(),
                ..OffsetCommitResponseTopic::default()
            })
            .collect(),
        ..OffsetCommitResponse::default()
    }
}
