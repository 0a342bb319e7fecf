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
//! With `transaction.partition.verification.enable` (KIP-890 part 1, on by default as in Kafka
//! 3.6+) the transaction coordinator first confirms that the group's `__consumer_offsets`
//! partition is in the producer's ongoing transaction (AddOffsetsToTxn put it there): offsets
//! written outside one would open a transaction on the partition that no marker ever ends,
//! leaving them pending for good. A partition outside the transaction is INVALID_TXN_STATE
//! (TRANSACTION_ABORTABLE from v4, for clients that know it), an old epoch
//! INVALID_PRODUCER_EPOCH, a transaction being ended CONCURRENT_TRANSACTIONS, a coordinator
//! that cannot answer yet COORDINATOR_LOAD_IN_PROGRESS (retried without a lookup).
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
use crate::groups::{self, OFFSETS_TOPIC, OFFSET_METADATA_BYTES_MAX};
use crate::txn;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);

/// First version whose clients handle TRANSACTION_ABORTABLE.
const TRANSACTION_ABORTABLE_MIN_VERSION: i16 = 4;

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
    } else if let Err(code) = verify(ctx, header.request_api_version, &request).await {
        Err(code)
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
    if group_code != errors::NONE {
        tracing::debug!(
            group = %request.group_id,
            transactional_id = %request.transactional_id,
            code = group_code,
            "transactional offset commit refused"
        );
    }
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

/// Asks the transaction coordinator whether the group's `__consumer_offsets` partition is in
/// the producer's ongoing transaction (when verification is on); the error for the whole
/// request otherwise, as Kafka maps the answers for TxnOffsetCommit.
///
/// Runs on the connection's shard; the check runs on the transaction coordinator's shard.
async fn verify(
    ctx: &Rc<BrokerCtx>,
    version: i16,
    request: &TxnOffsetCommitRequest,
) -> Result<(), i16> {
    if !ctx.state().config.transaction_partition_verification_enable {
        return Ok(());
    }
    let Some(count) = groups::offsets_partition_count(ctx) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    let partition = (
        OFFSETS_TOPIC.to_string(),
        groups::partition_for(&request.group_id, count),
    );
    let id = request.transactional_id.clone();
    let (producer_id, producer_epoch) = (request.producer_id, request.producer_epoch);
    let answer = txn::on_coordinator(ctx, &request.transactional_id, move |home, _| async move {
        txn::coordinator::verify_partitions(&home, &id, producer_id, producer_epoch, &[partition])
    })
    .await
    .and_then(|r| r);
    match answer {
        Ok(codes) => match codes.first().copied().unwrap_or(errors::INVALID_TXN_STATE) {
            errors::NONE => Ok(()),
            errors::INVALID_TXN_STATE if version >= TRANSACTION_ABORTABLE_MIN_VERSION => {
                Err(errors::TRANSACTION_ABORTABLE)
            }
            code => Err(code),
        },
        Err(errors::PRODUCER_FENCED) => Err(errors::INVALID_PRODUCER_EPOCH),
        Err(
            errors::COORDINATOR_LOAD_IN_PROGRESS
            | errors::COORDINATOR_NOT_AVAILABLE
            | errors::NOT_COORDINATOR,
        ) => Err(errors::COORDINATOR_LOAD_IN_PROGRESS),
        Err(code) => Err(code),
    }
}
