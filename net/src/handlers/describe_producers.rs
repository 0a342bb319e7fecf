//! DescribeProducers (key 61): the active idempotent and transactional producers of
//! partitions, read from each partition's producer state on its home shard (what Kafka's
//! `kafka-transactions.sh describe-producers` and `find-hanging` show): producer id and epoch,
//! the last sequence written (-1 when none is known, as for the sequence-less batches that
//! coordinators write), the timestamp of the last batch, the epoch of the transaction
//! coordinator that wrote the producer's last marker, and the first offset of its open
//! transaction (-1 when none is open).
//!
//! Errors are per partition, as Kafka answers them: an invalid topic name is
//! INVALID_TOPIC_EXCEPTION, an unknown topic or partition UNKNOWN_TOPIC_OR_PARTITION, an
//! offline partition KAFKA_STORAGE_ERROR. Runs on the connection's shard; each partition is
//! read on its home shard.

use std::rc::Rc;

use sluice_engine::producer_state::{ProducerEntry, NO_SEQUENCE};
use sluice_engine::types::TopicPartition;
use sluice_protocol::messages::describe_producers_request::DescribeProducersRequest;
use sluice_protocol::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::cluster;
use crate::errors;
use crate::topics::validate_topic_name;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 0);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let topic_error = match validate_topic_name(&t.name) {
            Err(e) => Some((errors::INVALID_TOPIC_EXCEPTION, Some(e.to_string()))),
            Ok(()) if ctx.state().cluster.topics().topic(&t.name).is_none() => {
                Some((errors::UNKNOWN_TOPIC_OR_PARTITION, None))
            }
            Ok(()) => None,
        };
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for p in t.partition_indexes {
            let answer = match &topic_error {
                Some((code, message)) => error(p, *code, message.clone()),
                None => describe(ctx, TopicPartition::new(&t.name, p)).await,
            };
            partitions.push(answer);
        }
        topics.push(TopicResponse {
            name: t.name,
            partitions,
            ..TopicResponse::default()
        });
    }
    DescribeProducersResponse {
        topics,
        ..DescribeProducersResponse::default()
    }
}

/// The active producers of one partition.
async fn describe(ctx: &Rc<BrokerCtx>, tp: TopicPartition) -> PartitionResponse {
    let index = tp.partition;
    let states = cluster::with_partition(ctx, tp, |p| async move {
        p.producer_states()
            .into_iter()
            .map(|(id, e)| producer(id, &e))
            .collect::<Vec<_>>()
    })
    .await;
    match states {
        Ok(mut active_producers) => {
            active_producers.sort_by_key(|s| s.producer_id);
            PartitionResponse {
                partition_index: index,
                error_code: errors::NONE,
                active_producers,
                ..PartitionResponse::default()
            }
        }
        Err(e) => error(index, e.kafka_code(), Some(e.to_string())),
    }
}

/// One producer as DescribeProducers reports it. The last timestamp is the newest batch's
/// max timestamp, or the broker time of the producer's last write when no batch is cached
/// (only a marker was written in its current epoch).
fn producer(producer_id: i64, e: &ProducerEntry) -> ProducerState {
    let last = e.batches().last();
    ProducerState {
        producer_id,
        producer_epoch: i32::from(e.epoch),
        last_sequence: e.last_seq().unwrap_or(NO_SEQUENCE),
        last_timestamp: last.map_or(e.last_append_ms, |b| b.max_timestamp),
        coordinator_epoch: e.coordinator_epoch,
        current_txn_start_offset: e.txn_first_offset.map_or(-1, |o| o.0),
        ..ProducerState::default()
    }
}

fn error(
    partition_index: i32,
    error_code: i16,
    error_message: Option<String>,
) -> PartitionResponse {
    PartitionResponse {
        partition_index,
        error_code,
        error_message,
        ..PartitionResponse::default()
    }
}
