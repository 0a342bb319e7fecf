//! The transactional data path over the wire: transactional batches hold the last stable
//! offset (LSO) back until WriteTxnMarkers ends them; a `read_committed` Fetch returns data
//! below the LSO only, lists the aborted transactions of what it returns, and a long-polling
//! one wakes when a marker moves the LSO; ListOffsets honours the isolation level; markers
//! from fenced epochs are refused; Produce refuses transactional batches without a
//! transactional id and control batches from clients; and all of it holds after a restart.

#![allow(clippy::unwrap_used)] // test harness helpers: a failed unwrap is a failed test

mod common;

use common::{Broker, Client};

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_engine::batch::BatchIter;
use sluice_engine::builder::{control_marker_batch, BatchBuilder};
use sluice_engine::compression::Codec;
use sluice_net::config::ConfigLayer;
use sluice_net::errors;
use sluice_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_protocol::messages::fetch_response::PartitionData;
use sluice_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use sluice_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic, WriteTxnMarkersRequest,
};
use sluice_protocol::{Request, Response};

const TOPIC: &str = "txn-data";
const LATEST: i64 = -1;

/// A batch of `count` records, transactional for `pid` when `pid >= 0`.
fn records(pid: i64, epoch: i16, seq: i32, count: i32) -> Bytes {
    let mut b = BatchBuilder::new(Codec::None);
    if pid >= 0 {
        b = b.producer(pid, epoch, seq).transactional(true);
    }
    for i in 0..count {
        b.append(1_000 + i64::from(i), None, Some(b"value"), &[])
            .unwrap();
    }
    b.build().unwrap()
}

impl Client {
    fn create_topic(&mut self) {
        let create = CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: TOPIC.into(),
                num_partitions: 2,
                replication_factor: 1,
                ..CreatableTopic::default()
            }],
            timeout_ms: 10_000,
            ..CreateTopicsRequest::default()
        };
        let Response::CreateTopics(r) = self.call(5, Request::CreateTopics(create)) else {
            panic!("wrong response type");
        };
        assert_eq!(r.topics[0].error_code, errors::NONE);
    }

    /// Produces `batch` to partition `partition`; returns (error, base offset).
    fn produce(&mut self, partition: i32, batch: Bytes, txn_id: Option<&str>) -> (i16, i64) {
        let produce = ProduceRequest {
            transactional_id: txn_id.map(String::from),
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![TopicProduceData {
                name: TOPIC.into(),
                partition_data: vec![PartitionProduceData {
                    index: partition,
                    records: Some(batch),
                    ..PartitionProduceData::default()
                }],
                ..TopicProduceData::default()
            }],
            ..ProduceRequest::default()
        };
        let Response::Produce(r) = self.call(9, Request::Produce(produce)) else {
            panic!("wrong response type");
        };
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Writes a marker to `partitions` of the topic; returns their error codes.
    fn marker(
        &mut self,
        pid: i64,
        epoch: i16,
        commit: bool,
        coord: i32,
        parts: &[i32],
    ) -> Vec<i16> {
        let request = WriteTxnMarkersRequest {
            markers: vec![WritableTxnMarker {
                producer_id: pid,
                producer_epoch: epoch,
                transaction_result: commit,
                topics: vec![WritableTxnMarkerTopic {
                    name: TOPIC.into(),
                    partition_indexes: parts.to_vec(),
                    ..WritableTxnMarkerTopic::default()
                }],
                coordinator_epoch: coord,
                ..WritableTxnMarker::default()
            }],
            ..WriteTxnMarkersRequest::default()
        };
        let Response::WriteTxnMarkers(r) = self.call(1, Request::WriteTxnMarkers(request)) else {
            panic!("wrong response type");
        };
        assert_eq!(r.markers[0].producer_id, pid);
        r.markers[0].topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect()
    }

    /// Fetches partition `partition` from `offset` at `isolation`.
    fn fetch(
        &mut self,
        partition: i32,
        offset: i64,
        isolation: i8,
        max_wait_ms: i32,
    ) -> PartitionData {
        let request = FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            max_bytes: 1 << 20,
            isolation_level: isolation,
            topics: vec![FetchTopic {
                topic: TOPIC.into(),
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset: offset,
                    partition_max_bytes: 1 << 20,
                    ..FetchPartition::default()
                }],
                ..FetchTopic::default()
            }],
            ..FetchRequest::default()
        };
        let Response::Fetch(r) = self.call(12, Request::Fetch(request)) else {
            panic!("wrong response type");
        };
        let p = r.responses[0].partitions[0].clone();
        assert_eq!(p.error_code, errors::NONE);
        p
    }

    /// ListOffsets of partition `partition` at `timestamp` and `isolation`: (error, offset).
    fn list_offset(&mut self, partition: i32, timestamp: i64, isolation: i8) -> (i16, i64) {
        let request = ListOffsetsRequest {
            replica_id: -1,
            isolation_level: isolation,
            topics: vec![ListOffsetsTopic {
                name: TOPIC.into(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: partition,
                    timestamp,
                    current_leader_epoch: -1,
                    ..ListOffsetsPartition::default()
                }],
                ..ListOffsetsTopic::default()
            }],
            ..ListOffsetsRequest::default()
        };
        let Response::ListOffsets(r) = self.call(7, Request::ListOffsets(request)) else {
            panic!("wrong response type");
        };
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset)
    }
}

