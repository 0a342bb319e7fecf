//! DeleteGroups (key 42): removes groups without members, with their committed offsets
//! (tombstones in `__consumer_offsets`, written with fdatasync before the answer). A group
//! with members is NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND. Runs on the
//! connection's shard; each deletion runs on the group's coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use sluice_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 2);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let error_code = if group_id.is_empty() {
            errors::INVALID_GROUP_ID
        } else {
            let id = group_id.clone();
            groups::on_coordinator(ctx, &group_id, move |home, partition| async move {
                coordinator::delete_group(&home, partition, &id).await
            })
            .await
            .unwrap_or_else(|code| code)
        };
        results.push(DeletableGroupResult {
            group_id,
            error_code,
            ..DeletableGroupResult::default()
        });
    }
    DeleteGroupsResponse {
        results,
        ..DeleteGroupsResponse::default()
    }
}
