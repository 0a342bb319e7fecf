//! The transaction coordinator answers every transaction API with Kafka's outcomes and error
//! codes, aborts transactions past their timeout, and completes a transaction that a restart
//! found prepared in `__transaction_state` — checked with raw requests against an in-process
//! broker (two shards, so that most requests cross the mesh to the coordinator shard).

#![allow(clippy::unwrap_used)] // test harness helpers: a failed unwrap is a failed test

mod common;

use common::{Broker, Client};

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_engine::batch::BatchIter;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::compression::Codec;
use sluice_net::config::ConfigLayer;
use sluice_net::errors;
use sluice_net::txn::{self, coordinator, records, state};
use sluice_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use sluice_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use sluice_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult;
use sluice_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use sluice_protocol::messages::describe_transactions_response::TransactionState;
use sluice_protocol::messages::end_txn_request::EndTxnRequest;
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use sluice_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use sluice_protocol::messages::list_transactions_request::ListTransactionsRequest;
use sluice_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_protocol::{Request, Response};

const TXN_PARTITIONS: i32 = 4;

fn settings() -> ConfigLayer {
    ConfigLayer {
        offsets_topic_num_partitions: Some(4),
        transaction_state_log_num_partitions: Some(TXN_PARTITIONS),
        transaction_abort_timed_out_transaction_cleanup_interval_ms: Some(100),
        ..ConfigLayer::default()
    }
}