/// (base offset, next offset, is control) of every batch a fetch returned.
fn batches(p: &PartitionData) -> Vec<(i64, i64, bool)> {
    let bytes = p
        .records
        .as_ref()
        .and_then(|r| r.to_bytes())
        .unwrap_or_default();
    BatchIter::new(&bytes)
        .map(|item| {
            let (_, v) = item.unwrap();
            (v.base_offset().0, v.next_offset().0, v.is_control())
        })
        .collect()
}

/// The aborted transactions of a fetch response as (producer id, first offset).
fn aborted(p: &PartitionData) -> Option<Vec<(i64, i64)>> {
    p.aborted_transactions
        .as_ref()
        .map(|v| v.iter().map(|a| (a.producer_id, a.first_offset)).collect())
}

/// The data path on its own: this test plays the coordinator (it writes the markers with
/// WriteTxnMarkers), so Produce must not ask the real one about its transactions, as a Kafka
/// broker with `transaction.partition.verification.enable=false` does not.
fn data_path_only() -> ConfigLayer {
    ConfigLayer {
        transaction_partition_verification_enable: Some(false),
        ..ConfigLayer::default()
    }
}

#[test]
fn read_committed_sees_only_stable_data_and_the_aborted_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Broker::start_in(&data, data_path_only());
    let mut c = Client::connect(broker.addr);
    c.create_topic();

    assert_eq!(
        c.produce(0, records(-1, -1, -1, 2), None),
        (errors::NONE, 0)
    );
    assert_eq!(
        c.produce(0, records(7, 0, 0, 2), Some("t7")),
        (errors::NONE, 2)
    );
    assert_eq!(
        c.produce(1, records(7, 0, 0, 1), Some("t7")),
        (errors::NONE, 0)
    );

    // Refused: a transactional batch without a transactional id, and a forged marker.
    let (code, _) = c.produce(0, records(8, 0, 0, 1), None);
    assert_eq!(code, errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    let forged = control_marker_batch(true, 0, 7, 0, 1).unwrap();
    assert_eq!(c.produce(0, forged, Some("t7")).0, errors::INVALID_RECORD);

    // The open transaction holds the LSO at its first offset.
    let uncommitted = c.fetch(0, 0, 0, 0);
    assert_eq!(
        (uncommitted.high_watermark, uncommitted.last_stable_offset),
        (4, 2)
    );
    assert_eq!(batches(&uncommitted), vec![(0, 2, false), (2, 4, false)]);
    assert_eq!(aborted(&uncommitted), None, "read_uncommitted gets no list");
    let committed = c.fetch(0, 0, 1, 0);
    assert_eq!(
        (committed.high_watermark, committed.last_stable_offset),
        (4, 2)
    );
    assert_eq!(batches(&committed), vec![(0, 2, false)]);
    assert_eq!(aborted(&committed), Some(vec![]));
    assert_eq!(c.list_offset(0, LATEST, 0), (errors::NONE, 4));
    assert_eq!(c.list_offset(0, LATEST, 1), (errors::NONE, 2));
    // The first record at or after time 1000 is offset 0 either way; the transaction's record
    // with time 1001 is at offset 3, which read_committed may not be told about yet.
    assert_eq!(c.list_offset(0, 1_000, 1), (errors::NONE, 0));
    assert_eq!(c.list_offset(0, 1_001, 0), (errors::NONE, 1));
    assert_eq!(c.list_offset(1, 1_000, 1), (errors::NONE, -1));
    assert_eq!(c.list_offset(1, 1_000, 0), (errors::NONE, 0));

    // A read_committed fetch waiting at the LSO wakes when the abort marker moves it.
    let addr = broker.addr;
    let waiter = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let start = Instant::now();
        let p = c.fetch(0, 2, 1, 15_000);
        (p, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        c.marker(7, 0, false, 3, &[0, 1]),
        vec![errors::NONE, errors::NONE]
    );
    let (woken, waited) = waiter.join().unwrap();
    assert!(
        waited < Duration::from_secs(12),
        "woken by the marker, not the deadline"
    );
    assert_eq!(woken.last_stable_offset, 5);
    assert_eq!(batches(&woken), vec![(2, 4, false), (4, 5, true)]);
    assert_eq!(aborted(&woken), Some(vec![(7, 2)]));

    // Markers from an old producer epoch or an old coordinator epoch are refused.
    assert_eq!(
        c.produce(0, records(7, 1, 0, 1), Some("t7")),
        (errors::NONE, 5)
    );
    assert_eq!(
        c.marker(7, 0, true, 3, &[0]),
        vec![errors::INVALID_PRODUCER_EPOCH]
    );
    assert_eq!(
        c.marker(7, 1, true, 2, &[0]),
        vec![errors::TRANSACTION_COORDINATOR_FENCED]
    );
    assert_eq!(c.fetch(0, 0, 1, 0).last_stable_offset, 5);
    // Unknown partitions are named as such; the known one is committed.
    let request_parts = [0, 9];
    assert_eq!(
        c.marker(7, 1, true, 3, &request_parts),
        vec![errors::NONE, errors::UNKNOWN_TOPIC_OR_PARTITION]
    );
    let after = c.fetch(0, 0, 1, 0);
    assert_eq!((after.high_watermark, after.last_stable_offset), (7, 7));
    assert_eq!(
        batches(&after),
        vec![
            (0, 2, false),
            (2, 4, false),
            (4, 5, true),
            (5, 6, false),
            (6, 7, true)
        ]
    );
    assert_eq!(aborted(&after), Some(vec![(7, 2)]));
    // From past the aborted transaction nothing is listed.
    assert_eq!(aborted(&c.fetch(0, 5, 1, 0)), Some(vec![]));

    // A transaction left open across a restart still holds the LSO; the index is kept.
    assert_eq!(
        c.produce(0, records(9, 0, 0, 3), Some("t9")),
        (errors::NONE, 7)
    );
    drop(c);
    drop(broker);
    let broker = Broker::start_in(&data, data_path_only());
    let mut c = Client::connect(broker.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.list_offset(0, LATEST, 1).0 != errors::NONE {
        assert!(Instant::now() < deadline, "partition not back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.list_offset(0, LATEST, 1), (errors::NONE, 7));
    assert_eq!(c.list_offset(0, LATEST, 0), (errors::NONE, 10));
    let cold = c.fetch(0, 0, 1, 0);
    assert_eq!((cold.high_watermark, cold.last_stable_offset), (10, 7));
    assert_eq!(aborted(&cold), Some(vec![(7, 2)]));
    assert_eq!(batches(&cold).last(), Some(&(6, 7, true)));
    assert_eq!(c.marker(9, 0, false, 3, &[0]), vec![errors::NONE]);
    let done = c.fetch(0, 7, 1, 0);
    assert_eq!(done.last_stable_offset, 11);
    assert_eq!(batches(&done), vec![(7, 10, false), (10, 11, true)]);
    assert_eq!(aborted(&done), Some(vec![(9, 7)]));
}

/// A WriteTxnMarkers answer reduced to producer id -> topic -> (partition, error code).
type MarkerShape = (i64, Vec<(String, Vec<(i32, i16)>)>);

#[test]
fn write_txn_markers_answers_every_marker_in_the_shape_of_the_request() {
    let broker = Broker::start_with(data_path_only());
    let mut c = Client::connect(broker.addr);
    c.create_topic();
    assert_eq!(
        c.produce(0, records(21, 0, 0, 2), Some("a")),
        (errors::NONE, 0)
    );
    assert_eq!(
        c.produce(1, records(22, 0, 0, 1), Some("b")),
        (errors::NONE, 0)
    );
    assert_eq!(c.fetch(0, 0, 1, 0).last_stable_offset, 0);
    // v0 (not flexible), two producers, an unknown topic among known ones.
    let topic = |name: &str, parts: &[i32]| WritableTxnMarkerTopic {
        name: name.into(),
        partition_indexes: parts.to_vec(),
        ..WritableTxnMarkerTopic::default()
    };
    let request = WriteTxnMarkersRequest {
        markers: vec![
            WritableTxnMarker {
                producer_id: 21,
                producer_epoch: 0,
                transaction_result: true,
                topics: vec![topic(TOPIC, &[0, 1])],
                coordinator_epoch: 0,
                ..WritableTxnMarker::default()
            },
            WritableTxnMarker {
                producer_id: 22,
                producer_epoch: 0,
                transaction_result: false,
                topics: vec![topic("no-such-topic", &[0]), topic(TOPIC, &[1])],
                coordinator_epoch: 0,
                ..WritableTxnMarker::default()
            },
        ],
        ..WriteTxnMarkersRequest::default()
    };
    let Response::WriteTxnMarkers(r) = c.call(0, Request::WriteTxnMarkers(request)) else {
        panic!("wrong response type");
    };
    let shape: Vec<MarkerShape> = r
        .markers
        .iter()
        .map(|m| {
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| (p.partition_index, p.error_code))
                        .collect();
                    (t.name.clone(), parts)
                })
                .collect();
            (m.producer_id, topics)
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (21, vec![(TOPIC.to_string(), vec![(0, 0), (1, 0)])]),
            (
                22,
                vec![
                    (
                        "no-such-topic".to_string(),
                        vec![(0, errors::UNKNOWN_TOPIC_OR_PARTITION)]
                    ),
                    (TOPIC.to_string(), vec![(1, 0)])
                ]
            ),
        ]
    );
    // Partition 1 got a commit of producer 21 (which had nothing open there) and the abort of
    // producer 22: both partitions are stable, and only 22's transaction is listed.
    let p0 = c.fetch(0, 0, 1, 0);
    assert_eq!((p0.high_watermark, p0.last_stable_offset), (3, 3));
    assert_eq!(aborted(&p0), Some(vec![]));
    let p1 = c.fetch(1, 0, 1, 0);
    assert_eq!((p1.high_watermark, p1.last_stable_offset), (3, 3));
    assert_eq!(aborted(&p1), Some(vec![(22, 0)]));
    assert_eq!(
        batches(&p1),
        vec![(0, 1, false), (1, 2, true), (2, 3, true)]
    );
}
