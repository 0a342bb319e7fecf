//! WriteTxnMarkers (key 27): writes commit/abort markers to partitions.
//!
//! In Kafka this is how a transaction coordinator reaches the leaders of a transaction's
//! partitions; here the coordinator calls [`crate::txn_markers::write_markers`] directly, and
//! this API serves the same function to tools and to other brokers. Each marker of the request
//! is written concurrently; each partition answers once its marker is durable, with the
//! precise error otherwise (see `write_markers`). Runs on the connection's shard.

use std::rc::Rc;

use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::messages::write_txn_markers_request::WriteTxnMarkersRequest;
use sluice_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    WriteTxnMarkersResponse,
};

use crate::broker::BrokerCtx;
use crate::txn_markers::write_markers;

/// Versions served (all there are).
pub const VERSIONS: (i16, i16) = (0, 1);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let tasks: Vec<_> = request
        .markers
        .into_iter()
        .map(|marker| {
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                let partitions: Vec<(String, i32)> = marker
                    .topics
                    .iter()
                    .flat_map(|t| t.partition_indexes.iter().map(|&p| (t.name.clone(), p)))
                    .collect();
                let codes = write_markers(
                    &ctx,
                    marker.producer_id,
                    marker.producer_epoch,
                    marker.transaction_result,
                    marker.coordinator_epoch,
                    &partitions,
                )
                .await;
                // Answer in the request's shape: the codes come back in `partitions` order.
                let mut codes = codes.into_iter();
                let topics = marker
                    .topics
                    .into_iter()
                    .map(|t| WritableTxnMarkerTopicResult {
                        partitions: t
                            .partition_indexes
                            .iter()
                            .map(|&partition_index| WritableTxnMarkerPartitionResult {
                                partition_index,
                                error_code: codes
                                    .next()
                                    .map_or(crate::errors::UNKNOWN_SERVER_ERROR, |(_, _, c)| c),
                                ..WritableTxnMarkerPartitionResult::default()
                            })
                            .collect(),
                        name: t.name,
                        ..WritableTxnMarkerTopicResult::default()
                    })
                    .collect();
                WritableTxnMarkerResult {
                    producer_id: marker.producer_id,
                    topics,
                    ..WritableTxnMarkerResult::default()
                }
            })
        })
        .collect();
    let mut markers = Vec::with_capacity(tasks.len());
    for task in tasks {
        markers.push(task.await);
    }
    WriteTxnMarkersResponse {
        markers,
        ..WriteTxnMarkersResponse::default()
    }
}
