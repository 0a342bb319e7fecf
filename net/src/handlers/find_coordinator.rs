//! FindCoordinator (key 10): which broker coordinates a group (key type 0) or a transactional
//! id (key type 1), one key (v0-v3) or a batch of keys (v4+).
//!
//! A single node coordinates every group and transactional id; the answer is this broker once
//! `__consumer_offsets` (groups) or `__transaction_state` (transactions) exists
//! (COORDINATOR_NOT_AVAILABLE before, which clients retry). Which shard holds the key is
//! internal: any connection reaches it through the mesh. Share coordinators (key type 2) are
//! INVALID_REQUEST, as from a Kafka broker without share groups. Runs on the connection's
//! shard.

use std::rc::Rc;

use sluice_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use sluice_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups;
use crate::txn;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 6);

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let version = header.request_api_version;
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| coordinator(ctx, key, request.key_type))
            .collect();
        return FindCoordinatorResponse {
            coordinators,
            ..FindCoordinatorResponse::default()
        };
    }
    let c = coordinator(ctx, request.key, request.key_type);
    FindCoordinatorResponse {
        error_code: c.error_code,
        error_message: c.error_message,
        node_id: c.node_id,
        host: c.host,
        port: c.port,
        ..FindCoordinatorResponse::default()
    }
}

/// The coordinator of one key.
fn coordinator(ctx: &BrokerCtx, key: String, key_type: i8) -> Coordinator {
    let failed = |key: String, error_code: i16, message: String| Coordinator {
        key,
        node_id: -1,
        host: String::new(),
        port: -1,
        error_code,
        error_message: Some(message),
        ..Coordinator::default()
    };
    let (exists, topic) = match key_type {
        KEY_TYPE_GROUP => (
            groups::offsets_partition_count(ctx).is_some(),
            groups::OFFSETS_TOPIC,
        ),
        KEY_TYPE_TRANSACTION => (txn::txn_partition_count(ctx).is_some(), txn::TXN_TOPIC),
        other => {
            return failed(
                key,
                errors::INVALID_REQUEST,
                format!("coordinator key type {other} is not supported"),
            )
        }
    };
    if !exists {
        return failed(
            key,
            errors::COORDINATOR_NOT_AVAILABLE,
            format!("{topic} does not exist yet"),
        );
    }
    let config = &ctx.state().config;
    Coordinator {
        key,
        node_id: config.node_id,
        host: config.advertised_host.clone(),
        port: i32::from(config.advertised_port),
        error_code: errors::NONE,
        error_message: None,
        ..Coordinator::default()
    }
}
