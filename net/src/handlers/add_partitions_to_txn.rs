//! AddPartitionsToTxn (key 24): adds partitions to a producer's ongoing transaction (and
//! starts it). Versions 0-3 come from clients with one transaction; versions 4+ are the
//! batched broker form (KIP-890) with several transactions, each either added or, with
//! `verify_only`, checked (is every partition in the ongoing transaction?). Partitions of
//! topics that do not exist are UNKNOWN_TOPIC_OR_PARTITION and the others of the same
//! transaction OPERATION_NOT_ATTEMPTED, as Kafka answers. Runs on the connection's shard; the
//! change runs on the transaction's coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
};
use sluice_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnResult,
    AddPartitionsToTxnTopicResult,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::txn::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 5);
/// The first version whose clients know PRODUCER_FENCED.
const PRODUCER_FENCED_FROM: i16 = 2;

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let version = header.request_api_version;
    if version <= 3 {
        let results = one_transaction(
            ctx,
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            false,
            &request.v3_and_below_topics,
        )
        .await
        .into_iter()
        .map(|(t, p, code)| {
            (
                t,
                p,
                txn::fenced_for_version(code, version, PRODUCER_FENCED_FROM),
            )
        })
        .collect();
        return AddPartitionsToTxnResponse {
            results_by_topic_v3_and_below: by_topic(results),
            ..AddPartitionsToTxnResponse::default()
        };
    }
    let mut results_by_transaction = Vec::with_capacity(request.transactions.len());
    for t in request.transactions {
        let results = one_transaction(
            ctx,
            t.transactional_id.clone(),
            t.producer_id,
            t.producer_epoch,
            t.verify_only,
            &t.topics,
        )
        .await;
        results_by_transaction.push(AddPartitionsToTxnResult {
            transactional_id: t.transactional_id,
            topic_results: by_topic(results),
            ..AddPartitionsToTxnResult::default()
        });
    }
    AddPartitionsToTxnResponse {
        error_code: errors::NONE,
        results_by_transaction,
        ..AddPartitionsToTxnResponse::default()
    }
}

/// Adds (or verifies) the partitions of one transaction: an error per partition.
async fn one_transaction(
    ctx: &Rc<BrokerCtx>,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<(String, i32, i16)> {
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), *p)))
        .collect();
    let all = |code: i16| -> Vec<(String, i32, i16)> {
        wanted.iter().map(|(t, p)| (t.clone(), *p, code)).collect()
    };
    if transactional_id.is_empty() {
        return all(errors::INVALID_REQUEST);
    }
    let partitions = match txn::known_partitions(ctx, &wanted) {
        Ok(p) => p,
        Err(rows) => return rows,
    };
    let id = transactional_id.clone();
    let asked = partitions.clone();
    let outcome = txn::on_coordinator(ctx, &transactional_id, move |home, partition| async move {
        if verify_only {
            coordinator::verify_partitions(&home, &id, producer_id, producer_epoch, &asked)
        } else {
            let code = coordinator::add_partitions(
                &home,
                partition,
                &id,
                producer_id,
                producer_epoch,
                &asked,
            )
            .await;
            Ok(vec![code; asked.len()])
        }
    })
    .await
    .and_then(|r| r);
    match outcome {
        Ok(codes) => partitions
            .into_iter()
            .zip(codes)
            .map(|((t, p), code)| (t, p, code))
            .collect(),
        Err(code) => all(code),
    }
}

/// Groups per-partition results by topic, topics in the order they first appear.
fn by_topic(results: Vec<(String, i32, i16)>) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for (topic, partition, code) in results {
        let row = AddPartitionsToTxnPartitionResult {
            partition_index: partition,
            partition_error_code: code,
            ..AddPartitionsToTxnPartitionResult::default()
        };
        match out.iter_mut().find(|t| t.name == topic) {
            Some(t) => t.results_by_partition.push(row),
            None => out.push(AddPartitionsToTxnTopicResult {
                name: topic,
                results_by_partition: vec![row],
                ..AddPartitionsToTxnTopicResult::default()
            }),
        }
    }
    out
}
