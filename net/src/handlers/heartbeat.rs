//! Heartbeat (key 12): a member tells its coordinator it is alive, and learns whether a
//! rebalance is under way (REBALANCE_IN_PROGRESS: rejoin).
//!
//! The group's coordinator shard checks member, static instance and generation (see
//! `groups::state`). Runs on the connection's shard; the check runs on the coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::heartbeat_request::HeartbeatRequest;
use sluice_protocol::messages::heartbeat_response::HeartbeatResponse;
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let error_code = if request.group_id.is_empty() {
        errors::INVALID_GROUP_ID
    } else {
        let group_id = request.group_id.clone();
        groups::on_coordinator(ctx, &request.group_id, move |home, _| async move {
            coordinator::heartbeat(
                &home,
                &group_id,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
            )
        })
        .await
        .unwrap_or_else(|code| code)
    };
    HeartbeatResponse {
        error_code,
        ..HeartbeatResponse::default()
    }
}
