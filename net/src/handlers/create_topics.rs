//! CreateTopics (key 19): creates topics, or with `validate_only` checks that they could be.
//!
//! Each topic is checked on its own and answered on its own, as Kafka does: the request-level
//! rules first (duplicate names, partition count, replication factor, manual assignment), then
//! the store's rules on the control shard (name, existence, '.'/'_' collisions, configs), where
//! the creation is persisted and published to every shard before the response is sent, so a
//! client may produce to the topic as soon as it has the answer. A single node offers exactly
//! one replica, so a replication factor other than 1 (or -1, the default) and an assignment
//! naming any other broker are refused. Runs on the connection's shard.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use sluice_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::Uuid;

use crate::broker::BrokerCtx;
use crate::broker_configs::DEFAULT_REPLICATION_FACTOR;
use crate::cluster;
use crate::errors;
use crate::topic_configs::describe_topic_configs;
use crate::topics::{TopicError, TopicMeta};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 7);

/// A topic the request asks for, once its request-level rules passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let version = header.request_api_version;
    let config = ctx.state().config.clone();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &request.topics {
        *seen.entry(t.name.clone()).or_default() += 1;
    }
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.clone();
        if seen.get(&name).copied().unwrap_or(0) > 1 {
            topics.push(failure(
                &name,
                &TopicError::InvalidRequest(format!(
                    "topic '{name}' appears more than once in the request"
                )),
            ));
            continue;
        }
        let plan = match plan(topic, config.num_partitions, config.node_id) {
            Ok(plan) => plan,
            Err(e) => {
                topics.push(failure(&name, &e));
                continue;
            }
        };
        let outcome = if request.validate_only {
            ctx.state()
                .cluster
                .topics()
                .check_create(&plan.name, plan.partitions, &plan.configs)
                .map(|()| None)
        } else {
            let Plan {
                name: create_name,
                partitions,
                configs,
            } = plan.clone();
            cluster::change_topics(ctx, move |store| {
                store.create(&create_name, partitions, configs, false)
            })
            .await
            .map(|snapshot| snapshot.topic(&plan.name).cloned())
        };
        topics.push(match outcome {
            Ok(meta) => success(&plan, meta.as_deref(), version),
            Err(e) => failure(&name, &e),
        });
    }
    CreateTopicsResponse {
        throttle_time_ms: 0,
        topics,
        ..CreateTopicsResponse::default()
    }
}

/// Applies the request-level rules to one topic: defaults for -1, the replication factor a
/// single node can offer, and a manual assignment that places every partition here.
pub fn plan(topic: CreatableTopic, default_partitions: i32, node: i32) -> Result<Plan, TopicError> {
    let name = topic.name;
    let mut configs = BTreeMap::new();
    for c in topic.configs {
        let Some(value) = c.value else {
            return Err(TopicError::InvalidConfig(format!(
                "config '{}' of topic '{name}' has a null value; topic configs need a value",
                c.name
            )));
        };
        if configs.insert(c.name.clone(), value).is_some() {
            return Err(TopicError::InvalidRequest(format!(
                "config '{}' appears more than once for topic '{name}'",
                c.name
            )));
        }
    }
    let partitions = if topic.assignments.is_empty() {
        match topic.num_partitions {
            -1 => default_partitions,
            n if n < 1 => {
                return Err(TopicError::InvalidPartitions(format!(
                    "number of partitions {n} for topic '{name}' must be positive (or -1 for \
                     the broker default)"
                )))
            }
            n => n,
        }
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(TopicError::InvalidRequest(format!(
                "topic '{name}' sets both a manual assignment and num_partitions or \
                 replication_factor; with an assignment both must be -1"
            )));
        }
        check_assignment(&name, &topic.assignments, node)?
    };
    match topic.replication_factor {
        -1 | DEFAULT_REPLICATION_FACTOR => {}
        rf if rf < 1 => {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "replication factor {rf} for topic '{name}' must be positive (or -1 for the \
                 broker default)"
            )))
        }
        rf => {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "replication factor {rf} for topic '{name}' cannot be reached: this cluster \
                 has 1 broker"
            )))
        }
    }
    Ok(Plan {
        name,
        partitions,
        configs,
    })
}

/// Checks a manual assignment: partitions 0..n-1 each exactly once, each on this node alone.
/// Returns the partition count.
fn check_assignment(
    name: &str,
    assignments: &[sluice_protocol::messages::create_topics_request::CreatableReplicaAssignment],
    node: i32,
) -> Result<i32, TopicError> {
    let bad = |why: String| {
        Err(TopicError::InvalidReplicaAssignment(format!(
            "assignment of topic '{name}': {why}"
        )))
    };
    let mut indexes: Vec<i32> = assignments.iter().map(|a| a.partition_index).collect();
    indexes.sort_unstable();
    for (expected, got) in indexes.iter().enumerate() {
        if i64::from(*got) != expected as i64 {
            return bad(format!(
                "partitions must be numbered 0 to {} without gaps or repeats",
                assignments.len() - 1
            ));
        }
    }
    for a in assignments {
        if a.broker_ids.as_slice() != [node] {
            return bad(format!(
                "partition {} lists brokers {:?}; this cluster has only broker {node}, so each \
                 partition must list exactly [{node}]",
                a.partition_index, a.broker_ids
            ));
        }
    }
    i32::try_from(assignments.len())
        .or_else(|_| bad("too many partitions".into()))
        .and_then(|n| {
            crate::topics::check_partition_count(n)?;
            Ok(n)
        })
}

