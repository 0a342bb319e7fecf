//! The group APIs answer bad members, generations and group states with Kafka's precise error
//! codes, checked with raw requests against an in-process broker (two shards, so that most
//! requests cross the mesh to the group's coordinator shard).

#![allow(clippy::unwrap_used)] // test harness helpers: a failed unwrap is a failed test

mod common;

use common::{Broker, Client};

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_net::config::ConfigLayer;
use sluice_net::errors;
use sluice_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use sluice_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use sluice_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use sluice_protocol::messages::heartbeat_request::HeartbeatRequest;
use sluice_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use sluice_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use sluice_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup,
};
use sluice_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use sluice_protocol::{Request, Response};

/// Small `__consumer_offsets`, no initial rebalance delay, short session timeouts allowed.
fn group_settings() -> ConfigLayer {
    ConfigLayer {
        offsets_topic_num_partitions: Some(8),
        group_initial_rebalance_delay_ms: Some(0),
        group_min_session_timeout_ms: Some(1000),
        ..ConfigLayer::default()
    }
}

impl Client {
    fn join(&mut self, group: &str, member: &str, session_ms: i32) -> (i16, String, i32) {
        let r = self.call(
            5,
            Request::JoinGroup(JoinGroupRequest {
                group_id: group.into(),
                session_timeout_ms: session_ms,
                rebalance_timeout_ms: 5000,
                member_id: member.into(),
                protocol_type: "consumer".into(),
                protocols: vec![JoinGroupRequestProtocol {
                    name: "range".into(),
                    metadata: Bytes::from_static(b"\0\0\0\0\0\0"),
                    ..JoinGroupRequestProtocol::default()
                }],
                ..JoinGroupRequest::default()
            }),
        );
        let Response::JoinGroup(r) = r else { panic!() };
        (r.error_code, r.member_id, r.generation_id)
    }

    fn sync(&mut self, group: &str, member: &str, generation: i32) -> (i16, Bytes) {
        let r = self.call(
            3,
            Request::SyncGroup(SyncGroupRequest {
                group_id: group.into(),
                generation_id: generation,
                member_id: member.into(),
                assignments: vec![SyncGroupRequestAssignment {
                    member_id: member.into(),
                    assignment: Bytes::from_static(b"assigned"),
                    ..SyncGroupRequestAssignment::default()
                }],
                ..SyncGroupRequest::default()
            }),
        );
        let Response::SyncGroup(r) = r else { panic!() };
        (r.error_code, r.assignment)
    }

    fn heartbeat(&mut self, group: &str, member: &str, generation: i32) -> i16 {
        let r = self.call(
            4,
            Request::Heartbeat(HeartbeatRequest {
                group_id: group.into(),
                generation_id: generation,
                member_id: member.into(),
                ..HeartbeatRequest::default()
            }),
        );
        let Response::Heartbeat(r) = r else { panic!() };
        r.error_code
    }

    fn commit(&mut self, group: &str, member: &str, generation: i32, topic: &str) -> i16 {
        let r = self.call(
            8,
            Request::OffsetCommit(OffsetCommitRequest {
                group_id: group.into(),
                generation_id_or_member_epoch: generation,
                member_id: member.into(),
                topics: vec![OffsetCommitRequestTopic {
                    name: topic.into(),
                    partitions: vec![OffsetCommitRequestPartition {
                        partition_index: 0,
                        committed_offset: 42,
                        committed_leader_epoch: -1,
                        committed_metadata: Some("meta".into()),
                        ..OffsetCommitRequestPartition::default()
                    }],
                    ..OffsetCommitRequestTopic::default()
                }],
                ..OffsetCommitRequest::default()
            }),
        );
        let Response::OffsetCommit(r) = r else {
            panic!()
        };
        r.topics[0].partitions[0].error_code
    }

    fn delete_group(&mut self, group: &str) -> i16 {
        let r = self.call(
            2,
            Request::DeleteGroups(DeleteGroupsRequest {
                groups_names: vec![group.into()],
                ..DeleteGroupsRequest::default()
            }),
        );
        let Response::DeleteGroups(r) = r else {
            panic!()
        };
        r.results[0].error_code
    }
}

