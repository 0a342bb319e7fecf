//! ListGroups (key 16): every group of the broker, gathered from every coordinator shard;
//! filtered by state (v4+) and type (v5+: all groups here are `classic`). Runs on the
//! connection's shard.

use std::rc::Rc;

use sluice_protocol::messages::list_groups_request::ListGroupsRequest;
use sluice_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 5);

/// The type of every group this broker coordinates.
const GROUP_TYPE_CLASSIC: &str = "classic";

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let types_ok = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(GROUP_TYPE_CLASSIC));
    let groups = if types_ok {
        groups::list_groups(ctx).await
    } else {
        Vec::new()
    };
    ListGroupsResponse {
        error_code: errors::NONE,
        groups: groups
            .into_iter()
            .filter(|g| {
                request.states_filter.is_empty()
                    || request
                        .states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| ListedGroup {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                group_state: g.state.name().to_string(),
                group_type: GROUP_TYPE_CLASSIC.to_string(),
                ..ListedGroup::default()
            })
            .collect(),
        ..ListGroupsResponse::default()
    }
}
