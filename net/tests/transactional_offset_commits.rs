//! Offsets committed inside a transaction (TxnOffsetCommit) stay invisible until the
//! transaction commits, vanish when it aborts, hold `require_stable` fetches meanwhile, fence
//! an old producer epoch and survive a restart while the transaction is open; the producer
//! state shows up in DescribeProducers. Checked with raw requests against an in-process broker
//! (two shards, so that most requests cross the mesh to the coordinator shards).

#![allow(clippy::unwrap_used)] // test harness helpers: a failed unwrap is a failed test

mod common;

use common::{Broker, Client};

use std::time::{Duration, Instant};

use sluice_net::config::ConfigLayer;
use sluice_net::errors;
use sluice_net::groups::{partition_for, OFFSETS_TOPIC};
use sluice_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use sluice_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use sluice_protocol::messages::describe_producers_request::{
    DescribeProducersRequest, TopicRequest,
};
use sluice_protocol::messages::describe_producers_response::PartitionResponse;
use sluice_protocol::messages::end_txn_request::EndTxnRequest;
use sluice_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use sluice_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestTopic,
};
use sluice_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use sluice_protocol::{Request, Response};

const OFFSETS_PARTITIONS: i32 = 4;

fn settings() -> ConfigLayer {
    ConfigLayer {
        offsets_topic_num_partitions: Some(OFFSETS_PARTITIONS),
        transaction_state_log_num_partitions: Some(2),
        group_initial_rebalance_delay_ms: Some(0),
        ..ConfigLayer::default()
    }
}

/// A producer id and epoch.
type Producer = (i64, i16);

