//! Transaction administration: ListTransactions, DescribeTransactions (on the transactional
//! id's coordinator, found with FindCoordinator key type 1) and DescribeProducers, each a
//! blocking call returning plain data or a [`ClientError`] with the broker's error code, in the
//! manner of Kafka's `kafka-transactions.sh`.
//!
//! Coordinator errors (loading, moving) are retried for up to the request timeout, as for
//! groups. Sluice is a single node, so DescribeProducers goes to the connected broker, which
//! leads every partition. Runs on the client's thread.

use sluice_protocol::messages::describe_producers_request::{
    DescribeProducersRequest, TopicRequest,
};
use sluice_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use sluice_protocol::messages::list_transactions_request::ListTransactionsRequest;
use sluice_protocol::{ApiKey, Request, Response};

use crate::connection::{missing, Client};
use crate::error::{check, ClientError, Result};
use crate::groups::Coordinator;

/// FindCoordinator's key type for transactional ids.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// One transaction as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTransaction {
    pub transactional_id: String,
    pub producer_id: i64,
    /// Kafka's state name: "Empty", "Ongoing", "PrepareCommit", "PrepareAbort",
    /// "CompleteCommit", "CompleteAbort", "Dead", "PrepareEpochFence".
    pub state: String,
}

/// One transactional id as DescribeTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// When the current transaction started (ms since the epoch); `None` when none is open.
    pub start_time_ms: Option<i64>,
    /// The partitions in the current transaction, sorted.
    pub partitions: Vec<(String, Vec<i32>)>,
}

/// One active producer of a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub producer_epoch: i32,
    /// `None` when the partition knows no sequence of it.
    pub last_sequence: Option<i32>,
    /// `None` when unknown.
    pub last_timestamp_ms: Option<i64>,
    /// `None` before any transaction marker of the producer was written here.
    pub coordinator_epoch: Option<i32>,
    /// The first offset of its open transaction on the partition.
    pub current_txn_start_offset: Option<i64>,
}

impl Client {
    /// The coordinator of `transactional_id`.
    pub fn find_transaction_coordinator(&mut self, transactional_id: &str) -> Result<Coordinator> {
        self.find_coordinator(
            KEY_TYPE_TRANSACTION,
            transactional_id,
            &format!("transactional id '{transactional_id}'"),
        )
    }

    /// The broker's transactions, optionally only those in one of `states` and of one of
    /// `producer_ids`; sorted by transactional id. A state name the broker does not know is
    /// an error, as Kafka's tool reports it.
    pub fn list_transactions(
        &mut self,
        states: &[String],
        producer_ids: &[i64],
    ) -> Result<Vec<ListedTransaction>> {
        let request = ListTransactionsRequest {
            state_filters: states.to_vec(),
            producer_id_filters: producer_ids.to_vec(),
            ..ListTransactionsRequest::default()
        };
        let context = || "list transactions".to_owned();
        let r = self.retrying_coordinator(|client| {
            let Response::ListTransactions(r) =
                client.call(Request::ListTransactions(request.clone()))?
            else {
                return Err(missing(&context(), "a ListTransactions body"));
            };
            check(r.error_code, None, context)?;
            Ok(r)
        })?;
        if !r.unknown_state_filters.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "the broker knows no transaction state {}",
                r.unknown_state_filters.join(", ")
            )));
        }
        let mut out: Vec<ListedTransaction> = r
            .transaction_states
            .into_iter()
            .map(|t| ListedTransaction {
                transactional_id: t.transactional_id,
                producer_id: t.producer_id,
                state: t.transaction_state,
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    /// The state of `transactional_id`; send it to the id's coordinator
    /// ([`Client::find_transaction_coordinator`]). An unknown id is TRANSACTIONAL_ID_NOT_FOUND.
    pub fn describe_transaction(
        &mut self,
        transactional_id: &str,
    ) -> Result<TransactionDescription> {
        let request = DescribeTransactionsRequest {
            transactional_ids: vec![transactional_id.to_owned()],
            ..DescribeTransactionsRequest::default()
        };
        let context = || format!("describe transactional id '{transactional_id}'");
        self.retrying_coordinator(|client| {
            let Response::DescribeTransactions(r) =
                client.call(Request::DescribeTransactions(request.clone()))?
            else {
                return Err(missing(&context(), "a DescribeTransactions body"));
            };
            let t = r
                .transaction_states
                .into_iter()
                .find(|t| t.transactional_id == transactional_id)
                .ok_or_else(|| missing(&context(), "the transactional id's state"))?;
            check(t.error_code, None, context)?;
            let mut partitions: Vec<(String, Vec<i32>)> = t
                .topics
                .into_iter()
                .map(|topic| {
                    let mut ps = topic.partitions;
                    ps.sort_unstable();
                    (topic.topic, ps)
                })
                .collect();
            partitions.sort();
            Ok(TransactionDescription {
                transactional_id: t.transactional_id,
                state: t.transaction_state,
                producer_id: t.producer_id,
                producer_epoch: t.producer_epoch,
                timeout_ms: t.transaction_timeout_ms,
                start_time_ms: (t.transaction_start_time_ms >= 0)
                    .then_some(t.transaction_start_time_ms),
                partitions,
            })
        })
    }

    /// The active producers of `topic`/`partition`, sorted by producer id.
    pub fn describe_producers(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ActiveProducer>> {
        self.version(ApiKey::DescribeProducers)?;
        let request = DescribeProducersRequest {
            topics: vec![TopicRequest {
                name: topic.to_owned(),
                partition_indexes: vec![partition],
                ..TopicRequest::default()
            }],
            ..DescribeProducersRequest::default()
        };
        let context = || format!("describe the producers of {topic}-{partition}");
        let Response::DescribeProducers(r) = self.call(Request::DescribeProducers(request))? else {
            return Err(missing(&context(), "a DescribeProducers body"));
        };
        let p = r
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .and_then(|t| {
                t.partitions
                    .into_iter()
                    .find(|p| p.partition_index == partition)
            })
            .ok_or_else(|| missing(&context(), "the partition's producers"))?;
        check(p.error_code, p.error_message.as_deref(), context)?;
        let mut out: Vec<ActiveProducer> = p
            .active_producers
            .into_iter()
            .map(|s| ActiveProducer {
                producer_id: s.producer_id,
                producer_epoch: s.producer_epoch,
                last_sequence: (s.last_sequence >= 0).then_some(s.last_sequence),
                last_timestamp_ms: (s.last_timestamp >= 0).then_some(s.last_timestamp),
                coordinator_epoch: (s.coordinator_epoch >= 0).then_some(s.coordinator_epoch),
                current_txn_start_offset: (s.current_txn_start_offset >= 0)
                    .then_some(s.current_txn_start_offset),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        Ok(out)
    }
}
