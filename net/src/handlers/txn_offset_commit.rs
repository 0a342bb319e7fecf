//! TxnOffsetCommit (key 28): a transactional producer commits a consumer group's offsets as
//! part of its transaction (`send_offsets_to_transaction`, after AddOffsetsToTxn made the
//! group's `__consumer_offsets` partition part of it).
//!
//! The offsets are written to the group's partition as a transactional batch of the producer,
//! durably, before the answer; they stay pending in the group, invisible to OffsetFetch, until
//! the transaction's marker commits or aborts them (`groups::coordinator::txn_commit` and
//! `txn_marker_written`). From v3 the request carries the member, instance and generation of
//! the consumer whose offsets these are, checked as for OffsetCommit (UNKNOWN_MEMBER_ID,
//! ILLEGAL_GENERATION, FENCED_INSTANCE_ID) but without REBALANCE_IN_PROGRESS; earlier versions
//! carry none and are not checked. A producer epoch older than the one the partition knows is
//! INVALID_PRODUCER_EPOCH. Partitions of unknown topics are UNKNOWN_TOPIC_OR_PARTITION and
//! metadata longer than `offset.metadata.max.bytes` OFFSET_METADATA_TOO_LARGE, each on its own;
//! group-level errors go to every other partition (there is no top-level error field). Before
//! v2 COORDINATOR_LOAD_IN_PROGRESS is answered as COORDINATOR_NOT_AVAILABLE, which clients of
//! that age know to retry (as Kafka does).
//!
//! Runs on the connection's shard; the commit runs on the group's coordinator shard.

use std::rc::Rc;

use sluice_engine::partition::now_ms;
use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequest;
use sluice_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::coordinator::{self, OffsetToCommit, TxnCommitCall};
use crate::groups::state::CommittedOffset;
use crate::groups::{self, OFFSET_METADATA_BYTES_MAX};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let now = now_ms();
    let snapshot = ctx.state().cluster.topics();
    // Per topic, each partition's own error, or None when it goes to the coordinator.
    type TopicResults = (String, Vec<(i32, Option<i16>)>);
    let mut results: Vec<TopicResults> = Vec::with_capacity(request.topics.len());
    let mut offsets = Vec::new();
    for t in &request.topics {
        let count = snapshot.topic(&t.name).map(|m| m.partitions);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let metadata = p.committed_metadata.clone().unwrap_or_default();
            let error = if !count.is_some_and(|c| (0..c).contains(&p.partition_index)) {
                Some(errors::UNKNOWN_TOPIC_OR_PARTITION)
            } else if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                Some(errors::OFFSET_METADATA_TOO_LARGE)
            } else {
                None
            };
            if error.is_none() {
                offsets.push(OffsetToCommit {
                    topic: t.name.clone(),
                    partition: p.partition_index,
                    offset: CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata,
                        commit_timestamp_ms: now,
                        expire_timestamp_ms: None,
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
    } else if offsets.is_empty() {
        // Nothing reaches the coordinator (Kafka answers such a request without it).
        Ok(())
    } else {
        let call = TxnCommitCall {
            group_id: request.group_id.clone(),
            member_id: request.member_id.clone(),
            instance_id: request.group_instance_id.clone(),
            generation: request.generation_id,
            producer_id: request.producer_id,
            producer_epoch: request.producer_epoch,
            offsets,
        };
        groups::on_coordinator(ctx, &request.group_id, move |home, partition| async move {
            coordinator::txn_commit(&home, partition, call).await
        })
        .await
        .and_then(|r| r)
    };
    let mut group_code = outcome.err().unwrap_or(errors::NONE);
    if header.request_api_version < 2 && group_code == errors::COORDINATOR_LOAD_IN_PROGRESS {
        group_code = errors::COORDINATOR_NOT_AVAILABLE;
    }
    TxnOffsetCommitResponse {
        topics: results
            .into_iter()
            .map(|(name, parts)| TxnOffsetCommitResponseTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(
                        |(partition_index, error)| TxnOffsetCommitResponsePartition {
                            partition_index,
                            error_code: error.unwrap_or(group_code),
                            ..TxnOffsetCommitResponsePartition::default()
                        },
                    )
                    .collect(),
                ..TxnOffsetCommitResponseTopic::default()
            })
            .collect(),
        ..TxnOffsetCommitResponse::default()
    }
}
