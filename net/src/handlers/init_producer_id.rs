//! InitProducerId (key 22): a producer id and epoch for an idempotent producer.
//!
//! An idempotent producer (no transactional id) gets a producer id no producer had before,
//! at epoch 0, every time it asks, as Kafka answers it: when a producer resets its sequences
//! (KIP-360: it sends its current id and epoch from v3 on) a fresh id starts it clean. The
//! partitions then deduplicate its retried batches and refuse gaps
//! (`sluice_engine::producer_state`). Transactional ids need the transaction coordinator,
//! which this broker does not have yet; they are answered COORDINATOR_NOT_AVAILABLE.
//! Runs on the connection's shard.

use std::rc::Rc;

use sluice_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use sluice_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::producer_ids::next_producer_id;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 5);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let (error_code, producer_id, producer_epoch) = init(ctx, &request).await;
    InitProducerIdResponse {
        throttle_time_ms: 0,
        error_code,
        producer_id,
        producer_epoch,
        ..InitProducerIdResponse::default()
    }
}

async fn init(ctx: &Rc<BrokerCtx>, request: &InitProducerIdRequest) -> (i16, i64, i16) {
    if request
        .transactional_id
        .as_deref()
        .is_some_and(|id| !id.is_empty())
    {
        return (errors::COORDINATOR_NOT_AVAILABLE, -1, -1);
    }
    // An id without an epoch (or the other way round) is a malformed reset request.
    if (request.producer_id == -1) != (request.producer_epoch == -1) {
        return (errors::INVALID_REQUEST, -1, -1);
    }
    match next_producer_id(ctx).await {
        Ok(id) => (errors::NONE, id, 0),
        Err(e) => {
            tracing::error!(error = %e, "cannot hand out a producer id");
            (errors::KAFKA_STORAGE_ERROR, -1, -1)
        }
    }
}
