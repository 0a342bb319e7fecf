//! A fetch returns byte-identical batches to what was produced, whether they come from the
//! batch cache (hot, sent as buffers) or from the segment files after a restart (cold, spliced
//! from the page cache to the socket), across segment boundaries and for fetches larger than
//! one splice pipe.

#![allow(clippy::unwrap_used)] // test harness helpers: a failed unwrap is a failed test

mod common;

use common::{Broker, Client};

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_engine::batch::testing::{make_batch, TestBatch};
use sluice_net::config::ConfigLayer;
use sluice_net::errors;
use sluice_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_protocol::{Request, Response};

impl Client {
    /// Fetches partition 0 of `topic` from `offset`; returns the records bytes.
    fn fetch(&mut self, version: i16, topic: &str, offset: i64, max_bytes: i32) -> Vec<u8> {
        let request = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes,
            topics: vec![FetchTopic {
                topic: topic.into(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: offset,
                    partition_max_bytes: max_bytes,
                    ..FetchPartition::default()
                }],
                ..FetchTopic::default()
            }],
            ..FetchRequest::default()
        };
        // Right after a start the broker may still be opening the partition.
        let deadline = Instant::now() + Duration::from_secs(20);
        let r = loop {
            let Response::Fetch(r) = self.call(version, Request::Fetch(request.clone())) else {
                panic!("wrong response type");
            };
            let code = r.responses[0].partitions[0].error_code;
            if code != errors::UNKNOWN_TOPIC_OR_PARTITION || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, errors::NONE);
        p.records
            .as_ref()
            .and_then(|r| r.to_bytes())
            .unwrap_or_default()
            .to_vec()
    }

    /// Reads the whole partition with fetches of `max_bytes`, checking each returns whole
    /// batches only.
    fn fetch_all(&mut self, version: i16, topic: &str, end: i64, max_bytes: i32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = 0i64;
        while offset < end {
            let got = self.fetch(version, topic, offset, max_bytes);
            assert!(!got.is_empty(), "nothing at offset {offset}");
            let mut at = 0usize;
            while at < got.len() {
                let base = i64::from_be_bytes(got[at..at + 8].try_into().unwrap());
                let len = i32::from_be_bytes(got[at + 8..at + 12].try_into().unwrap()) as usize;
                let last_delta = i32::from_be_bytes(got[at + 23..at + 27].try_into().unwrap());
                assert!(at + 12 + len <= got.len(), "a partial batch was sent");
                offset = base + i64::from(last_delta) + 1;
                at += 12 + len;
            }
            out.extend_from_slice(&got);
        }
        out
    }
}

/// What the broker stores for a produced batch: its base offset assigned, leader epoch 0.
fn stored(batch: &[u8], base: i64) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[..8].copy_from_slice(&base.to_be_bytes());
    b[12..16].copy_from_slice(&0i32.to_be_bytes());
    b
}

#[test]
fn fetched_batches_are_the_produced_bytes_hot_and_cold() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let topic = "zero-copy";
    let mut expected = Vec::new();
    let mut next = 0i64;
    let hot = {
        let broker = Broker::start_in(&data, ConfigLayer::default());
        let mut c = Client::connect(broker.addr);
        let create = CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: topic.into(),
                num_partitions: 1,
                replication_factor: 1,
                configs: vec![CreatableTopicConfig {
                    name: "segment.bytes".into(),
                    value: Some((1 << 20).to_string()),
                    ..CreatableTopicConfig::default()
                }],
                ..CreatableTopic::default()
            }],
            timeout_ms: 10_000,
            ..CreateTopicsRequest::default()
        };
        let Response::CreateTopics(r) = c.call(5, Request::CreateTopics(create)) else {
            panic!("wrong response type");
        };
        assert_eq!(r.topics[0].error_code, errors::NONE);
        // About 3.5 MB in batches of varied sizes: several segments, and more than one pipe.
        for i in 0..400u32 {
            let records = 1 + (i % 5) as i32;
            let batch = make_batch(TestBatch {
                record_count: records,
                payload_bytes: 200 + (i as usize * 7919) % 17_000,
                base_timestamp: 1_000 + i64::from(i),
                max_timestamp: 1_000 + i64::from(i),
                codec: 0,
                fill: i as u8,
            });
            let produce = ProduceRequest {
                acks: 1,
                timeout_ms: 10_000,
                topic_data: vec![TopicProduceData {
                    name: topic.into(),
                    partition_data: vec![PartitionProduceData {
                        index: 0,
                        records: Some(Bytes::from(batch.clone())),
                        ..PartitionProduceData::default()
                    }],
                    ..TopicProduceData::default()
                }],
                ..ProduceRequest::default()
            };
            let Response::Produce(r) = c.call(9, Request::Produce(produce)) else {
                panic!("wrong response type");
            };
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(p.error_code, errors::NONE);
            assert_eq!(p.base_offset, next);
            expected.extend_from_slice(&stored(&batch, next));
            next += i64::from(records);
        }
        c.fetch_all(12, topic, next, 1 << 20)
    };
    assert_eq!(hot.len(), expected.len());
    assert!(hot == expected, "hot fetch differs from what was produced");

    // After a restart the batch cache is empty: every fetch is served from the files.
    let broker = Broker::start_in(&data, ConfigLayer::default());
    let mut c = Client::connect(broker.addr);
    for (version, max_bytes) in [(12, 8 << 20), (4, 1 << 20), (7, 100_000), (11, 1)] {
        let cold = c.fetch_all(version, topic, next, max_bytes);
        assert_eq!(cold.len(), expected.len(), "v{version} max {max_bytes}");
        assert!(
            cold == expected,
            "v{version} max {max_bytes}: cold fetch differs from what was produced"
        );
    }
}
