//! LeaveGroup (key 13): members leave a group at once instead of waiting for their session
//! to expire: one member id (v0-v2) or a batch of members by member id and/or static instance
//! id (v3+, each answered on its own). The group rebalances without them. Runs on the
//! connection's shard; the change runs on the coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::leave_group_request::LeaveGroupRequest;
use sluice_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::state::Leaving;
use crate::groups::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 5);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let batched = header.request_api_version >= 3;
    let leaving: Vec<Leaving> = if batched {
        request
            .members
            .iter()
            .map(|m| Leaving {
                member_id: m.member_id.clone(),
                instance_id: m.group_instance_id.clone(),
            })
            .collect()
    } else {
        vec![Leaving {
            member_id: request.member_id.clone(),
            instance_id: None,
        }]
    };
    let outcome = if request.group_id.is_empty() {
        Err(errors::INVALID_GROUP_ID)
    } else {
        let group_id = request.group_id.clone();
        let call = leaving.clone();
        groups::on_coordinator(ctx, &request.group_id, move |home, _| async move {
            coordinator::leave(&home, &group_id, call).await
        })
        .await
        .and_then(|r| r)
    };
    match outcome {
        Err(error_code) => LeaveGroupResponse {
            error_code,
            ..LeaveGroupResponse::default()
        },
        Ok(codes) if !batched => LeaveGroupResponse {
            error_code: codes.first().copied().unwrap_or(errors::NONE),
            ..LeaveGroupResponse::default()
        },
        Ok(codes) => LeaveGroupResponse {
            error_code: errors::NONE,
            members: leaving
                .into_iter()
                .zip(codes)
                .map(|(l, error_code)| MemberResponse {
                    member_id: l.member_id,
                    group_instance_id: l.instance_id,
                    error_code,
                    ..MemberResponse::default()
                })
                .collect(),
            ..LeaveGroupResponse::default()
        },
    }
}
