//! Metadata (key 3): brokers, controller, cluster id, and topics with their partitions.
//!
//! A single-node broker lists itself as the only broker and the controller, and the leader of
//! every partition.

use std::rc::Rc;

use sluice_protocol::messages::metadata_request::MetadataRequest;
use sluice_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponseTopic,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors::UNKNOWN_TOPIC_OR_PARTITION;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 12);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
    let config = &ctx.state().config;
    // No topics exist until the topic store lands; asked-for topics are reported unknown,
    // which is the precise answer for a topic that does not exist.
    let topics = request
        .topics
        .unwrap_or_default()
        .into_iter()
        .map(|t| MetadataResponseTopic {
            error_code: UNKNOWN_TOPIC_OR_PARTITION,
            name: t.name,
            topic_id: t.topic_id,
            ..MetadataResponseTopic::default()
        })
        .collect();
    MetadataResponse {
        brokers: vec![MetadataResponseBroker {
            node_id: config.node_id,
            host: config.advertised_host.clone(),
            port: i32::from(config.advertised_port),
            rack: None,
            ..MetadataResponseBroker::default()
        }],
        cluster_id: Some(ctx.state().cluster_id.to_string()),
        controller_id: config.node_id,
        topics,
        ..MetadataResponse::default()
    }
}
