//! Metadata (key 3): brokers, controller, cluster id, and topics with their partitions.
//!
//! A single-node broker lists itself as the only broker, the controller, and the leader and
//! only replica of every partition. Topics that do not exist are created on the spot when the
//! request allows it (v4+ field; always for older versions) and `auto.create.topics.enable` is
//! on; creation completes before the response, so the client can produce at once.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use sluice_engine::types::TopicPartition;
use sluice_protocol::messages::metadata_request::MetadataRequest;
use sluice_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::Uuid;

use crate::broker::BrokerCtx;
use crate::cluster;
use crate::errors;
use crate::topics::{validate_topic_name, TopicError, TopicMeta, TopicsSnapshot};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 12);

/// Every ACL operation bit Kafka defines for a topic (READ, WRITE, CREATE, DELETE, ALTER,
/// DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS): without authorization, everything is allowed.
const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

/// Every ACL operation bit Kafka defines for the cluster resource (CREATE, CLUSTER_ACTION,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALTER, DESCRIBE).
const CLUSTER_OPERATIONS_ALL: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
    let version = header.request_api_version;
    let config = ctx.state().config.clone();
    // v0 has no null: an empty list means all topics. v1+ null means all, empty means none.
    let requested = match request.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(list),
    };
    let allow_create =
        config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    let include_ops = request.include_topic_authorized_operations;
    let node = config.node_id;

    let mut snapshot = ctx.state().cluster.topics();
    let topics = match requested {
        None => snapshot
            .topics
            .values()
            .map(|meta| describe_topic(&snapshot, meta, include_ops, node))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                let entry = match (&t.name, t.topic_id) {
                    (Some(name), _) if !name.is_empty() => match snapshot.topic(name).cloned() {
                        Some(meta) => describe_topic(&snapshot, &meta, include_ops, node),
                        None if allow_create => {
                            match auto_create(ctx, name, config.num_partitions).await {
                                Ok(next) => {
                                    snapshot = next;
                                    match snapshot.topic(name) {
                                        Some(meta) => {
                                            describe_topic(&snapshot, meta, include_ops, node)
                                        }
                                        None => topic_error(
                                            Some(name.clone()),
                                            Uuid::default(),
                                            errors::UNKNOWN_TOPIC_OR_PARTITION,
                                        ),
                                    }
                                }
                                Err(e) => {
                                    topic_error(Some(name.clone()), Uuid::default(), e.kafka_code())
                                }
                            }
                        }
                        None => {
                            let code = if validate_topic_name(name).is_err() {
                                errors::INVALID_TOPIC_EXCEPTION
                            } else {
                                errors::UNKNOWN_TOPIC_OR_PARTITION
                            };
                            topic_error(Some(name.clone()), Uuid::default(), code)
                        }
                    },
                    // v10+: by topic id, with no name.
                    (_, id) if id != Uuid::default() => match snapshot.topic_by_id(&id) {
                        Some(meta) => describe_topic(&snapshot, meta, include_ops, node),
                        None => topic_error(None, id, errors::UNKNOWN_TOPIC_ID),
                    },
                    _ => topic_error(t.name.clone(), t.topic_id, errors::INVALID_REQUEST),
                };
                out.push(entry);
            }
            out
        }
    };
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
        // v8-10 only; without authorization every cluster operation is allowed.
        cluster_authorized_operations: if version <= 10
            && request.include_cluster_authorized_operations
        {
            CLUSTER_OPERATIONS_ALL
        } else {
            i32::MIN
        },
        ..MetadataResponse::default()
    }
}

/// Creates a topic with the broker's default partition count (auto-creation).
async fn auto_create(
    ctx: &Rc<BrokerCtx>,
    name: &str,
    partitions: i32,
) -> Result<Arc<TopicsSnapshot>, TopicError> {
    validate_topic_name(name)?;
    let name = name.to_string();
    let result = cluster::change_topics(ctx, move |store| {
        store.create(&name, partitions, BTreeMap::new(), false)
    })
    .await;
    match result {
        Ok(snapshot) => Ok(snapshot),
        // Another request created it first: that is success for this one.
        Err(TopicError::AlreadyExists(_)) => Ok(ctx.state().cluster.topics()),
        Err(e) => Err(e),
    }
}

/// One topic's entry; `node` (this broker) leads every partition.
fn describe_topic(
    snapshot: &TopicsSnapshot,
    meta: &TopicMeta,
    include_ops: bool,
    node: i32,
) -> MetadataResponseTopic {
    let partitions = (0..meta.partitions)
        .map(|p| {
            let tp = TopicPartition {
                topic: meta.name.clone(),
                partition: p,
            };
            let placed = snapshot.shard_for(&tp).is_some();
            MetadataResponsePartition {
                error_code: if placed {
                    errors::NONE
                } else {
                    errors::LEADER_NOT_AVAILABLE
                },
                partition_index: p,
                leader_id: node,
                leader_epoch: 0,
                replica_nodes: vec![node],
                isr_nodes: vec![node],
                offline_replicas: Vec::new(),
                ..MetadataResponsePartition::default()
            }
        })
        .collect();
    MetadataResponseTopic {
        error_code: errors::NONE,
        name: Some(meta.name.to_string()),
        topic_id: meta.id,
        is_internal: meta.internal,
        partitions,
        topic_authorized_operations: if include_ops {
            TOPIC_OPERATIONS_ALL
        } else {
            i32::MIN
        },
        ..MetadataResponseTopic::default()
    }
}

fn topic_error(name: Option<String>, id: Uuid, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: code,
        name,
        topic_id: id,
        topic_authorized_operations: i32::MIN,
        ..MetadataResponseTopic::default()
    }
}
