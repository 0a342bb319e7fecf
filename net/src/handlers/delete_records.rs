//! DeleteRecords (key 21): advances partitions' log start offsets.
//!
//! Offset -1 means the high watermark; an offset beyond the high watermark is
//! OFFSET_OUT_OF_RANGE; an offset at or below the current log start changes nothing. The new
//! log start is persisted by the engine before the answer, and fetches long-polling on the
//! partition are woken (an offset they wait at may have become out of range). Runs on the
//! connection's shard; each deletion runs on its partition's home shard, concurrently.

use std::rc::Rc;

use sluice_engine::types::{Offset, TopicPartition};
use sluice_protocol::messages::delete_records_request::DeleteRecordsRequest;
use sluice_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::cluster::Slot;
use crate::errors;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 2);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let snapshot = ctx.state().cluster.topics();
    let mut pending = Vec::new();
    for topic in &request.topics {
        let mut parts = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let tp = TopicPartition::new(&topic.name, p.partition_index);
            let offset = p.offset;
            let home = snapshot.shard_for(&tp);
            let ctx = ctx.clone();
            let task = glommio::spawn_local(async move {
                let Some(home) = home else {
                    return (errors::UNKNOWN_TOPIC_OR_PARTITION, -1);
                };
                let answer = ctx
                    .call(home, move |home_ctx: Rc<BrokerCtx>| async move {
                        delete_on_home(&home_ctx, tp, offset).await
                    })
                    .await;
                answer.unwrap_or((errors::NOT_LEADER_OR_FOLLOWER, -1))
            });
            parts.push((p.partition_index, task));
        }
        pending.push((topic.name.clone(), parts));
    }
    let mut topics = Vec::with_capacity(pending.len());
    for (name, parts) in pending {
        let mut partitions = Vec::with_capacity(parts.len());
        for (partition_index, task) in parts {
            let (error_code, low_watermark) = task.await;
            partitions.push(DeleteRecordsPartitionResult {
                partition_index,
                low_watermark,
                error_code,
                ..DeleteRecordsPartitionResult::default()
            });
        }
        topics.push(DeleteRecordsTopicResult {
            name,
            partitions,
            ..DeleteRecordsTopicResult::default()
        });
    }
    DeleteRecordsResponse {
        topics,
        ..DeleteRecordsResponse::default()
    }
}

/// Runs on `tp`'s home shard.
async fn delete_on_home(home: &Rc<BrokerCtx>, tp: TopicPartition, offset: i64) -> (i16, i64) {
    let partition = match home.state().cluster.slot(&tp) {
        Some(Slot::Online(p)) => p,
        Some(Slot::Offline(_)) => return (errors::KAFKA_STORAGE_ERROR, -1),
        None => return (errors::UNKNOWN_TOPIC_OR_PARTITION, -1),
    };
    // Only -1 is special; any other negative offset is simply out of range.
    if offset < -1 {
        return (errors::OFFSET_OUT_OF_RANGE, -1);
    }
    match partition.delete_records(Offset(offset)).await {
        Ok(low) => {
            home.state().notifier.notify(&tp);
            (errors::NONE, low.0)
        }
        Err(e) => {
            tracing::warn!(%tp, offset, error = %e, "delete records failed");
            (e.kafka_code(), -1)
        }
    }
}
