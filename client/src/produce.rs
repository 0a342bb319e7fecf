//! Produce: sends magic-v2 record batches (built with `sluice_engine::builder::BatchBuilder`)
//! to partitions of one topic and returns where each landed. With acks=0 the broker sends no
//! response at all, so the request is written and the call returns at once. Runs on the
//! client's thread.

use bytes::Bytes;
use sluice_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_protocol::{Request, Response};

use crate::connection::{missing, Client};
use crate::error::{ClientError, KafkaError, Result};

/// How many acknowledgements the producer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no response; nothing is known about the outcome.
    None,
    /// acks=1: the leader has written the batch.
    Leader,
    /// acks=all (-1): the batch is durable on every in-sync replica.
    All,
}

impl Acks {
    pub fn to_wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// Parses "0", "1", "all" or "-1".
    pub fn parse(s: &str) -> Option<Acks> {
        match s {
            "0" => Some(Acks::None),
            "1" => Some(Acks::Leader),
            "all" | "-1" => Some(Acks::All),
            _ => None,
        }
    }
}

/// Where one partition's batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub partition: i32,
    pub base_offset: i64,
    /// The broker's append time for LogAppendTime topics, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

impl Client {
    /// Produces one batch per entry of `batches` (partition, batch bytes) to `topic` in one
    /// request. Returns the placement of each batch (empty with [`Acks::None`]), or the first
    /// partition error the broker reported.
    pub fn produce(
        &mut self,
        topic: &str,
        batches: Vec<(i32, Bytes)>,
        acks: Acks,
        timeout_ms: i32,
    ) -> Result<Vec<Produced>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let partitions: Vec<i32> = batches.iter().map(|(p, _)| *p).collect();
        let request = Request::Produce(ProduceRequest {
            transactional_id: None,
            acks: acks.to_wire(),
            timeout_ms,
            topic_data: vec![TopicProduceData {
                name: topic.to_owned(),
                partition_data: batches
                    .into_iter()
                    .map(|(index, records)| PartitionProduceData {
                        index,
                        records: Some(records),
                        ..PartitionProduceData::default()
                    })
                    .collect(),
                ..TopicProduceData::default()
            }],
            ..ProduceRequest::default()
        });
        if acks == Acks::None {
            self.send_only(request)?;
            return Ok(Vec::new());
        }
        let Response::Produce(r) = self.call(request)? else {
            return Err(missing(&format!("produce to '{topic}'"), "a Produce body"));
        };
        let mut out = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let context = || format!("produce to {topic}-{partition}");
            let found = r
                .responses
                .iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == partition)
                .ok_or_else(|| missing(&context(), "the partition's result"))?;
            if found.error_code != 0 {
                // v8+ may name the offending batch; prefer the most specific message.
                let message = found.error_message.clone().or_else(|| {
                    found
                        .record_errors
                        .iter()
                        .find_map(|e| e.batch_index_error_message.clone())
                });
                return Err(ClientError::Kafka(KafkaError::new(
                    found.error_code,
                    message,
                    context(),
                )));
            }
            out.push(Produced {
                partition,
                base_offset: found.base_offset,
                log_append_time_ms: found.log_append_time_ms,
                log_start_offset: found.log_start_offset,
            });
        }
        Ok(out)
    }
}
