//! DescribeTransactions (key 65): the state of transactional ids as their coordinator holds
//! it: producer id and epoch, state, timeout, start time, and the partitions of the ongoing
//! transaction (while markers are written, those still without one). An id the coordinator
//! does not know is TRANSACTIONAL_ID_NOT_FOUND. Runs on the connection's shard; each id is
//! read on its coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use sluice_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::txn;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 0);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut transaction_states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let outcome = if id.is_empty() {
            Err(errors::INVALID_REQUEST)
        } else {
            txn::describe_transaction(ctx, &id).await
        };
        let state = match outcome {
            Ok(t) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, p) in t.partitions {
                    match topics.iter_mut().find(|d| d.topic == topic) {
                        Some(d) => d.partitions.push(p),
                        None => topics.push(TopicData {
                            topic,
                            partitions: vec![p],
                            ..TopicData::default()
                        }),
                    }
                }
                TransactionState {
                    error_code: errors::NONE,
                    transactional_id: id,
                    transaction_state: t.state.name().to_string(),
                    transaction_timeout_ms: t.timeout_ms,
                    transaction_start_time_ms: t.start_ms,
                    producer_id: t.producer_id,
                    producer_epoch: t.producer_epoch,
                    topics,
                    ..TransactionState::default()
                }
            }
            Err(error_code) => TransactionState {
                error_code,
                transactional_id: id,
                producer_id: -1,
                producer_epoch: -1,
                transaction_start_time_ms: -1,
                ..TransactionState::default()
            },
        };
        transaction_states.push(state);
    }
    DescribeTransactionsResponse {
        transaction_states,
        ..DescribeTransactionsResponse::default()
    }
}