#[test]
fn group_apis_answer_with_precise_error_codes() {
    let broker = Broker::start_with(group_settings());
    let mut c = Client::connect(broker.addr);
    let Response::CreateTopics(created) = c.call(
        5,
        Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: "t".into(),
                num_partitions: 1,
                replication_factor: 1,
                ..CreatableTopic::default()
            }],
            timeout_ms: 10_000,
            ..CreateTopicsRequest::default()
        }),
    ) else {
        panic!()
    };
    assert_eq!(created.topics[0].error_code, errors::NONE);

    // FindCoordinator: this broker for groups; transaction coordinators do not exist yet.
    let found = find_coordinator_once_loaded(
        &mut c,
        4,
        FindCoordinatorRequest {
            key_type: 0,
            coordinator_keys: vec!["g".into(), "h".into()],
            ..FindCoordinatorRequest::default()
        },
    );
    assert!(found
        .coordinators
        .iter()
        .all(|k| k.error_code == errors::NONE
            && k.node_id == 1
            && k.port == broker.addr.port() as i32));
    // Key type 2 (share groups) is not served: INVALID_REQUEST, as from a Kafka broker
    // without share groups.
    let Response::FindCoordinator(share) = c.call(
        3,
        Request::FindCoordinator(FindCoordinatorRequest {
            key: "sg".into(),
            key_type: 2,
            ..FindCoordinatorRequest::default()
        }),
    ) else {
        panic!()
    };
    assert_eq!(share.error_code, errors::INVALID_REQUEST);
    assert!(share.error_message.is_some());

    // The coordinator may still be loading right after start-up; wait until it answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, member, _) = loop {
        let out = c.join("g", "", 10_000);
        if out.0 != errors::COORDINATOR_LOAD_IN_PROGRESS || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // KIP-394: a member id first, then the real join.
    assert_eq!(code, errors::MEMBER_ID_REQUIRED);
    assert!(member.starts_with("test-"), "{member}");
    assert_eq!(c.join("g", "", 10).0, errors::INVALID_SESSION_TIMEOUT);
    let (code, again, generation) = c.join("g", &member, 10_000);
    assert_eq!(
        (code, again.as_str(), generation),
        (errors::NONE, member.as_str(), 1)
    );

    assert_eq!(c.sync("g", &member, 7).0, errors::ILLEGAL_GENERATION);
    assert_eq!(c.sync("g", "nobody", 1).0, errors::UNKNOWN_MEMBER_ID);
    assert_eq!(
        c.sync("g", &member, 1),
        (errors::NONE, Bytes::from_static(b"assigned"))
    );

    assert_eq!(c.heartbeat("g", &member, 1), errors::NONE);
    assert_eq!(c.heartbeat("g", &member, 2), errors::ILLEGAL_GENERATION);
    assert_eq!(c.heartbeat("g", "nobody", 1), errors::UNKNOWN_MEMBER_ID);
    assert_eq!(
        c.heartbeat("nogroup", "nobody", 1),
        errors::UNKNOWN_MEMBER_ID
    );

    assert_eq!(c.commit("g", &member, 9, "t"), errors::ILLEGAL_GENERATION);
    assert_eq!(c.commit("g", "nobody", 1, "t"), errors::UNKNOWN_MEMBER_ID);
    // A standalone commit into a group that has members is not this member's to make.
    assert_eq!(c.commit("g", "", -1, "t"), errors::UNKNOWN_MEMBER_ID);
    assert_eq!(
        c.commit("g", &member, 1, "missing"),
        errors::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(c.commit("g", &member, 1, "t"), errors::NONE);
    // A group that was never joined takes a standalone consumer's commit.
    assert_eq!(c.commit("solo", "", -1, "t"), errors::NONE);

    // OffsetFetch v8: several groups at once, -1 where nothing was committed.
    let Response::OffsetFetch(fetched) = c.call(
        8,
        Request::OffsetFetch(OffsetFetchRequest {
            groups: ["g", "solo", "none"]
                .iter()
                .map(|g| OffsetFetchRequestGroup {
                    group_id: (*g).into(),
                    topics: None,
                    ..OffsetFetchRequestGroup::default()
                })
                .collect(),
            require_stable: true,
            ..OffsetFetchRequest::default()
        }),
    ) else {
        panic!()
    };
    let offsets: Vec<(String, Vec<i64>)> = fetched
        .groups
        .iter()
        .map(|g| {
            assert_eq!(g.error_code, errors::NONE);
            (
                g.group_id.clone(),
                g.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        offsets,
        vec![
            ("g".to_string(), vec![42]),
            ("solo".to_string(), vec![42]),
            ("none".to_string(), vec![])
        ]
    );

    assert_eq!(c.delete_group("g"), errors::NON_EMPTY_GROUP);
    assert_eq!(c.delete_group("missing"), errors::GROUP_ID_NOT_FOUND);

    // LeaveGroup v3: each member answered on its own.
    let Response::LeaveGroup(left) = c.call(
        3,
        Request::LeaveGroup(LeaveGroupRequest {
            group_id: "g".into(),
            members: vec![
                MemberIdentity {
                    member_id: member.clone(),
                    ..MemberIdentity::default()
                },
                MemberIdentity {
                    member_id: "ghost".into(),
                    ..MemberIdentity::default()
                },
            ],
            ..LeaveGroupRequest::default()
        }),
    ) else {
        panic!()
    };
    assert_eq!(left.error_code, errors::NONE);
    let codes: Vec<i16> = left.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![errors::NONE, errors::UNKNOWN_MEMBER_ID]);
    assert_eq!(c.heartbeat("g", &member, 1), errors::UNKNOWN_MEMBER_ID);
    // Empty now: deletable, and then gone.
    assert_eq!(c.delete_group("g"), errors::NONE);
    assert_eq!(c.delete_group("g"), errors::GROUP_ID_NOT_FOUND);
}

/// FindCoordinator at `version`, asked again while any answer says the coordinator is still
/// loading (COORDINATOR_LOAD_IN_PROGRESS or COORDINATOR_NOT_AVAILABLE: retriable, and clients
/// retry them) for up to 10 s. Right after start-up the shards may still be loading their
/// groups; the first version-by-version test failed on that once.
fn find_coordinator_once_loaded(
    c: &mut Client,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let loading = |code: i16| {
        code == errors::COORDINATOR_LOAD_IN_PROGRESS || code == errors::COORDINATOR_NOT_AVAILABLE
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Response::FindCoordinator(found) =
            c.call(version, Request::FindCoordinator(request.clone()))
        else {
            panic!()
        };
        let still_loading =
            loading(found.error_code) || found.coordinators.iter().any(|k| loading(k.error_code));
        if !still_loading || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One group's whole life at every version of every group API the broker advertises: the
/// answers must decode at that version and carry the expected codes.
#[test]
fn group_apis_answer_at_every_advertised_version() {
    use sluice_net::handlers::served_range;
    use sluice_protocol::messages::describe_groups_request::DescribeGroupsRequest;
    use sluice_protocol::messages::list_groups_request::ListGroupsRequest;
    use sluice_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use sluice_protocol::ApiKey;

    let broker = Broker::start_with(group_settings());
    let mut c = Client::connect(broker.addr);
    let Response::CreateTopics(_) = c.call(
        5,
        Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: "t".into(),
                num_partitions: 1,
                replication_factor: 1,
                ..CreatableTopic::default()
            }],
            timeout_ms: 10_000,
            ..CreateTopicsRequest::default()
        }),
    ) else {
        panic!()
    };
    let top = |key: ApiKey| served_range(key).unwrap().1;
    let (_, join_max) = served_range(ApiKey::JoinGroup).unwrap();
    for v in 0..=join_max {
        let group = format!("every-{v}");
        let at = |key: ApiKey| v.min(top(key));
        let find_v = at(ApiKey::FindCoordinator);
        let found = find_coordinator_once_loaded(
            &mut c,
            find_v,
            if find_v >= 4 {
                FindCoordinatorRequest {
                    coordinator_keys: vec![group.clone()],
                    ..FindCoordinatorRequest::default()
                }
            } else {
                FindCoordinatorRequest {
                    key: group.clone(),
                    ..FindCoordinatorRequest::default()
                }
            },
        );
        assert_eq!(found.error_code, errors::NONE);
        assert!(found
            .coordinators
            .iter()
            .all(|k| k.error_code == errors::NONE));

        let join = |c: &mut Client, member: &str| {
            let Response::JoinGroup(r) = c.call(
                v,
                Request::JoinGroup(JoinGroupRequest {
                    group_id: group.clone(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 5_000,
                    member_id: member.into(),
                    protocol_type: "consumer".into(),
                    protocols: vec![JoinGroupRequestProtocol {
                        name: "range".into(),
                        metadata: Bytes::from_static(b"\0\0\0\0\0\0"),
                        ..JoinGroupRequestProtocol::default()
                    }],
                    ..JoinGroupRequest::default()
                }),
            ) else {
                panic!()
            };
            r
        };
        let mut r = loop {
            let r = join(&mut c, "");
            if r.error_code != errors::COORDINATOR_LOAD_IN_PROGRESS {
                break r;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if v >= 4 {
            assert_eq!(r.error_code, errors::MEMBER_ID_REQUIRED, "JoinGroup v{v}");
            r = join(&mut c, &r.member_id.clone());
        }
        assert_eq!(r.error_code, errors::NONE, "JoinGroup v{v}");
        assert_eq!((r.generation_id, r.members.len()), (1, 1), "JoinGroup v{v}");
        let member = r.member_id.clone();

        let Response::SyncGroup(s) = c.call(
            at(ApiKey::SyncGroup),
            Request::SyncGroup(SyncGroupRequest {
                group_id: group.clone(),
                generation_id: 1,
                member_id: member.clone(),
                assignments: vec![SyncGroupRequestAssignment {
                    member_id: member.clone(),
                    assignment: Bytes::from_static(b"a"),
                    ..SyncGroupRequestAssignment::default()
                }],
                ..SyncGroupRequest::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!((s.error_code, &s.assignment[..]), (errors::NONE, &b"a"[..]));

        let Response::Heartbeat(h) = c.call(
            at(ApiKey::Heartbeat),
            Request::Heartbeat(HeartbeatRequest {
                group_id: group.clone(),
                generation_id: 1,
                member_id: member.clone(),
                ..HeartbeatRequest::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!(h.error_code, errors::NONE);

        // OffsetCommit v0 has no generation: it is a standalone commit, refused while the
        // group has a member.
        let commit_v = at(ApiKey::OffsetCommit);
        let expected = if commit_v == 0 {
            errors::UNKNOWN_MEMBER_ID
        } else {
            errors::NONE
        };
        let Response::OffsetCommit(oc) = c.call(
            commit_v,
            Request::OffsetCommit(OffsetCommitRequest {
                group_id: group.clone(),
                generation_id_or_member_epoch: 1,
                member_id: member.clone(),
                topics: vec![OffsetCommitRequestTopic {
                    name: "t".into(),
                    partitions: vec![OffsetCommitRequestPartition {
                        partition_index: 0,
                        committed_offset: 10 + i64::from(v),
                        committed_leader_epoch: -1,
                        committed_metadata: Some("m".into()),
                        ..OffsetCommitRequestPartition::default()
                    }],
                    ..OffsetCommitRequestTopic::default()
                }],
                ..OffsetCommitRequest::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!(
            oc.topics[0].partitions[0].error_code, expected,
            "OffsetCommit v{commit_v}"
        );

        let fetch_v = at(ApiKey::OffsetFetch);
        let topics = Some(vec![OffsetFetchRequestTopic {
            name: "t".into(),
            partition_indexes: vec![0],
            ..OffsetFetchRequestTopic::default()
        }]);
        let request = if fetch_v >= 8 {
            OffsetFetchRequest {
                groups: vec![OffsetFetchRequestGroup {
                    group_id: group.clone(),
                    topics: None,
                    ..OffsetFetchRequestGroup::default()
                }],
                ..OffsetFetchRequest::default()
            }
        } else {
            OffsetFetchRequest {
                group_id: group.clone(),
                topics,
                ..OffsetFetchRequest::default()
            }
        };
        let Response::OffsetFetch(of) = c.call(fetch_v, Request::OffsetFetch(request)) else {
            panic!()
        };
        let committed: Vec<i64> = if fetch_v >= 8 {
            of.groups[0]
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
                .collect()
        } else {
            of.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
                .collect()
        };
        let want = if commit_v == 0 { -1 } else { 10 + i64::from(v) };
        if fetch_v >= 8 && want < 0 {
            assert!(committed.is_empty(), "OffsetFetch v{fetch_v}");
        } else {
            assert_eq!(committed, vec![want], "OffsetFetch v{fetch_v}");
        }

        let describe_v = at(ApiKey::DescribeGroups);
        let Response::DescribeGroups(d) = c.call(
            describe_v,
            Request::DescribeGroups(DescribeGroupsRequest {
                groups: vec![group.clone()],
                include_authorized_operations: describe_v >= 3,
                ..DescribeGroupsRequest::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!(d.groups[0].group_state, "Stable");
        assert_eq!(d.groups[0].members.len(), 1);
        if describe_v >= 3 {
            assert_ne!(d.groups[0].authorized_operations, i32::MIN);
        }

        let list_v = at(ApiKey::ListGroups);
        let Response::ListGroups(l) = c.call(
            list_v,
            Request::ListGroups(ListGroupsRequest {
                states_filter: if list_v >= 4 {
                    vec!["Stable".into()]
                } else {
                    vec![]
                },
                ..ListGroupsRequest::default()
            }),
        ) else {
            panic!()
        };
        assert!(l.groups.iter().any(|g| g.group_id == group));

        let leave_v = at(ApiKey::LeaveGroup);
        let Response::LeaveGroup(left) = c.call(
            leave_v,
            Request::LeaveGroup(if leave_v >= 3 {
                LeaveGroupRequest {
                    group_id: group.clone(),
                    members: vec![MemberIdentity {
                        member_id: member.clone(),
                        ..MemberIdentity::default()
                    }],
                    ..LeaveGroupRequest::default()
                }
            } else {
                LeaveGroupRequest {
                    group_id: group.clone(),
                    member_id: member.clone(),
                    ..LeaveGroupRequest::default()
                }
            }),
        ) else {
            panic!()
        };
        assert_eq!(left.error_code, errors::NONE);
        if leave_v >= 3 {
            assert_eq!(left.members[0].error_code, errors::NONE);
        }
        assert_eq!(
            c.delete_group(&group),
            errors::NONE,
            "DeleteGroups after v{v}"
        );
    }
}
