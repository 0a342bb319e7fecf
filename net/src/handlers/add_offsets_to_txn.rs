//! AddOffsetsToTxn (key 25): adds a consumer group's `__consumer_offsets` partition to the
//! producer's ongoing transaction, so that its TxnOffsetCommit becomes visible with the
//! transaction's commit marker. The partition is the group's, by the groups module's own
//! mapping. Runs on the connection's shard; the change runs on the transaction's coordinator
//! shard.

use std::rc::Rc;

use sluice_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use sluice_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups;
use crate::txn::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);
/// The first version whose clients know PRODUCER_FENCED.
const PRODUCER_FENCED_FROM: i16 = 2;

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let code = add(ctx, request).await;
    AddOffsetsToTxnResponse {
        error_code: txn::fenced_for_version(code, header.request_api_version, PRODUCER_FENCED_FROM),
        ..AddOffsetsToTxnResponse::default()
    }
}

async fn add(ctx: &Rc<BrokerCtx>, request: AddOffsetsToTxnRequest) -> i16 {
    if request.transactional_id.is_empty() {
        return errors::INVALID_REQUEST;
    }
    if request.group_id.is_empty() {
        return errors::INVALID_GROUP_ID;
    }
    let Some(count) = groups::offsets_partition_count(ctx) else {
        return errors::COORDINATOR_NOT_AVAILABLE;
    };
    let partition = vec![(
        groups::OFFSETS_TOPIC.to_string(),
        groups::partition_for(&request.group_id, count),
    )];
    let id = request.transactional_id.clone();
    let (producer_id, producer_epoch) = (request.producer_id, request.producer_epoch);
    txn::on_coordinator(ctx, &request.transactional_id, move |home, p| async move {
        coordinator::add_partitions(&home, p, &id, producer_id, producer_epoch, &partition).await
    })
    .await
    .unwrap_or_else(|code| code)
}
