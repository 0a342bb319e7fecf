//! Consumer-group administration: FindCoordinator, ListGroups, DescribeGroups, DeleteGroups,
//! OffsetFetch and OffsetCommit (as a standalone, non-member committer), each a blocking call
//! returning plain data or a [`ClientError`] with the broker's error code for that group.
//!
//! Group requests belong on the group's coordinator. [`Client::find_group_coordinator`] asks
//! for it; a caller that is connected elsewhere reconnects (the CLI does). The coordinator
//! answers COORDINATOR_LOAD_IN_PROGRESS while it rebuilds groups at start-up, and
//! COORDINATOR_NOT_AVAILABLE / NOT_COORDINATOR while it is moving; those are retried here for
//! up to the client's request timeout, as Kafka's own tools do. Runs on the client's thread.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use sluice_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use sluice_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use sluice_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use sluice_protocol::messages::list_groups_request::ListGroupsRequest;
use sluice_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup,
};
use sluice_protocol::{ApiKey, Decoder, Request, Response};

use crate::connection::{missing, Client};
use crate::error::{check, ClientError, KafkaError, Result};
use crate::error_codes;

/// FindCoordinator's key type for consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

/// First FindCoordinator version that takes a list of keys.
const FIND_COORDINATOR_BATCHED_MIN_VERSION: i16 = 4;

/// First OffsetFetch version that names groups in a list.
const OFFSET_FETCH_BATCHED_MIN_VERSION: i16 = 8;

/// First ListGroups version with a state filter and states in the answer.
const LIST_GROUPS_STATES_MIN_VERSION: i16 = 4;

/// Pause between retries of a coordinator that is loading or moving.
const COORDINATOR_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// The broker that coordinates a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl Coordinator {
    /// "host:port", as a bootstrap address.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    /// "consumer" for consumer groups; "" for groups that only commit offsets.
    pub protocol_type: String,
    /// The state name ("Stable", "Empty", ...); `None` before ListGroups v4.
    pub state: Option<String>,
}

/// One group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// "Empty", "PreparingRebalance", "CompletingRebalance", "Stable" or "Dead".
    pub state: String,
    pub protocol_type: String,
    /// The chosen protocol; for consumer groups the assignor ("range", "cooperative-sticky").
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The partitions assigned to the member, decoded when the group uses the consumer
    /// protocol; sorted by topic and partition.
    pub assignment: Assignment,
}

/// What a member was assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// (topic, partitions) pairs of a consumer-protocol assignment.
    Partitions(Vec<(String, Vec<i32>)>),
    /// Bytes of another protocol (or a consumer assignment that does not decode), kept raw.
    Opaque(Bytes),
}

/// A committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// An offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

impl Client {
    /// The coordinator of `group`.
    pub fn find_group_coordinator(&mut self, group: &str) -> Result<Coordinator> {
        self.find_coordinator(KEY_TYPE_GROUP, group, &format!("group '{group}'"))
    }

    /// The coordinator of `key` of FindCoordinator's `key_type` (0 groups, 1 transactional
    /// ids); `what` names the key in errors.
    pub(crate) fn find_coordinator(
        &mut self,
        key_type: i8,
        key: &str,
        what: &str,
    ) -> Result<Coordinator> {
        let context = || format!("find the coordinator of {what}");
        self.retrying_coordinator(|client| {
            let version = client.version(ApiKey::FindCoordinator)?;
            let request = if version >= FIND_COORDINATOR_BATCHED_MIN_VERSION {
                FindCoordinatorRequest {
                    key_type,
                    coordinator_keys: vec![key.to_owned()],
                    ..FindCoordinatorRequest::default()
                }
            } else {
                FindCoordinatorRequest {
                    key: key.to_owned(),
                    key_type,
                    ..FindCoordinatorRequest::default()
                }
            };
            let Response::FindCoordinator(r) = client.call(Request::FindCoordinator(request))?
            else {
                return Err(missing(&context(), "a FindCoordinator body"));
            };
            if version >= FIND_COORDINATOR_BATCHED_MIN_VERSION {
                let found = r
                    .coordinators
                    .into_iter()
                    .find(|c| c.key == key)
                    .ok_or_else(|| missing(&context(), "the coordinator"))?;
                check(found.error_code, found.error_message.as_deref(), context)?;
                Ok(Coordinator {
                    node_id: found.node_id,
                    host: found.host,
                    port: found.port,
                })
            } else {
                check(r.error_code, r.error_message.as_deref(), context)?;
                Ok(Coordinator {
                    node_id: r.node_id,
                    host: r.host,
                    port: r.port,
                })
            }
        })
    }