impl Client {
    /// InitProducerId for `id`, waiting out COORDINATOR_LOAD_IN_PROGRESS after a start.
    fn init_txn(&mut self, id: &str) -> Producer {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let Response::InitProducerId(r) = self.call(
                4,
                Request::InitProducerId(InitProducerIdRequest {
                    transactional_id: Some(id.into()),
                    transaction_timeout_ms: 60_000,
                    producer_id: -1,
                    producer_epoch: -1,
                    ..InitProducerIdRequest::default()
                }),
            ) else {
                panic!()
            };
            if r.error_code == errors::NONE {
                return (r.producer_id, r.producer_epoch);
            }
            assert!(
                Instant::now() < deadline,
                "InitProducerId: {}",
                r.error_code
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn add_offsets(&mut self, id: &str, (pid, epoch): Producer, group: &str) -> i16 {
        let Response::AddOffsetsToTxn(r) = self.call(
            3,
            Request::AddOffsetsToTxn(AddOffsetsToTxnRequest {
                transactional_id: id.into(),
                producer_id: pid,
                producer_epoch: epoch,
                group_id: group.into(),
                ..AddOffsetsToTxnRequest::default()
            }),
        ) else {
            panic!()
        };
        r.error_code
    }

    /// EndTxn, retrying what clients retry: CONCURRENT_TRANSACTIONS (the previous markers are
    /// still being written) and, right after a start, a coordinator not yet open or loaded.
    fn end_txn(&mut self, id: &str, (pid, epoch): Producer, commit: bool) -> i16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let Response::EndTxn(r) = self.call(
                3,
                Request::EndTxn(EndTxnRequest {
                    transactional_id: id.into(),
                    producer_id: pid,
                    producer_epoch: epoch,
                    committed: commit,
                    ..EndTxnRequest::default()
                }),
            ) else {
                panic!()
            };
            let retry = [
                errors::CONCURRENT_TRANSACTIONS,
                errors::NOT_COORDINATOR,
                errors::COORDINATOR_LOAD_IN_PROGRESS,
            ];
            if !retry.contains(&r.error_code) || Instant::now() > deadline {
                return r.error_code;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// TxnOffsetCommit at `version` of `offsets` (partition, offset) of topic `topic`: each
    /// partition's error code.
    #[allow(clippy::too_many_arguments)]
    fn txn_commit(
        &mut self,
        version: i16,
        id: &str,
        (pid, epoch): Producer,
        group: &str,
        member: &str,
        generation: i32,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Vec<i16> {
        let Response::TxnOffsetCommit(r) = self.call(
            version,
            Request::TxnOffsetCommit(TxnOffsetCommitRequest {
                transactional_id: id.into(),
                group_id: group.into(),
                producer_id: pid,
                producer_epoch: epoch,
                generation_id: generation,
                member_id: member.into(),
                topics: vec![TxnOffsetCommitRequestTopic {
                    name: topic.into(),
                    partitions: offsets
                        .iter()
                        .map(|(p, o)| TxnOffsetCommitRequestPartition {
                            partition_index: *p,
                            committed_offset: *o,
                            committed_leader_epoch: -1,
                            committed_metadata: Some(format!("m{o}")),
                            ..TxnOffsetCommitRequestPartition::default()
                        })
                        .collect(),
                    ..TxnOffsetCommitRequestTopic::default()
                }],
                ..TxnOffsetCommitRequest::default()
            }),
        ) else {
            panic!()
        };
        r.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect()
    }

    /// OffsetFetch v7 of partitions 0 and 1 of `topic`: (offset, error) of each, waiting out
    /// a coordinator not yet open or loaded after a start.
    fn fetch_offsets(&mut self, group: &str, topic: &str, stable: bool) -> Vec<(i64, i16)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let Response::OffsetFetch(r) = self.call(
                7,
                Request::OffsetFetch(OffsetFetchRequest {
                    group_id: group.into(),
                    topics: Some(vec![OffsetFetchRequestTopic {
                        name: topic.into(),
                        partition_indexes: vec![0, 1],
                        ..OffsetFetchRequestTopic::default()
                    }]),
                    require_stable: stable,
                    ..OffsetFetchRequest::default()
                }),
            ) else {
                panic!()
            };
            if r.error_code == errors::NONE {
                return r.topics[0]
                    .partitions
                    .iter()
                    .map(|p| (p.committed_offset, p.error_code))
                    .collect();
            }
            assert!(
                [
                    errors::COORDINATOR_LOAD_IN_PROGRESS,
                    errors::NOT_COORDINATOR
                ]
                .contains(&r.error_code),
                "OffsetFetch: {}",
                r.error_code
            );
            assert!(Instant::now() < deadline, "the coordinator did not load");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the stable offsets of `group` are `want` (markers are written after EndTxn
    /// answers, in the background).
    fn await_offsets(&mut self, group: &str, topic: &str, want: &[(i64, i16)]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.fetch_offsets(group, topic, true);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "offsets stayed {got:?}, not {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn describe_producers(&mut self, topic: &str, partition: i32) -> PartitionResponse {
        let Response::DescribeProducers(mut r) = self.call(
            0,
            Request::DescribeProducers(DescribeProducersRequest {
                topics: vec![TopicRequest {
                    name: topic.into(),
                    partition_indexes: vec![partition],
                    ..TopicRequest::default()
                }],
                ..DescribeProducersRequest::default()
            }),
        ) else {
            panic!()
        };
        r.topics.remove(0).partitions.remove(0)
    }

    fn create_topic(&mut self, name: &str, partitions: i32) {
        let Response::CreateTopics(r) = self.call(
            5,
            Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreatableTopic {
                    name: name.into(),
                    num_partitions: partitions,
                    replication_factor: 1,
                    ..CreatableTopic::default()
                }],
                timeout_ms: 5000,
                ..CreateTopicsRequest::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!(r.topics[0].error_code, errors::NONE);
    }
}

#[test]
fn transactional_offsets_count_only_when_their_transaction_commits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Broker::start_in(&data, settings());
    let mut c = Client::connect(broker.addr);
    c.create_topic("in", 2);
    let group_partition = partition_for("g", OFFSETS_PARTITIONS);
    let me = c.init_txn("tx");

    // Committed in an open transaction: invisible, and unstable for require_stable fetches.
    assert_eq!(c.add_offsets("tx", me, "g"), errors::NONE);
    let ok = vec![errors::NONE, errors::NONE];
    assert_eq!(
        c.txn_commit(3, "tx", me, "g", "", -1, "in", &[(0, 10), (1, 20)]),
        ok
    );
    assert_eq!(
        c.fetch_offsets("g", "in", false),
        vec![(-1, errors::NONE), (-1, errors::NONE)]
    );
    assert_eq!(
        c.fetch_offsets("g", "in", true),
        vec![
            (-1, errors::UNSTABLE_OFFSET_COMMIT),
            (-1, errors::UNSTABLE_OFFSET_COMMIT)
        ]
    );
    // The offsets partition's producer state has the transaction open.
    let d = c.describe_producers(OFFSETS_TOPIC, group_partition);
    assert_eq!(d.error_code, errors::NONE);
    let p = d
        .active_producers
        .iter()
        .find(|p| p.producer_id == me.0)
        .unwrap();
    assert_eq!(p.producer_epoch, i32::from(me.1));
    assert_eq!(
        p.last_sequence, -1,
        "coordinator batches carry no sequences"
    );
    assert!(p.current_txn_start_offset >= 0);

    // Commit: the offsets become the group's.
    assert_eq!(c.end_txn("tx", me, true), errors::NONE);
    c.await_offsets("g", "in", &[(10, errors::NONE), (20, errors::NONE)]);
    let d = c.describe_producers(OFFSETS_TOPIC, group_partition);
    let p = d
        .active_producers
        .iter()
        .find(|p| p.producer_id == me.0)
        .unwrap();
    assert_eq!(p.current_txn_start_offset, -1);

    // Abort: they are dropped, the committed ones stay.
    assert_eq!(c.add_offsets("tx", me, "g"), errors::NONE);
    assert_eq!(
        c.txn_commit(2, "tx", me, "g", "", -1, "in", &[(0, 30)]),
        vec![errors::NONE]
    );
    assert_eq!(
        c.fetch_offsets("g", "in", true)[0],
        (-1, errors::UNSTABLE_OFFSET_COMMIT)
    );
    assert_eq!(c.end_txn("tx", me, false), errors::NONE);
    c.await_offsets("g", "in", &[(10, errors::NONE), (20, errors::NONE)]);

    // A new epoch fences the old one once it has written to the partition.
    let old = me;
    let me = c.init_txn("tx");
    assert!(me.1 > old.1);
    assert_eq!(c.add_offsets("tx", me, "g"), errors::NONE);
    assert_eq!(
        c.txn_commit(3, "tx", me, "g", "", -1, "in", &[(0, 40)]),
        vec![errors::NONE]
    );
    assert_eq!(
        c.txn_commit(3, "tx", old, "g", "", -1, "in", &[(0, 99)]),
        vec![errors::INVALID_PRODUCER_EPOCH]
    );

    // The group's partition must be in the transaction (KIP-890 verification): offsets of a
    // group whose partition AddOffsetsToTxn never added are refused.
    let outside = ["h1", "h2", "h3", "h4", "h5"]
        .into_iter()
        .find(|h| partition_for(h, OFFSETS_PARTITIONS) != group_partition)
        .unwrap();
    assert_eq!(
        c.txn_commit(3, "tx", me, outside, "", -1, "in", &[(0, 1)]),
        vec![errors::INVALID_TXN_STATE]
    );
    assert_eq!(
        c.txn_commit(4, "tx", me, outside, "", -1, "in", &[(0, 1)]),
        vec![errors::TRANSACTION_ABORTABLE]
    );
    assert_eq!(c.fetch_offsets(outside, "in", true)[0], (-1, errors::NONE));

    // Group-level and partition-level refusals.
    assert_eq!(c.add_offsets("tx", me, "never-seen"), errors::NONE);
    assert_eq!(
        c.txn_commit(3, "tx", me, "g", "nobody", 1, "in", &[(0, 1)]),
        vec![errors::UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        c.txn_commit(3, "tx", me, "never-seen", "", 5, "in", &[(0, 1)]),
        vec![errors::ILLEGAL_GENERATION]
    );
    assert_eq!(
        c.txn_commit(3, "tx", me, "", "", -1, "in", &[(0, 1)]),
        vec![errors::INVALID_GROUP_ID]
    );
    assert_eq!(
        c.txn_commit(3, "tx", me, "g", "", -1, "in", &[(2, 1), (0, 41)]),
        vec![errors::UNKNOWN_TOPIC_OR_PARTITION, errors::NONE]
    );
    assert_eq!(
        c.txn_commit(3, "tx", me, "g", "", -1, "nope", &[(0, 1)]),
        vec![errors::UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(
        c.describe_producers("nope", 0).error_code,
        errors::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        c.describe_producers("in", 7).error_code,
        errors::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        c.describe_producers("bad/name", 0).error_code,
        errors::INVALID_TOPIC_EXCEPTION
    );

    // A restart with the transaction open: its offsets come back pending, then commit.
    drop(c);
    drop(broker);
    let broker = Broker::start_in(&data, settings());
    let mut c = Client::connect(broker.addr);
    assert_eq!(
        c.fetch_offsets("g", "in", true),
        vec![(-1, errors::UNSTABLE_OFFSET_COMMIT), (20, errors::NONE)]
    );
    assert_eq!(c.fetch_offsets("g", "in", false)[0], (10, errors::NONE));
    assert_eq!(c.end_txn("tx", me, true), errors::NONE);
    c.await_offsets("g", "in", &[(41, errors::NONE), (20, errors::NONE)]);

    // Deleting a group drops the offsets of its open transactions: their commit finds none.
    assert_eq!(c.add_offsets("tx", me, "s"), errors::NONE);
    assert_eq!(
        c.txn_commit(3, "tx", me, "s", "", -1, "in", &[(1, 7)]),
        vec![errors::NONE]
    );
    let Response::DeleteGroups(r) = c.call(
        2,
        Request::DeleteGroups(DeleteGroupsRequest {
            groups_names: vec!["s".into()],
            ..DeleteGroupsRequest::default()
        }),
    ) else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, errors::NONE);
    assert_eq!(c.end_txn("tx", me, true), errors::NONE);
    // Once the marker is in the group's partition, nothing came back for the deleted group.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c
        .describe_producers(OFFSETS_TOPIC, partition_for("s", OFFSETS_PARTITIONS))
        .active_producers
        .iter()
        .any(|p| p.producer_id == me.0 && p.current_txn_start_offset >= 0)
    {
        assert!(
            Instant::now() < deadline,
            "the commit marker was not written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        c.fetch_offsets("s", "in", true),
        vec![(-1, errors::NONE), (-1, errors::NONE)]
    );
}
