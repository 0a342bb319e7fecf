//! ListTransactions (key 66): the transactional ids of the broker with their producer id and
//! state, filtered by state names (unknown names are reported back, as Kafka does), producer
//! ids and, from v1, by how long the transaction has been running. Runs on the connection's
//! shard; every coordinator shard is asked.

use std::rc::Rc;

use sluice_engine::partition::now_ms;
use sluice_protocol::messages::list_transactions_request::ListTransactionsRequest;
use sluice_protocol::messages::list_transactions_response::{
    ListTransactionsResponse, TransactionState,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::txn::{self, state::TxnState};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 1);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut states = Vec::new();
    let mut unknown_state_filters = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name) {
            Some(s) => states.push(s),
            None => unknown_state_filters.push(name.clone()),
        }
    }
    let listing = match txn::list_transactions(ctx).await {
        Ok(l) => l,
        Err(error_code) => {
            return ListTransactionsResponse {
                error_code,
                unknown_state_filters,
                ..ListTransactionsResponse::default()
            }
        }
    };
    let now = now_ms();
    let transaction_states = listing
        .into_iter()
        .filter(|t| request.state_filters.is_empty() || states.contains(&t.state))
        .filter(|t| {
            request.producer_id_filters.is_empty()
                || request.producer_id_filters.contains(&t.producer_id)
        })
        // Kafka compares with the start time even when there is no transaction (-1), so an
        // idle id always passes a duration filter.
        .filter(|t| request.duration_filter < 0 || now - t.start_ms > request.duration_filter)
        .map(|t| TransactionState {
            transactional_id: t.transactional_id,
            producer_id: t.producer_id,
            transaction_state: t.state.name().to_string(),
            ..TransactionState::default()
        })
        .collect();
    ListTransactionsResponse {
        error_code: errors::NONE,
        unknown_state_filters,
        transaction_states,
        ..ListTransactionsResponse::default()
    }
}