    /// Every group the broker coordinates, optionally only those in one of `states`
    /// (state names as Kafka spells them, e.g. "Stable"); sorted by group id.
    pub fn list_groups(&mut self, states: &[String]) -> Result<Vec<ListedGroup>> {
        let version = self.version(ApiKey::ListGroups)?;
        if !states.is_empty() && version < LIST_GROUPS_STATES_MIN_VERSION {
            return Err(ClientError::InvalidArgument(format!(
                "the broker's ListGroups v{version} cannot filter by state"
            )));
        }
        let request = ListGroupsRequest {
            states_filter: states.to_vec(),
            ..ListGroupsRequest::default()
        };
        let context = || "list groups".to_owned();
        let r = self.retrying_coordinator(|client| {
            let Response::ListGroups(r) = client.call(Request::ListGroups(request.clone()))? else {
                return Err(missing(&context(), "a ListGroups body"));
            };
            check(r.error_code, None, context)?;
            Ok(r)
        })?;
        let mut groups: Vec<ListedGroup> = r
            .groups
            .into_iter()
            .map(|g| ListedGroup {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                state: (version >= LIST_GROUPS_STATES_MIN_VERSION).then_some(g.group_state),
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// The state, protocol and members of `group`. A group the coordinator does not know is
    /// reported by Kafka as state "Dead" with no members, not as an error.
    pub fn describe_group(&mut self, group: &str) -> Result<GroupDescription> {
        let request = DescribeGroupsRequest {
            groups: vec![group.to_owned()],
            include_authorized_operations: false,
            ..DescribeGroupsRequest::default()
        };
        let context = || format!("describe group '{group}'");
        let described = self.retrying_coordinator(|client| {
            let Response::DescribeGroups(r) =
                client.call(Request::DescribeGroups(request.clone()))?
            else {
                return Err(missing(&context(), "a DescribeGroups body"));
            };
            let found = r
                .groups
                .into_iter()
                .find(|g| g.group_id == group)
                .ok_or_else(|| missing(&context(), "the group's result"))?;
            check(found.error_code, None, context)?;
            Ok(found)
        })?;
        let consumer = described.protocol_type == "consumer";
        let mut members: Vec<GroupMember> = described
            .members
            .into_iter()
            .map(|m| GroupMember {
                member_id: m.member_id,
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                assignment: if consumer {
                    decode_consumer_assignment(&m.member_assignment)
                } else {
                    Assignment::Opaque(m.member_assignment)
                },
            })
            .collect();
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        Ok(GroupDescription {
            group_id: described.group_id,
            state: described.group_state,
            protocol_type: described.protocol_type,
            protocol: described.protocol_data,
            members,
        })
    }

    /// Deletes an empty group and its committed offsets (NON_EMPTY_GROUP while it has
    /// members, GROUP_ID_NOT_FOUND for a group the coordinator does not know).
    pub fn delete_group(&mut self, group: &str) -> Result<()> {
        let request = DeleteGroupsRequest {
            groups_names: vec![group.to_owned()],
            ..DeleteGroupsRequest::default()
        };
        let context = || format!("delete group '{group}'");
        self.retrying_coordinator(|client| {
            let Response::DeleteGroups(r) = client.call(Request::DeleteGroups(request.clone()))?
            else {
                return Err(missing(&context(), "a DeleteGroups body"));
            };
            let found = r
                .results
                .iter()
                .find(|g| g.group_id == group)
                .ok_or_else(|| missing(&context(), "the group's result"))?;
            check(found.error_code, None, context)
        })
    }

    /// The committed offsets of `group`, sorted by topic and partition. Partitions without a
    /// committed offset are left out.
    pub fn committed_offsets(&mut self, group: &str) -> Result<Vec<CommittedOffset>> {
        let version = self.version(ApiKey::OffsetFetch)?;
        let request = if version >= OFFSET_FETCH_BATCHED_MIN_VERSION {
            OffsetFetchRequest {
                groups: vec![OffsetFetchRequestGroup {
                    group_id: group.to_owned(),
                    topics: None,
                    ..OffsetFetchRequestGroup::default()
                }],
                require_stable: false,
                ..OffsetFetchRequest::default()
            }
        } else {
            OffsetFetchRequest {
                group_id: group.to_owned(),
                topics: None,
                ..OffsetFetchRequest::default()
            }
        };
        let context = || format!("fetch the committed offsets of group '{group}'");
        let mut out: Vec<CommittedOffset> = self.retrying_coordinator(|client| {
            let Response::OffsetFetch(r) = client.call(Request::OffsetFetch(request.clone()))?
            else {
                return Err(missing(&context(), "an OffsetFetch body"));
            };
            // v8+ nests the same per-partition fields under groups, in types of their own;
            // flatten both shapes to (topic, partition, offset, leader epoch, metadata, error).
            macro_rules! flatten {
                ($topics:expr) => {
                    $topics
                        .into_iter()
                        .flat_map(|t| {
                            t.partitions.into_iter().map(move |p| {
                                let (index, offset) = (p.partition_index, p.committed_offset);
                                let epoch = p.committed_leader_epoch;
                                (
                                    t.name.clone(),
                                    index,
                                    offset,
                                    epoch,
                                    p.metadata,
                                    p.error_code,
                                )
                            })
                        })
                        .collect()
                };
            }
            let rows: Vec<(String, i32, i64, i32, Option<String>, i16)> =
                if version >= OFFSET_FETCH_BATCHED_MIN_VERSION {
                    let found = r
                        .groups
                        .into_iter()
                        .find(|g| g.group_id == group)
                        .ok_or_else(|| missing(&context(), "the group's result"))?;
                    check(found.error_code, None, context)?;
                    flatten!(found.topics)
                } else {
                    check(r.error_code, None, context)?;
                    flatten!(r.topics)
                };
            let mut out = Vec::with_capacity(rows.len());
            for (topic, partition, offset, leader_epoch, metadata, error_code) in rows {
                check(error_code, None, || {
                    format!("{} for {topic}-{partition}", context())
                })?;
                out.push(CommittedOffset {
                    topic,
                    partition,
                    offset,
                    leader_epoch,
                    metadata,
                });
            }
            Ok(out)
        })?;
        // -1 means "no committed offset" for a partition that was asked for by name.
        out.retain(|c| c.offset >= 0);
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Commits `offsets` for `group` as a standalone committer (generation -1, no member id),
    /// which the coordinator accepts only while the group has no members. All partitions are
    /// committed in one request; the first partition error is returned.
    pub fn commit_offsets(&mut self, group: &str, offsets: &[OffsetToCommit]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for o in offsets {
            let partition = OffsetCommitRequestPartition {
                partition_index: o.partition,
                committed_offset: o.offset,
                committed_leader_epoch: -1,
                commit_timestamp: -1,
                committed_metadata: o.metadata.clone(),
                ..OffsetCommitRequestPartition::default()
            };
            match topics.iter_mut().find(|t| t.name == o.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(OffsetCommitRequestTopic {
                    name: o.topic.clone(),
                    partitions: vec![partition],
                    ..OffsetCommitRequestTopic::default()
                }),
            }
        }
        let request = OffsetCommitRequest {
            group_id: group.to_owned(),
            generation_id_or_member_epoch: -1,
            member_id: String::new(),
            group_instance_id: None,
            retention_time_ms: -1,
            topics,
            ..OffsetCommitRequest::default()
        };
        let context = || format!("commit offsets of group '{group}'");
        self.retrying_coordinator(|client| {
            let Response::OffsetCommit(r) = client.call(Request::OffsetCommit(request.clone()))?
            else {
                return Err(missing(&context(), "an OffsetCommit body"));
            };
            for topic in &r.topics {
                for p in &topic.partitions {
                    check(p.error_code, None, || {
                        format!("{} for {}-{}", context(), topic.name, p.partition_index)
                    })?;
                }
            }
            Ok(())
        })
    }

    /// Runs `call` again while the coordinator is loading or moving, for up to the request
    /// timeout; any other outcome is returned as it is.
    pub(crate) fn retrying_coordinator<T>(
        &mut self,
        mut call: impl FnMut(&mut Client) -> Result<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.request_timeout();
        loop {
            match call(self) {
                Err(ClientError::Kafka(KafkaError { code, .. }))
                    if is_retriable_coordinator_error(code) && Instant::now() < deadline =>
                {
                    std::thread::sleep(COORDINATOR_RETRY_BACKOFF);
                }
                other => return other,
            }
        }
    }
}

/// Errors that mean "ask again shortly": the coordinator is loading its groups, or not (yet)
/// the coordinator.
fn is_retriable_coordinator_error(code: i16) -> bool {
    matches!(
        code,
        error_codes::COORDINATOR_LOAD_IN_PROGRESS
            | error_codes::COORDINATOR_NOT_AVAILABLE
            | error_codes::NOT_COORDINATOR
    )
}

/// Decodes a consumer-protocol assignment: an int16 version, then the assignment at that
/// version. Versions newer than the definition only append fields, so they decode as the
/// newest known version; bytes that do not decode are kept raw.
pub fn decode_consumer_assignment(bytes: &Bytes) -> Assignment {
    if bytes.is_empty() {
        return Assignment::Partitions(Vec::new());
    }
    let mut d = Decoder::new(bytes.clone());
    let decoded = d.i16().ok().and_then(|version| {
        let version = version.clamp(0, ConsumerProtocolAssignment::MAX_VERSION);
        ConsumerProtocolAssignment::decode(&mut d, version).ok()
    });
    match decoded {
        Some(a) => {
            let mut partitions: Vec<(String, Vec<i32>)> = a
                .assigned_partitions
                .into_iter()
                .map(|tp| {
                    let mut ps = tp.partitions;
                    ps.sort_unstable();
                    (tp.topic, ps)
                })
                .collect();
            partitions.sort();
            Assignment::Partitions(partitions)
        }
        None => Assignment::Opaque(bytes.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use sluice_protocol::Encoder;

    fn encoded_assignment(version: i16, assignment: &ConsumerProtocolAssignment) -> Bytes {
        let mut e = Encoder::new();
        e.i16(version);
        assignment
            .encode(&mut e, version.min(ConsumerProtocolAssignment::MAX_VERSION))
            .unwrap();
        e.finish_contiguous()
    }

    #[test]
    fn consumer_assignments_decode_sorted() {
        let assignment = ConsumerProtocolAssignment {
            assigned_partitions: vec![
                TopicPartition {
                    topic: "b".into(),
                    partitions: vec![2, 0],
                },
                TopicPartition {
                    topic: "a".into(),
                    partitions: vec![1],
                },
            ],
            user_data: None,
        };
        for version in [0, 1, 3] {
            assert_eq!(
                decode_consumer_assignment(&encoded_assignment(version, &assignment)),
                Assignment::Partitions(vec![("a".into(), vec![1]), ("b".into(), vec![0, 2])]),
                "version {version}"
            );
        }
    }

    #[test]
    fn empty_and_garbage_assignments_do_not_fail() {
        assert_eq!(
            decode_consumer_assignment(&Bytes::new()),
            Assignment::Partitions(Vec::new())
        );
        let garbage = Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(
            decode_consumer_assignment(&garbage),
            Assignment::Opaque(garbage.clone())
        );
    }

    #[test]
    fn loading_and_moving_coordinators_are_retried() {
        assert!(is_retriable_coordinator_error(
            error_codes::COORDINATOR_LOAD_IN_PROGRESS
        ));
        assert!(is_retriable_coordinator_error(error_codes::NOT_COORDINATOR));
        assert!(!is_retriable_coordinator_error(
            error_codes::GROUP_ID_NOT_FOUND
        ));
        assert!(!is_retriable_coordinator_error(
            error_codes::NON_EMPTY_GROUP
        ));
    }
}