impl Client {
    /// InitProducerId at `version`: (error, producer id, epoch). Waits out
    /// COORDINATOR_LOAD_IN_PROGRESS after a start, as clients do.
    fn init(
        &mut self,
        version: i16,
        id: &str,
        timeout_ms: i32,
        current: Option<(i64, i16)>,
    ) -> (i16, i64, i16) {
        let (producer_id, producer_epoch) = current.unwrap_or((-1, -1));
        let request = Request::InitProducerId(InitProducerIdRequest {
            transactional_id: Some(id.into()),
            transaction_timeout_ms: timeout_ms,
            producer_id,
            producer_epoch,
            ..InitProducerIdRequest::default()
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let Response::InitProducerId(r) = self.call(version, request.clone()) else {
                panic!()
            };
            if r.error_code != errors::COORDINATOR_LOAD_IN_PROGRESS || Instant::now() > deadline {
                return (r.error_code, r.producer_id, r.producer_epoch);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// AddPartitionsToTxn v0-3: the error of every partition, in request order.
    fn add(
        &mut self,
        version: i16,
        id: &str,
        (pid, epoch): (i64, i16),
        partitions: &[(&str, i32)],
    ) -> Vec<i16> {
        let r = self.call(
            version,
            Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
                v3_and_below_transactional_id: id.into(),
                v3_and_below_producer_id: pid,
                v3_and_below_producer_epoch: epoch,
                v3_and_below_topics: topics(partitions),
                ..AddPartitionsToTxnRequest::default()
            }),
        );
        let Response::AddPartitionsToTxn(r) = r else {
            panic!()
        };
        codes(&r.results_by_topic_v3_and_below, partitions)
    }

    fn end(&mut self, version: i16, id: &str, (pid, epoch): (i64, i16), commit: bool) -> i16 {
        let r = self.call(
            version,
            Request::EndTxn(EndTxnRequest {
                transactional_id: id.into(),
                producer_id: pid,
                producer_epoch: epoch,
                committed: commit,
                ..EndTxnRequest::default()
            }),
        );
        let Response::EndTxn(r) = r else { panic!() };
        r.error_code
    }

    fn describe(&mut self, ids: &[&str]) -> Vec<TransactionState> {
        let r = self.call(
            0,
            Request::DescribeTransactions(DescribeTransactionsRequest {
                transactional_ids: ids.iter().map(|s| s.to_string()).collect(),
                ..DescribeTransactionsRequest::default()
            }),
        );
        let Response::DescribeTransactions(r) = r else {
            panic!()
        };
        r.transaction_states
    }

    /// Waits until `id` is in `state` (markers are written in the background).
    fn await_state(&mut self, id: &str, state: &str) -> TransactionState {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let d = self.describe(&[id]).remove(0);
            if d.transaction_state == state {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "{id} stayed in {} (error {}), not {state}",
                d.transaction_state,
                d.error_code
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn create_topic(&mut self, name: &str, partitions: i32) {
        let r = self.call(
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
        );
        let Response::CreateTopics(r) = r else {
            panic!()
        };
        assert_eq!(r.topics[0].error_code, errors::NONE);
    }

    /// Produces one batch to `topic`/`partition` (acks=all); returns the partition's error.
    fn produce(
        &mut self,
        transactional_id: Option<&str>,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> i16 {
        let r = self.call(
            9,
            Request::Produce(ProduceRequest {
                transactional_id: transactional_id.map(str::to_string),
                acks: -1,
                timeout_ms: 5000,
                topic_data: vec![TopicProduceData {
                    name: topic.into(),
                    partition_data: vec![PartitionProduceData {
                        index: partition,
                        records: Some(batch),
                        ..PartitionProduceData::default()
                    }],
                    ..TopicProduceData::default()
                }],
                ..ProduceRequest::default()
            }),
        );
        let Response::Produce(r) = r else { panic!() };
        r.responses[0].partition_responses[0].error_code
    }

    /// Every batch of `topic`/`partition` (read_uncommitted): (is control, producer id).
    fn batches(&mut self, topic: &str, partition: i32) -> Vec<(bool, i64)> {
        let r = self.call(
            12,
            Request::Fetch(FetchRequest {
                max_wait_ms: 0,
                max_bytes: 1 << 20,
                topics: vec![FetchTopic {
                    topic: topic.into(),
                    partitions: vec![FetchPartition {
                        partition,
                        fetch_offset: 0,
                        partition_max_bytes: 1 << 20,
                        ..FetchPartition::default()
                    }],
                    ..FetchTopic::default()
                }],
                ..FetchRequest::default()
            }),
        );
        let Response::Fetch(r) = r else { panic!() };
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, errors::NONE);
        let bytes = p
            .records
            .as_ref()
            .and_then(|r| r.to_bytes())
            .unwrap_or_default();
        BatchIter::new(&bytes)
            .map(|b| {
                let (_, b) = b.unwrap();
                (b.is_control(), b.producer_id())
            })
            .collect()
    }
}

fn topics(partitions: &[(&str, i32)]) -> Vec<AddPartitionsToTxnTopic> {
    let mut out: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in partitions {
        match out.iter_mut().find(|x| x.name == *t) {
            Some(x) => x.partitions.push(*p),
            None => out.push(AddPartitionsToTxnTopic {
                name: t.to_string(),
                partitions: vec![*p],
                ..AddPartitionsToTxnTopic::default()
            }),
        }
    }
    out
}

fn codes(results: &[AddPartitionsToTxnTopicResult], partitions: &[(&str, i32)]) -> Vec<i16> {
    partitions
        .iter()
        .map(|(t, p)| {
            results
                .iter()
                .find(|r| r.name == *t)
                .and_then(|r| {
                    r.results_by_partition
                        .iter()
                        .find(|x| x.partition_index == *p)
                })
                .map(|x| x.partition_error_code)
                .unwrap_or_else(|| panic!("no result for {t}-{p}"))
        })
        .collect()
}

fn transactional_batch((pid, epoch): (i64, i16), sequence: i32, value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::new(Codec::None)
        .producer(pid, epoch, sequence)
        .transactional(true);
    b.append(0, None, Some(value), &[]).unwrap();
    b.build().unwrap()
}

#[test]
fn every_transaction_api_through_one_transactional_ids_life() {
    let broker = Broker::start_with(settings());
    let mut c = Client::connect(broker.addr);

    // FindCoordinator for transactional ids, single and batched. A connection accepted while
    // the control shard is still creating `__transaction_state` is told to retry, as clients do.
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let Response::FindCoordinator(r) = c.call(
            3,
            Request::FindCoordinator(FindCoordinatorRequest {
                key: "tx-a".into(),
                key_type: 1,
                ..FindCoordinatorRequest::default()
            }),
        ) else {
            panic!()
        };
        if r.error_code != errors::COORDINATOR_NOT_AVAILABLE || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (r.error_code, r.port),
        (errors::NONE, i32::from(broker.addr.port()))
    );
    let Response::FindCoordinator(r) = c.call(
        4,
        Request::FindCoordinator(FindCoordinatorRequest {
            key_type: 1,
            coordinator_keys: vec!["tx-a".into(), "tx-b".into()],
            ..FindCoordinatorRequest::default()
        }),
    ) else {
        panic!()
    };
    assert_eq!(r.coordinators.len(), 2);
    assert!(r.coordinators.iter().all(|k| k.error_code == errors::NONE));

    c.create_topic("t", 2);
    assert_eq!(c.init(4, "", 60_000, None).0, errors::INVALID_REQUEST);
    // Timeouts outside 1..=transaction.max.timeout.ms.
    assert_eq!(
        c.init(4, "tx-a", 0, None).0,
        errors::INVALID_TRANSACTION_TIMEOUT
    );
    assert_eq!(
        c.init(4, "tx-a", 900_001, None).0,
        errors::INVALID_TRANSACTION_TIMEOUT
    );
    let (code, pid, epoch) = c.init(4, "tx-a", 60_000, None);
    assert_eq!((code, epoch), (errors::NONE, 0));
    let me = (pid, 0);

    // The producer must match; fenced is INVALID_PRODUCER_EPOCH before v2.
    assert_eq!(
        c.add(3, "tx-a", (pid + 1, 0), &[("t", 0)]),
        vec![errors::INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(
        c.add(3, "tx-a", (pid, 1), &[("t", 0)]),
        vec![errors::PRODUCER_FENCED]
    );
    assert_eq!(
        c.add(1, "tx-a", (pid, 1), &[("t", 0)]),
        vec![errors::INVALID_PRODUCER_EPOCH]
    );
    assert_eq!(
        c.add(3, "tx-unknown", me, &[("t", 0)]),
        vec![errors::INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(
        c.add(3, "tx-a", me, &[("nope", 0), ("t", 0), ("t", 7)]),
        vec![
            errors::UNKNOWN_TOPIC_OR_PARTITION,
            errors::OPERATION_NOT_ATTEMPTED,
            errors::UNKNOWN_TOPIC_OR_PARTITION
        ]
    );
    // No transaction yet.
    assert_eq!(c.end(3, "tx-a", me, true), errors::INVALID_TXN_STATE);

    assert_eq!(c.add(3, "tx-a", me, &[("t", 0)]), vec![errors::NONE]);
    // The broker form (v4+): verify one transaction, add to another in the same request.
    let Response::AddPartitionsToTxn(r) = c.call(
        4,
        Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
            transactions: vec![
                AddPartitionsToTxnTransaction {
                    transactional_id: "tx-a".into(),
                    producer_id: pid,
                    producer_epoch: 0,
                    verify_only: true,
                    topics: topics(&[("t", 0), ("t", 1)]),
                    ..AddPartitionsToTxnTransaction::default()
                },
                AddPartitionsToTxnTransaction {
                    transactional_id: "tx-nobody".into(),
                    producer_id: 5,
                    producer_epoch: 0,
                    verify_only: false,
                    topics: topics(&[("t", 1)]),
                    ..AddPartitionsToTxnTransaction::default()
                },
            ],
            ..AddPartitionsToTxnRequest::default()
        }),
    ) else {
        panic!()
    };
    assert_eq!(r.error_code, errors::NONE);
    assert_eq!(r.results_by_transaction[0].transactional_id, "tx-a");
    assert_eq!(
        codes(
            &r.results_by_transaction[0].topic_results,
            &[("t", 0), ("t", 1)]
        ),
        vec![errors::NONE, errors::INVALID_TXN_STATE]
    );
    assert_eq!(
        codes(&r.results_by_transaction[1].topic_results, &[("t", 1)]),
        vec![errors::INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(c.add(3, "tx-a", me, &[("t", 1)]), vec![errors::NONE]);
    let Response::AddOffsetsToTxn(r) = c.call(
        3,
        Request::AddOffsetsToTxn(AddOffsetsToTxnRequest {
            transactional_id: "tx-a".into(),
            producer_id: pid,
            producer_epoch: 0,
            group_id: "g".into(),
            ..AddOffsetsToTxnRequest::default()
        }),
    ) else {
        panic!()
    };
    assert_eq!(r.error_code, errors::NONE);

    let d = c.describe(&["tx-a", "tx-unknown", ""]);
    assert_eq!(d[0].error_code, errors::NONE);
    assert_eq!(d[0].transaction_state, "Ongoing");
    assert_eq!(
        (
            d[0].producer_id,
            d[0].producer_epoch,
            d[0].transaction_timeout_ms
        ),
        (pid, 0, 60_000)
    );
    assert!(d[0].transaction_start_time_ms > 0);
    let mut parts: Vec<(String, Vec<i32>)> = d[0]
        .topics
        .iter()
        .map(|t| (t.topic.clone(), t.partitions.clone()))
        .collect();
    parts.sort();
    let offsets_partition = sluice_net::groups::partition_for("g", 4);
    assert_eq!(
        parts,
        vec![
            ("__consumer_offsets".to_string(), vec![offsets_partition]),
            ("t".to_string(), vec![0, 1])
        ]
    );
    assert_eq!(d[1].error_code, errors::TRANSACTIONAL_ID_NOT_FOUND);
    assert_eq!(d[2].error_code, errors::INVALID_REQUEST);

    let list = |c: &mut Client, states: &[&str], pids: &[i64], duration: i64| {
        let Response::ListTransactions(r) = c.call(
            1,
            Request::ListTransactions(ListTransactionsRequest {
                state_filters: states.iter().map(|s| s.to_string()).collect(),
                producer_id_filters: pids.to_vec(),
                duration_filter: duration,
                ..ListTransactionsRequest::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!(r.error_code, errors::NONE);
        let ids: Vec<String> = r
            .transaction_states
            .iter()
            .map(|t| t.transactional_id.clone())
            .collect();
        (ids, r.unknown_state_filters)
    };
    assert_eq!(
        list(&mut c, &["Ongoing", "Bogus"], &[], -1),
        (vec!["tx-a".to_string()], vec!["Bogus".to_string()])
    );
    assert_eq!(list(&mut c, &["Empty"], &[], -1).0, Vec::<String>::new());
    assert_eq!(list(&mut c, &[], &[pid + 1000], -1).0, Vec::<String>::new());
    assert_eq!(list(&mut c, &[], &[pid], 3_600_000).0, Vec::<String>::new());
    assert_eq!(list(&mut c, &[], &[pid], 0).0, vec!["tx-a".to_string()]);

    // Data, then commit: answered once PrepareCommit is durable; markers follow.
    assert_eq!(
        c.produce(Some("tx-a"), "t", 0, transactional_batch(me, 0, b"v0")),
        errors::NONE
    );
    assert_eq!(c.end(3, "tx-a", me, true), errors::NONE);
    let d = c.await_state("tx-a", "CompleteCommit");
    assert!(d.topics.is_empty());
    assert_eq!(c.batches("t", 0), vec![(false, pid), (true, pid)]);
    assert_eq!(c.batches("t", 1), vec![(true, pid)]);
    // A retried commit is answered again; an abort now is a state error.
    assert_eq!(c.end(3, "tx-a", me, true), errors::NONE);
    assert_eq!(c.end(3, "tx-a", me, false), errors::INVALID_TXN_STATE);

    // A second producer with the same id fences the first.
    let (code, pid2, epoch) = c.init(4, "tx-a", 60_000, None);
    assert_eq!((code, pid2, epoch), (errors::NONE, pid, 1));
    assert_eq!(
        c.add(3, "tx-a", me, &[("t", 0)]),
        vec![errors::PRODUCER_FENCED]
    );
    assert_eq!(c.end(1, "tx-a", me, true), errors::INVALID_PRODUCER_EPOCH);

    // A new producer while a transaction is open aborts it with a bumped epoch first.
    assert_eq!(c.add(3, "tx-a", (pid, 1), &[("t", 1)]), vec![errors::NONE]);
    assert_eq!(
        c.produce(
            Some("tx-a"),
            "t",
            1,
            transactional_batch((pid, 1), 0, b"v1")
        ),
        errors::NONE
    );
    assert_eq!(
        c.init(4, "tx-a", 60_000, None).0,
        errors::CONCURRENT_TRANSACTIONS
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let epoch = loop {
        let (code, _, epoch) = c.init(4, "tx-a", 60_000, None);
        if code == errors::NONE {
            break epoch;
        }
        assert_eq!(code, errors::CONCURRENT_TRANSACTIONS);
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        epoch, 3,
        "1, fenced to 2 by the abort, 3 for the new producer"
    );
    assert_eq!(
        c.batches("t", 1),
        vec![(true, pid), (false, pid), (true, pid)]
    );

    // KIP-360: the producer continues with its current id and epoch; an old epoch is fenced.
    let (code, _, epoch) = c.init(4, "tx-a", 60_000, Some((pid, 3)));
    assert_eq!((code, epoch), (errors::NONE, 4));
    assert_eq!(
        c.init(4, "tx-a", 60_000, Some((pid, 1))).0,
        errors::PRODUCER_FENCED
    );
    assert_eq!(
        c.init(3, "tx-a", 60_000, Some((pid, 1))).0,
        errors::INVALID_PRODUCER_EPOCH
    );
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let broker = Broker::start_with(settings());
    let mut c = Client::connect(broker.addr);
    c.create_topic("t", 1);
    let (code, pid, epoch) = c.init(4, "tx-slow", 300, None);
    assert_eq!((code, epoch), (errors::NONE, 0));
    assert_eq!(
        c.add(3, "tx-slow", (pid, 0), &[("t", 0)]),
        vec![errors::NONE]
    );
    assert_eq!(
        c.produce(
            Some("tx-slow"),
            "t",
            0,
            transactional_batch((pid, 0), 0, b"x")
        ),
        errors::NONE
    );
    let d = c.await_state("tx-slow", "CompleteAbort");
    assert_eq!(d.producer_epoch, 1);
    assert_eq!(c.batches("t", 0), vec![(false, pid), (true, pid)]);
    assert_eq!(c.end(3, "tx-slow", (pid, 0), true), errors::PRODUCER_FENCED);
}

#[test]
fn a_commit_prepared_before_a_crash_is_completed_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pid;
    {
        let broker = Broker::start_in(&data, settings());
        let mut c = Client::connect(broker.addr);
        c.create_topic("t", 1);
        let (code, p, _) = c.init(4, "tx-r", 60_000, None);
        assert_eq!(code, errors::NONE);
        pid = p;
        assert_eq!(c.add(3, "tx-r", (pid, 0), &[("t", 0)]), vec![errors::NONE]);
        assert_eq!(
            c.produce(Some("tx-r"), "t", 0, transactional_batch((pid, 0), 0, b"x")),
            errors::NONE
        );
        // The coordinator's PrepareCommit reached the log, then the broker died before any
        // marker was written: the record is written here as the coordinator writes it.
        let prepared = state::TxnData {
            producer_id: pid,
            last_producer_id: -1,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms: 60_000,
            state: state::TxnState::PrepareCommit,
            partitions: [("t".to_string(), 0)].into_iter().collect(),
            start_ms: 1,
            last_update_ms: 2,
        };
        let mut b = BatchBuilder::new(Codec::None);
        b.append(
            2,
            Some(&records::key("tx-r")),
            Some(&records::value(
                &coordinator::stored(&prepared),
                records::VALUE_VERSION,
            )),
            &[],
        )
        .unwrap();
        let partition = txn::partition_for("tx-r", TXN_PARTITIONS);
        assert_eq!(
            c.produce(None, txn::TXN_TOPIC, partition, b.build().unwrap()),
            errors::NONE
        );
        assert_eq!(c.batches("t", 0), vec![(false, pid)]);
    }
    let broker = Broker::start_in(&data, settings());
    let mut c = Client::connect(broker.addr);
    // Loading, then the markers are written and the transaction completes.
    let d = c.await_state("tx-r", "CompleteCommit");
    assert_eq!((d.producer_id, d.producer_epoch), (pid, 0));
    assert_eq!(c.batches("t", 0), vec![(false, pid), (true, pid)]);
    // The id carries on from its stored epoch.
    let (code, p, epoch) = c.init(4, "tx-r", 60_000, None);
    assert_eq!((code, p, epoch), (errors::NONE, pid, 1));
}

#[test]
fn a_transactional_batch_outside_the_ongoing_transaction_is_refused() {
    let broker = Broker::start_with(settings());
    let mut c = Client::connect(broker.addr);
    c.create_topic("t", 2);
    let (code, pid, _) = c.init(4, "tx-v", 60_000, None);
    assert_eq!(code, errors::NONE);
    let me = (pid, 0);
    // No transaction yet, then a partition the transaction did not add.
    assert_eq!(
        c.produce(Some("tx-v"), "t", 0, transactional_batch(me, 0, b"early")),
        errors::INVALID_TXN_STATE
    );
    assert_eq!(c.add(3, "tx-v", me, &[("t", 0)]), vec![errors::NONE]);
    assert_eq!(
        c.produce(Some("tx-v"), "t", 1, transactional_batch(me, 0, b"stray")),
        errors::INVALID_TXN_STATE
    );
    assert_eq!(
        c.produce(
            Some("tx-v"),
            "t",
            0,
            transactional_batch((pid, 1), 0, b"future")
        ),
        errors::PRODUCER_FENCED
    );
    assert_eq!(
        c.produce(
            Some("tx-v"),
            "t",
            0,
            transactional_batch((pid + 1, 0), 0, b"other")
        ),
        errors::INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        c.produce(Some("tx-v"), "t", 0, transactional_batch(me, 0, b"in")),
        errors::NONE
    );
    // A produce still in flight when the client aborted lands after the abort: refused, so
    // no transaction without an end opens on the partition.
    assert_eq!(c.end(3, "tx-v", me, false), errors::NONE);
    c.await_state("tx-v", "CompleteAbort");
    assert_eq!(
        c.produce(Some("tx-v"), "t", 0, transactional_batch(me, 1, b"late")),
        errors::INVALID_TXN_STATE
    );
    assert_eq!(c.batches("t", 0), vec![(false, pid), (true, pid)]);
    assert!(c.batches("t", 1).is_empty());
}

#[test]
fn an_idle_transactional_id_expires_with_a_tombstone_that_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let expiring = ConfigLayer {
        transactional_id_expiration_ms: Some(300),
        transaction_remove_expired_transaction_cleanup_interval_ms: Some(100),
        ..settings()
    };
    let first;
    {
        let broker = Broker::start_in(&data, expiring.clone());
        let mut c = Client::connect(broker.addr);
        c.create_topic("t", 1);
        let (code, pid, _) = c.init(4, "tx-idle", 60_000, None);
        assert_eq!(code, errors::NONE);
        first = pid;
        // An open transaction never expires; once it ends, the id is idle.
        assert_eq!(
            c.add(3, "tx-idle", (pid, 0), &[("t", 0)]),
            vec![errors::NONE]
        );
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(c.describe(&["tx-idle"])[0].transaction_state, "Ongoing");
        assert_eq!(c.end(3, "tx-idle", (pid, 0), false), errors::NONE);
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.describe(&["tx-idle"])[0].error_code != errors::TRANSACTIONAL_ID_NOT_FOUND {
            assert!(Instant::now() < deadline, "the idle id did not expire");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The tombstone is what the restart replays: the id stays gone, and a new producer with it
    // starts over with a new producer id.
    let broker = Broker::start_in(&data, settings());
    let mut c = Client::connect(broker.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        let code = c.describe(&["tx-idle"])[0].error_code;
        if code != errors::COORDINATOR_LOAD_IN_PROGRESS || Instant::now() > deadline {
            break code;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, errors::TRANSACTIONAL_ID_NOT_FOUND);
    let (code, pid, epoch) = c.init(4, "tx-idle", 60_000, None);
    assert_eq!((code, epoch), (errors::NONE, 0));
    assert_ne!(pid, first);
}

/// Sends `requests` back to back on one new connection before reading any answer (as
/// librdkafka pipelines them), then returns the answers in order.
fn pipelined(addr: std::net::SocketAddr, requests: Vec<(i16, Request)>) -> Vec<Response> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sent = Vec::new();
    for (i, (version, request)) in requests.into_iter().enumerate() {
        let correlation = i as i32 + 1;
        let frame =
            sluice_protocol::encode_request(correlation, version, Some("pipe"), &request).unwrap();
        for chunk in &frame.chunks {
            stream.write_all(chunk).unwrap();
        }
        sent.push((request.api_key(), version, correlation));
    }
    sent.into_iter()
        .map(|(api, version, correlation)| {
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
            stream.read_exact(&mut body).unwrap();
            let (header, response) =
                sluice_protocol::decode_response(api, version, Bytes::from(body)).unwrap();
            assert_eq!(header.correlation_id, correlation);
            response
        })
        .collect()
}

#[test]
fn pipelined_requests_of_one_transactional_id_apply_in_order_after_the_previous_markers() {
    let broker = Broker::start_with(settings());
    let mut c = Client::connect(broker.addr);
    c.create_topic("t", 2);
    let (code, pid, _) = c.init(4, "tx-p", 60_000, None);
    assert_eq!(code, errors::NONE);
    let me = (pid, 0);
    for round in 0..5 {
        assert_eq!(
            c.add(3, "tx-p", me, &[("t", 0), ("t", 1)]),
            vec![errors::NONE; 2]
        );
        assert_eq!(c.end(3, "tx-p", me, true), errors::NONE, "round {round}");
        // The commit's markers are still being written: the next transaction's first
        // AddPartitionsToTxn waits for them rather than refuse, and the EndTxn(abort) sent
        // right behind it applies after it, to the new transaction.
        let add = Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
            v3_and_below_transactional_id: "tx-p".into(),
            v3_and_below_producer_id: pid,
            v3_and_below_producer_epoch: 0,
            v3_and_below_topics: topics(&[("t", 1)]),
            ..AddPartitionsToTxnRequest::default()
        });
        let abort = Request::EndTxn(EndTxnRequest {
            transactional_id: "tx-p".into(),
            producer_id: pid,
            producer_epoch: 0,
            committed: false,
            ..EndTxnRequest::default()
        });
        let answers = pipelined(broker.addr, vec![(3, add), (3, abort)]);
        let Response::AddPartitionsToTxn(a) = &answers[0] else {
            panic!()
        };
        assert_eq!(
            codes(&a.results_by_topic_v3_and_below, &[("t", 1)]),
            vec![errors::NONE],
            "round {round}"
        );
        let Response::EndTxn(e) = &answers[1] else {
            panic!()
        };
        assert_eq!(e.error_code, errors::NONE, "round {round}");
        c.await_state("tx-p", "CompleteAbort");
    }
}
