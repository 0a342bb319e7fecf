//! JoinGroup (key 11): a member joins (or rejoins) a group and waits until the rebalance
//! completes; the leader's answer carries every member's metadata for its assignor.
//!
//! KIP-394 (v4+): a member without id first gets MEMBER_ID_REQUIRED with its new id and must
//! join again with it. Static members (v5+, `group.instance.id`) keep their place across
//! restarts. The wait happens on the coordinator shard; this connection's shard only awaits
//! the answer. Runs on the connection's shard.

use std::net::SocketAddr;
use std::rc::Rc;

use sluice_protocol::messages::join_group_request::JoinGroupRequest;
use sluice_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::coordinator;
use crate::groups::state::JoinRequest;
use crate::groups::{self, state::JoinReply};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 9);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    handle_from(ctx, header, request, None).await
}

/// [`handle`] for a client whose address is known: it becomes the member's host, written as
/// Kafka writes it (`/` and the IP address).
///
/// Runs on the connection's shard.
pub async fn handle_from(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: JoinGroupRequest,
    peer: Option<SocketAddr>,
) -> JoinGroupResponse {
    let version = header.request_api_version;
    let reply = if request.group_id.is_empty() {
        error_reply(errors::INVALID_GROUP_ID, &request.member_id)
    } else {
        let member_id = request.member_id.clone();
        let group_id = request.group_id.clone();
        let req = JoinRequest {
            member_id: request.member_id,
            instance_id: request.group_instance_id,
            client_id: header.client_id.clone().unwrap_or_default(),
            client_host: peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
            session_timeout_ms: request.session_timeout_ms,
            // v0 has no rebalance timeout: the session timeout serves as both, as in Kafka.
            rebalance_timeout_ms: if request.rebalance_timeout_ms < 0 {
                request.session_timeout_ms
            } else {
                request.rebalance_timeout_ms
            },
            protocol_type: request.protocol_type,
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name, p.metadata))
                .collect(),
            require_known_member_id: version >= 4,
            supports_skip_assignment: version >= 9,
            // Made on the coordinator shard, which numbers its members.
            new_member_id: String::new(),
        };
        groups::on_coordinator(ctx, &request.group_id, move |home, _| async move {
            coordinator::join(&home, group_id, req).await
        })
        .await
        .unwrap_or_else(|code| error_reply(code, &member_id))
    };
    JoinGroupResponse {
        error_code: reply.error,
        generation_id: reply.generation,
        // Before v7 these strings are not nullable: an error answer carries empty ones.
        protocol_type: if version >= 7 {
            reply.protocol_type
        } else {
            Some(reply.protocol_type.unwrap_or_default())
        },
        protocol_name: if version >= 7 {
            reply.protocol_name
        } else {
            Some(reply.protocol_name.unwrap_or_default())
        },
        leader: reply.leader,
        skip_assignment: reply.skip_assignment,
        member_id: reply.member_id,
        members: reply
            .members
            .into_iter()
            .map(
                |(member_id, group_instance_id, metadata)| JoinGroupResponseMember {
                    member_id,
                    group_instance_id,
                    metadata,
                    ..JoinGroupResponseMember::default()
                },
            )
            .collect(),
        ..JoinGroupResponse::default()
    }
}

fn error_reply(error: i16, member_id: &str) -> JoinReply {
    JoinReply {
        error,
        generation: -1,
        member_id: member_id.to_string(),
        ..JoinReply::default()
    }
}
