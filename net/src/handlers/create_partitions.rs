//! CreatePartitions (key 37): raises a topic's partition count, or with `validate_only`
//! checks that it could.
//!
//! The new count must be larger than the current one (INVALID_PARTITIONS otherwise, as Kafka
//! never removes partitions). A manual assignment must give exactly one broker list per new
//! partition, each naming only this node (INVALID_REPLICA_ASSIGNMENT otherwise). Internal
//! topics keep their count (INVALID_REQUEST): `__consumer_offsets` maps groups to partitions by
//! it. The change is made on the control shard, and the new partitions are open on their home
//! shards before the response is sent. Runs on the connection's shard.

use std::collections::HashMap;
use std::rc::Rc;

use sluice_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsRequest,
};
use sluice_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::cluster;
use crate::errors;
use crate::topics::{check_partition_count, TopicError, TopicsSnapshot};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 3);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = ctx.state().config.node_id;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &request.topics {
        *counts.entry(t.name.clone()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name;
        let outcome = if counts.get(&name).copied().unwrap_or(0) > 1 {
            Err(TopicError::InvalidRequest(format!(
                "topic '{name}' appears more than once in the request"
            )))
        } else {
            let snapshot = ctx.state().cluster.topics();
            match check(
                &snapshot,
                &name,
                topic.count,
                topic.assignments.as_deref(),
                node,
            ) {
                Err(e) => Err(e),
                Ok(()) if request.validate_only => Ok(()),
                Ok(()) => {
                    let (change_name, total) = (name.clone(), topic.count);
                    let assignments = topic.assignments;
                    // Checked again on the control shard against the store itself: another
                    // request may have changed the count since this shard's snapshot.
                    cluster::change_topics(ctx, move |store| {
                        check(
                            store.current(),
                            &change_name,
                            total,
                            assignments.as_deref(),
                            node,
                        )?;
                        store.add_partitions(&change_name, total, false)
                    })
                    .await
                    .map(|_| ())
                }
            }
        };
        let (error_code, error_message) = match outcome {
            Ok(()) => (errors::NONE, None),
            Err(e) => (e.kafka_code(), Some(e.to_string())),
        };
        results.push(CreatePartitionsTopicResult {
            name,
            error_code,
            error_message,
            ..CreatePartitionsTopicResult::default()
        });
    }
    CreatePartitionsResponse {
        throttle_time_ms: 0,
        results,
        ..CreatePartitionsResponse::default()
    }
}

/// Checks a request to raise `name` to `total` partitions against `snapshot`. The store checks
/// the count again when it applies the change, so a concurrent change cannot slip through.
pub fn check(
    snapshot: &TopicsSnapshot,
    name: &str,
    total: i32,
    assignments: Option<&[CreatePartitionsAssignment]>,
    node: i32,
) -> Result<(), TopicError> {
    let Some(meta) = snapshot.topic(name) else {
        return Err(TopicError::UnknownTopic(name.to_string()));
    };
    if meta.internal {
        // Groups are mapped to __consumer_offsets partitions by the partition count: a new
        // count would move every group away from its stored state.
        return Err(TopicError::InvalidRequest(format!(
            "the partition count of internal topic '{name}' cannot change"
        )));
    }
    if total < meta.partitions {
        return Err(TopicError::InvalidPartitions(format!(
            "topic '{name}' has {} partitions, more than the requested {total}; partitions \
             cannot be removed",
            meta.partitions
        )));
    }
    if total == meta.partitions {
        return Err(TopicError::InvalidPartitions(format!(
            "topic '{name}' already has {total} partitions"
        )));
    }
    check_partition_count(total)?;
    if let Some(assignments) = assignments {
        let added = total - meta.partitions;
        if assignments.len() as i64 != i64::from(added) {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "increasing topic '{name}' by {added} partitions needs {added} assignments, \
                 got {}",
                assignments.len()
            )));
        }
        for (i, a) in assignments.iter().enumerate() {
            if a.broker_ids.as_slice() != [node] {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "new partition {} of topic '{name}' lists brokers {:?}; this cluster has \
                     only broker {node} and the topic has 1 replica, so it must list [{node}]",
                    i64::from(meta.partitions) + i as i64,
                    a.broker_ids
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::TopicStore;
    use std::collections::BTreeMap;

    fn assignment(brokers: &[i32]) -> CreatePartitionsAssignment {
        CreatePartitionsAssignment {
            broker_ids: brokers.to_vec(),
            ..CreatePartitionsAssignment::default()
        }
    }

    #[test]
    fn counts_and_assignments_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TopicStore::open(dir.path(), 1).unwrap();
        let snap = store.create("t", 2, BTreeMap::new(), false).unwrap();
        let code = |r: Result<(), TopicError>| r.unwrap_err().kafka_code();
        assert!(check(&snap, "t", 3, None, 1).is_ok());
        assert!(check(
            &snap,
            "t",
            4,
            Some(&[assignment(&[1]), assignment(&[1])]),
            1
        )
        .is_ok());
        assert_eq!(
            code(check(&snap, "t", 2, None, 1)),
            errors::INVALID_PARTITIONS
        );
        assert_eq!(
            code(check(&snap, "t", 1, None, 1)),
            errors::INVALID_PARTITIONS
        );
        assert_eq!(
            code(check(&snap, "u", 3, None, 1)),
            errors::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code(check(&snap, "t", 4, Some(&[assignment(&[1])]), 1)),
            errors::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code(check(&snap, "t", 3, Some(&[assignment(&[2])]), 1)),
            errors::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code(check(&snap, "t", 3, Some(&[assignment(&[1, 1])]), 1)),
            errors::INVALID_REPLICA_ASSIGNMENT
        );
    }
}
