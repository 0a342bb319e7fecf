//! DescribeGroups (key 15): state, protocol and members of groups. A Stable group shows each
//! member's metadata and assignment for the chosen protocol; a group in another state shows
//! its members without them, as Kafka does. A group that does not exist is reported `Dead`
//! with no error (the versions served here predate GROUP_ID_NOT_FOUND for this API). Runs on
//! the connection's shard; each group is read on its coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use sluice_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::state::GroupState;
use crate::groups::{self};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 5);

/// Group operations (KIP-430) allowed without authorization: READ (3), DELETE (6),
/// DESCRIBE (8).
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut out = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let mut d = describe(ctx, &group_id).await;
        d.authorized_operations = if request.include_authorized_operations {
            GROUP_OPERATIONS_ALL
        } else {
            i32::MIN
        };
        out.push(d);
    }
    DescribeGroupsResponse {
        groups: out,
        ..DescribeGroupsResponse::default()
    }
}

async fn describe(ctx: &Rc<BrokerCtx>, group_id: &str) -> DescribedGroup {
    let dead = |error_code: i16| DescribedGroup {
        error_code,
        group_id: group_id.to_string(),
        group_state: GroupState::Dead.name().to_string(),
        ..DescribedGroup::default()
    };
    if group_id.is_empty() {
        return dead(errors::INVALID_GROUP_ID);
    }
    let id = group_id.to_string();
    let found = groups::on_coordinator(ctx, group_id, move |home, _| async move {
        home.state().groups.group(&id)
    })
    .await;
    let g = match found {
        Ok(Some(g)) => g,
        Ok(None) => return dead(errors::NONE),
        Err(code) => return dead(code),
    };
    let stable = g.state == GroupState::Stable;
    let protocol = g.protocol.clone().unwrap_or_default();
    DescribedGroup {
        error_code: errors::NONE,
        group_id: g.id.clone(),
        group_state: g.state.name().to_string(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol_data: if stable {
            protocol.clone()
        } else {
            String::new()
        },
        members: g
            .members
            .values()
            .map(|m| DescribedGroupMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                member_metadata: if stable {
                    m.metadata(&protocol)
                } else {
                    Default::default()
                },
                member_assignment: if stable {
                    m.assignment.clone()
                } else {
                    Default::default()
                },
                ..DescribedGroupMember::default()
            })
            .collect(),
        ..DescribedGroup::default()
    }
}
