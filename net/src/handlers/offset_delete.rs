//! OffsetDelete (key 47, KIP-496): deletes committed offsets of a group. A group with members
//! keeps the offsets of topics its members subscribe to (GROUP_SUBSCRIBED_TO_TOPIC); a group
//! that does not exist is GROUP_ID_NOT_FOUND. Deletions are tombstones in
//! `__consumer_offsets`, written with fdatasync before the answer. Runs on the connection's
//! shard; the deletion runs on the coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::offset_delete_request::OffsetDeleteRequest;
use sluice_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 0);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let snapshot = ctx.state().cluster.topics();
    let mut rows: Vec<(String, i32, Option<i16>)> = Vec::new();
    let mut targets = Vec::new();
    for t in &request.topics {
        let count = snapshot.topic(&t.name).map(|m| m.partitions);
        for p in &t.partitions {
            if count.is_some_and(|c| (0..c).contains(&p.partition_index)) {
                targets.push((t.name.clone(), p.partition_index));
                rows.push((t.name.clone(), p.partition_index, None));
            } else {
                rows.push((
                    t.name.clone(),
                    p.partition_index,
                    Some(errors::UNKNOWN_TOPIC_OR_PARTITION),
                ));
            }
        }
    }
    let outcome = if request.group_id.is_empty() {
        Err(errors::INVALID_GROUP_ID)
    } else {
        let group_id = request.group_id.clone();
        groups::on_coordinator(ctx, &request.group_id, move |home, partition| async move {
            coordinator::delete_offsets(&home, partition, &group_id, targets).await
        })
        .await
        .and_then(|r| r)
    };
    let codes = match outcome {
        Ok(codes) => codes,
        Err(error_code) => {
            return OffsetDeleteResponse {
                error_code,
                ..OffsetDeleteResponse::default()
            }
        }
    };
    let mut codes = codes.into_iter();
    let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
    for (topic, partition_index, error) in rows {
        let error_code = match error {
            Some(e) => e,
            None => codes.next().unwrap_or(errors::NONE),
        };
        let part = OffsetDeleteResponsePartition {
            partition_index,
            error_code,
        };
        match topics.iter_mut().find(|t| t.name == topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(OffsetDeleteResponseTopic {
                name: topic,
                partitions: vec![part],
            }),
        }
    }
    OffsetDeleteResponse {
        error_code: errors::NONE,
        topics,
        ..OffsetDeleteResponse::default()
    }
}