fn success(plan: &Plan, meta: Option<&TopicMeta>, version: i16) -> CreatableTopicResult {
    let configs = describe_topic_configs(meta.map_or(&plan.configs, |m| &m.configs))
        .into_iter()
        .map(|e| CreatableTopicConfigs {
            name: e.name,
            value: e.value,
            read_only: e.read_only,
            config_source: e.source,
            is_sensitive: e.sensitive,
            ..CreatableTopicConfigs::default()
        })
        .collect();
    CreatableTopicResult {
        name: plan.name.clone(),
        // A validated-only topic has no id yet.
        topic_id: meta.map_or(Uuid::default(), |m| m.id),
        error_code: errors::NONE,
        error_message: None,
        topic_config_error_code: errors::NONE,
        num_partitions: meta.map_or(plan.partitions, |m| m.partitions),
        replication_factor: DEFAULT_REPLICATION_FACTOR,
        configs: if version >= 5 { Some(configs) } else { None },
        ..CreatableTopicResult::default()
    }
}

fn failure(name: &str, e: &TopicError) -> CreatableTopicResult {
    CreatableTopicResult {
        name: name.to_string(),
        topic_id: Uuid::default(),
        error_code: e.kafka_code(),
        error_message: Some(e.to_string()),
        topic_config_error_code: errors::NONE,
        num_partitions: -1,
        replication_factor: -1,
        configs: None,
        ..CreatableTopicResult::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopicConfig,
    };

    fn topic(partitions: i32, rf: i16) -> CreatableTopic {
        CreatableTopic {
            name: "t".into(),
            num_partitions: partitions,
            replication_factor: rf,
            ..CreatableTopic::default()
        }
    }

    fn assigned(parts: &[(i32, &[i32])]) -> CreatableTopic {
        CreatableTopic {
            assignments: parts
                .iter()
                .map(|(p, brokers)| CreatableReplicaAssignment {
                    partition_index: *p,
                    broker_ids: brokers.to_vec(),
                    ..CreatableReplicaAssignment::default()
                })
                .collect(),
            ..topic(-1, -1)
        }
    }

    fn code(r: Result<Plan, TopicError>) -> i16 {
        r.unwrap_err().kafka_code()
    }

    #[test]
    fn defaults_fill_in_minus_one() {
        let p = plan(topic(-1, -1), 4, 1).unwrap();
        assert_eq!(p.partitions, 4);
        assert_eq!(plan(topic(3, 1), 4, 1).unwrap().partitions, 3);
    }

    #[test]
    fn counts_and_replication_factors_are_checked() {
        assert_eq!(code(plan(topic(0, 1), 1, 1)), errors::INVALID_PARTITIONS);
        assert_eq!(code(plan(topic(-5, 1), 1, 1)), errors::INVALID_PARTITIONS);
        assert_eq!(
            code(plan(topic(1, 3), 1, 1)),
            errors::INVALID_REPLICATION_FACTOR
        );
        assert_eq!(
            code(plan(topic(1, 0), 1, 1)),
            errors::INVALID_REPLICATION_FACTOR
        );
        let e = plan(topic(1, 3), 1, 1).unwrap_err();
        assert!(e.to_string().contains("replication factor 3"), "{e}");
    }

    #[test]
    fn assignments_must_place_every_partition_here_once() {
        assert_eq!(
            plan(assigned(&[(1, &[7]), (0, &[7])]), 1, 7)
                .unwrap()
                .partitions,
            2
        );
        for bad in [
            assigned(&[(0, &[2])]),
            assigned(&[(0, &[1, 1])]),
            assigned(&[(0, &[])]),
            assigned(&[(0, &[1]), (2, &[1])]),
            assigned(&[(0, &[1]), (0, &[1])]),
        ] {
            assert_eq!(code(plan(bad, 1, 1)), errors::INVALID_REPLICA_ASSIGNMENT);
        }
        let both = CreatableTopic {
            num_partitions: 1,
            ..assigned(&[(0, &[1])])
        };
        assert_eq!(code(plan(both, 1, 1)), errors::INVALID_REQUEST);
    }

    #[test]
    fn null_and_repeated_configs_are_refused() {
        let with = |configs: Vec<(&str, Option<&str>)>| CreatableTopic {
            configs: configs
                .into_iter()
                .map(|(k, v)| CreatableTopicConfig {
                    name: k.into(),
                    value: v.map(Into::into),
                    ..CreatableTopicConfig::default()
                })
                .collect(),
            ..topic(1, 1)
        };
        assert_eq!(
            code(plan(with(vec![("retention.ms", None)]), 1, 1)),
            errors::INVALID_CONFIG
        );
        assert_eq!(
            code(plan(
                with(vec![
                    ("retention.ms", Some("1")),
                    ("retention.ms", Some("2"))
                ]),
                1,
                1
            )),
            errors::INVALID_REQUEST
        );
        let p = plan(with(vec![("retention.ms", Some("1"))]), 1, 1).unwrap();
        assert_eq!(p.configs.get("retention.ms").map(String::as_str), Some("1"));
    }
}
