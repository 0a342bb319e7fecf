//! DescribeCluster (key 60): this broker as the whole cluster — its endpoint, the controller,
//! the cluster id and, on request, the cluster operations a client may perform.
//!
//! A single node is both the only broker and the controller. Clients ask for broker endpoints
//! (endpoint type 1); asking a broker for controller endpoints (type 2) is answered with
//! UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker does. Runs on the connection's shard.

use std::rc::Rc;

use sluice_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use sluice_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 1);

/// Endpoint type of brokers.
const ENDPOINT_BROKERS: i8 = 1;

/// Every ACL operation Kafka defines on the cluster resource (CREATE, ALTER, DESCRIBE,
/// CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, CREATE_TOKENS,
/// DESCRIBE_TOKENS): without authorization, everything is allowed.
pub const CLUSTER_OPERATIONS_ALL: i32 = (1 << 5)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let config = &ctx.state().config;
    let endpoint_type = if header.request_api_version >= 1 {
        request.endpoint_type
    } else {
        ENDPOINT_BROKERS
    };
    let mut response = DescribeClusterResponse {
        throttle_time_ms: 0,
        error_code: errors::NONE,
        error_message: None,
        endpoint_type,
        cluster_id: ctx.state().cluster_id.to_string(),
        controller_id: config.node_id,
        brokers: Vec::new(),
        cluster_authorized_operations: if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS_ALL
        } else {
            i32::MIN
        },
        ..DescribeClusterResponse::default()
    };
    if endpoint_type != ENDPOINT_BROKERS {
        response.error_code = errors::UNSUPPORTED_ENDPOINT_TYPE;
        response.error_message = Some(format!(
            "endpoint type {endpoint_type} is not served by a broker listener; ask for broker \
             endpoints (1)"
        ));
        return response;
    }
    response.brokers = vec![DescribeClusterBroker {
        broker_id: config.node_id,
        host: config.advertised_host.clone(),
        port: i32::from(config.advertised_port),
        rack: None,
        ..DescribeClusterBroker::default()
    }];
    response
}
