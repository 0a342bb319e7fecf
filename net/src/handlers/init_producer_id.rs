//! InitProducerId (key 22): a producer id and epoch for an idempotent producer.
//!
//! An idempotent producer (no transactional id) gets a producer id no producer had before,
//! at epoch 0, every time it asks, as Kafka answers it: when a producer resets its sequences
//! (KIP-360: it sends its current id and epoch from v3 on) a fresh id starts it clean. The
//! partitions then deduplicate its retried batches and refuse gaps
//! (`sluice_engine::producer_state`). A transactional producer is served by the transaction
//! coordinator of its id ([`crate::txn`]): the same producer id at a bumped epoch every time
//! (fencing an older producer with the same id, and aborting its ongoing transaction first),
//! a new id once the epoch is exhausted. Runs on the connection's shard; a transactional id is
//! handled on its coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use sluice_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::producer_ids::next_producer_id;
use crate::txn::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 5);
/// The first version whose clients know PRODUCER_FENCED.
const PRODUCER_FENCED_FROM: i16 = 4;

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let (error_code, producer_id, producer_epoch) = init(ctx, &request).await;
    let error_code =
        txn::fenced_for_version(error_code, header.request_api_version, PRODUCER_FENCED_FROM);
    InitProducerIdResponse {
        throttle_time_ms: 0,
        error_code,
        producer_id,
        producer_epoch,
        ..InitProducerIdResponse::default()
    }
}

async fn init(ctx: &Rc<BrokerCtx>, request: &InitProducerIdRequest) -> (i16, i64, i16) {
    // An id without an epoch (or the other way round) is a malformed reset request.
    if (request.producer_id == -1) != (request.producer_epoch == -1) {
        return (errors::INVALID_REQUEST, -1, -1);
    }
    match request.transactional_id.as_deref() {
        // Kafka: null is an idempotent producer, an empty id a malformed request.
        Some("") => return (errors::INVALID_REQUEST, -1, -1),
        Some(id) => return init_transactional(ctx, id, request).await,
        None => {}
    }
    match next_producer_id(ctx).await {
        Ok(id) => (errors::NONE, id, 0),
        Err(e) => {
            tracing::error!(error = %e, "cannot hand out a producer id");
            (errors::KAFKA_STORAGE_ERROR, -1, -1)
        }
    }
}

/// InitProducerId for a transactional id, on its coordinator.
async fn init_transactional(
    ctx: &Rc<BrokerCtx>,
    transactional_id: &str,
    request: &InitProducerIdRequest,
) -> (i16, i64, i16) {
    let timeout_ms = request.transaction_timeout_ms;
    if timeout_ms <= 0 || timeout_ms > ctx.state().config.transaction_max_timeout_ms {
        return (errors::INVALID_TRANSACTION_TIMEOUT, -1, -1);
    }
    let expected =
        (request.producer_id != -1).then_some((request.producer_id, request.producer_epoch));
    let id = transactional_id.to_string();
    let outcome = txn::on_coordinator(ctx, transactional_id, move |home, partition| async move {
        coordinator::init_producer_id(&home, partition, &id, timeout_ms, expected).await
    })
    .await
    .and_then(|r| r);
    match outcome {
        Ok((producer_id, epoch)) => (errors::NONE, producer_id, epoch),
        Err(code) => (code, -1, -1),
    }
}
