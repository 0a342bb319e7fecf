//! EndTxn (key 26): commits or aborts the producer's ongoing transaction. The answer goes out
//! once the PrepareCommit/PrepareAbort is durable in `__transaction_state`, as Kafka answers;
//! the markers are written to every partition of the transaction afterwards, and until they
//! are, the transactional id answers CONCURRENT_TRANSACTIONS. Version 5 (KIP-890 part 2, an
//! epoch bump per transaction) is not served. Runs on the connection's shard; the change runs
//! on the transaction's coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::end_txn_request::EndTxnRequest;
use sluice_protocol::messages::end_txn_response::EndTxnResponse;
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::txn::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);
/// The first version whose clients know PRODUCER_FENCED.
const PRODUCER_FENCED_FROM: i16 = 2;

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: EndTxnRequest,
) -> EndTxnResponse {
    let code = if request.transactional_id.is_empty() {
        errors::INVALID_REQUEST
    } else {
        let id = request.transactional_id.clone();
        let (producer_id, epoch, commit) = (
            request.producer_id,
            request.producer_epoch,
            request.committed,
        );
        txn::on_coordinator(ctx, &request.transactional_id, move |home, p| async move {
            coordinator::end_txn(&home, p, &id, producer_id, epoch, commit).await
        })
        .await
        .unwrap_or_else(|code| code)
    };
    EndTxnResponse {
        error_code: txn::fenced_for_version(code, header.request_api_version, PRODUCER_FENCED_FROM),
        ..EndTxnResponse::default()
    }
}
