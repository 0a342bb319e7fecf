//! SyncGroup (key 14): after a JoinGroup, every member asks for its assignment; the leader's
//! request carries everyone's. Followers wait on the coordinator shard until the leader's
//! assignment is stored durably in `__consumer_offsets`. Runs on the connection's shard.

use std::rc::Rc;

use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::messages::sync_group_request::SyncGroupRequest;
use sluice_protocol::messages::sync_group_response::SyncGroupResponse;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::coordinator::{self, SyncCall};
use crate::groups::{self, state::SyncReply};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 5);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let reply = if request.group_id.is_empty() {
        SyncReply {
            error: errors::INVALID_GROUP_ID,
            ..SyncReply::default()
        }
    } else {
        let call = SyncCall {
            group_id: request.group_id.clone(),
            member_id: request.member_id,
            instance_id: request.group_instance_id,
            generation: request.generation_id,
            protocol_type: request.protocol_type,
            protocol_name: request.protocol_name,
            assignments: request
                .assignments
                .into_iter()
                .map(|a| (a.member_id, a.assignment))
                .collect(),
        };
        groups::on_coordinator(ctx, &request.group_id, move |home, _| async move {
            coordinator::sync(&home, call).await
        })
        .await
        .unwrap_or_else(|error| SyncReply {
            error,
            ..SyncReply::default()
        })
    };
    SyncGroupResponse {
        error_code: reply.error,
        protocol_type: reply.protocol_type,
        protocol_name: reply.protocol_name,
        assignment: reply.assignment,
        ..SyncGroupResponse::default()
    }
}
