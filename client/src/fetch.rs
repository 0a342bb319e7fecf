//! Reading: ListOffsets (earliest, latest, by timestamp) and Fetch, with the returned record
//! batches checked (magic, CRC-32C) and unpacked into owned records.
//!
//! A Fetch response may end with a partial batch (the broker cuts at `max_bytes`); that tail is
//! not an error and the next fetch starts at the first offset not yet returned. Control batches
//! (transaction markers) are skipped but still advance the position. Records before the
//! requested offset (a batch that starts earlier) are dropped, as Kafka consumers do. Runs on
//! the client's thread.

use std::time::Duration;

use bytes::Bytes;
use sluice_engine::batch::{BatchIter, TimestampType as BatchTimestampType};
use sluice_engine::builder::MAGIC_V2;
use sluice_engine::error::{Corruption, Error as EngineError};
use sluice_engine::records::decode_records;
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use sluice_protocol::{ApiKey, Request, Response, Uuid};

use crate::connection::{missing, Client};
use crate::error::{check, ClientError, KafkaError, Result};

/// Largest decompressed records section accepted from one batch.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 128 * 1024 * 1024;

/// First Fetch version that names topics by id instead of by name.
const FETCH_TOPIC_ID_MIN_VERSION: i16 = 13;

/// Which offset ListOffsets should find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the offset the next record will get).
    Latest,
    /// The first offset whose timestamp is at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn to_wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// The topic a fetch reads: its name and, for Fetch v13+, its id from Metadata v10+.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRef {
    pub name: String,
    pub id: Uuid,
}

/// Limits of one Fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// How long the broker may wait for `min_bytes` to arrive.
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    /// Response size cap (the broker still returns one whole batch if the first is larger).
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
        }
    }
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub timestamp: i64,
    /// True when `timestamp` is the broker's append time (LogAppendTime topics).
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// What one partition of a Fetch returned.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedPartition {
    pub partition: i32,
    /// The partition's error, if any (OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, ...).
    pub error: Option<KafkaError>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Vec<ConsumedRecord>,
    /// Where the next fetch of this partition should start.
    pub next_offset: i64,
    /// Bytes of record data received for the partition, whole batches or not. Non-zero with
    /// no progress means the next batch is larger than the partition limit asked for.
    pub bytes: usize,
}

impl Client {
    /// ListOffsets for one partition.
    pub fn list_offset(&mut self, topic: &str, partition: i32, spec: OffsetSpec) -> Result<i64> {
        let offsets = self.list_offsets(topic, &[partition], spec)?;
        offsets
            .into_iter()
            .next()
            .map(|(_, offset)| offset)
            .ok_or_else(|| missing(&format!("list offsets of {topic}-{partition}"), "a result"))
    }

    /// ListOffsets for several partitions of one topic in one request; returns
    /// (partition, offset) in the order asked, or the first partition's error.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<(i32, i64)>> {
        let request = ListOffsetsRequest {
            replica_id: -1,
            isolation_level: 0,
            topics: vec![ListOffsetsTopic {
                name: topic.to_owned(),
                partitions: partitions
                    .iter()
                    .map(|&partition| ListOffsetsPartition {
                        partition_index: partition,
                        current_leader_epoch: -1,
                        timestamp: spec.to_wire(),
                        max_num_offsets: 1,
                        ..ListOffsetsPartition::default()
                    })
                    .collect(),
                ..ListOffsetsTopic::default()
            }],
            timeout_ms: 30_000,
            ..ListOffsetsRequest::default()
        };
        let Response::ListOffsets(r) = self.call(Request::ListOffsets(request))? else {
            return Err(missing(
                &format!("list offsets of '{topic}'"),
                "a ListOffsets body",
            ));
        };
        let mut out = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let context = || format!("list offsets of {topic}-{partition}");
            let found = r
                .topics
                .iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| missing(&context(), "the partition's result"))?;
            check(found.error_code, None, context)?;
            out.push((partition, found.offset));
        }
        Ok(out)
    }

    /// Fetches `partitions` (partition, offset) of one topic in one request.
    pub fn fetch(
        &mut self,
        topic: &TopicRef,
        partitions: &[(i32, i64)],
        options: FetchOptions,
    ) -> Result<Vec<FetchedPartition>> {
        let mut version = self.version(ApiKey::Fetch)?;
        if version >= FETCH_TOPIC_ID_MIN_VERSION && topic.id == Uuid::ZERO {
            // Without a topic id (Metadata older than v10) only name-based versions can work.
            let broker_min = self
                .broker_range(ApiKey::Fetch as i16)
                .map_or(i16::MAX, |(lo, _)| lo);
            if broker_min >= FETCH_TOPIC_ID_MIN_VERSION {
                return Err(ClientError::InvalidArgument(format!(
                    "topic '{}' has no id and the broker only serves Fetch by topic id",
                    topic.name
                )));
            }
            version = FETCH_TOPIC_ID_MIN_VERSION - 1;
        }
        let by_id = version >= FETCH_TOPIC_ID_MIN_VERSION;
        let request = Request::Fetch(FetchRequest {
            replica_id: -1,
            max_wait_ms: options.max_wait_ms,
            min_bytes: options.min_bytes,
            max_bytes: options.max_bytes,
            isolation_level: 0,
            // A full fetch outside any session (KIP-227: id 0, epoch -1).
            session_id: 0,
            session_epoch: -1,
            topics: vec![FetchTopic {
                topic: if by_id {
                    String::new()
                } else {
                    topic.name.clone()
                },
                topic_id: topic.id,
                partitions: partitions
                    .iter()
                    .map(|&(partition, offset)| FetchPartition {
                        partition,
                        current_leader_epoch: -1,
                        fetch_offset: offset,
                        last_fetched_epoch: -1,
                        log_start_offset: -1,
                        partition_max_bytes: options.partition_max_bytes,
                        ..FetchPartition::default()
                    })
                    .collect(),
                ..FetchTopic::default()
            }],
            ..FetchRequest::default()
        });
        let wait = Duration::from_millis(u64::try_from(options.max_wait_ms).unwrap_or(0));
        let response = self.call_at(&request, version, wait)?;
        let Response::Fetch(r) = response else {
            return Err(missing(
                &format!("fetch from '{}'", topic.name),
                "a Fetch body",
            ));
        };
        check(r.error_code, None, || {
            format!("fetch from '{}'", topic.name)
        })?;
        let mut out = Vec::with_capacity(partitions.len());
        for &(partition, offset) in partitions {
            let context = || format!("fetch from {}-{partition}", topic.name);
            let data = r
                .responses
                .iter()
                .filter(|t| {
                    if by_id {
                        t.topic_id == topic.id
                    } else {
                        t.topic == topic.name
                    }
                })
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| missing(&context(), "the partition's data"))?;
            if data.error_code != 0 {
                out.push(FetchedPartition {
                    partition,
                    error: Some(KafkaError::new(data.error_code, None, context())),
                    high_watermark: data.high_watermark,
                    log_start_offset: data.log_start_offset,
                    records: Vec::new(),
                    next_offset: offset,
                    bytes: 0,
                });
                continue;
            }
            // A decoded response holds its records as one slice of the frame (no copy).
            let raw = data
                .records
                .as_ref()
                .and_then(|r| r.to_bytes())
                .unwrap_or_default();
            let (records, next_offset) = decode_record_set(&topic.name, partition, &raw, offset)?;
            out.push(FetchedPartition {
                partition,
                error: None,
                high_watermark: data.high_watermark,
                log_start_offset: data.log_start_offset,
                records,
                next_offset,
                bytes: raw.len(),
            });
        }
        Ok(out)
    }
}

/// Unpacks the batches of one partition's `records` field into records at or after
/// `from_offset`. Returns them and the offset to fetch next (`from_offset` if no whole batch
/// was present).
pub fn decode_record_set(
    topic: &str,
    partition: i32,
    raw: &[u8],
    from_offset: i64,
) -> Result<(Vec<ConsumedRecord>, i64)> {
    let bad = |pos: usize, reason: String| ClientError::BadBatch {
        topic: topic.to_owned(),
        partition,
        pos,
        reason,
    };
    let mut records = Vec::new();
    let mut next_offset = from_offset;
    for item in BatchIter::new(raw) {
        let (pos, batch) = match item {
            Ok(b) => b,
            // The broker cut the response inside a batch: stop at the last whole one.
            Err(EngineError::CorruptBatch {
                reason: Corruption::TooShort | Corruption::LengthPastEnd,
                ..
            }) => break,
            Err(e) => return Err(bad(raw.len(), e.to_string())),
        };
        if batch.magic() != MAGIC_V2 {
            return Err(bad(
                pos,
                format!("magic {} (only v2 is supported)", batch.magic()),
            ));
        }
        let computed = batch.compute_crc();
        if computed != batch.crc() {
            return Err(bad(
                pos,
                format!(
                    "CRC-32C mismatch: stored {:#010x}, computed {computed:#010x}",
                    batch.crc()
                ),
            ));
        }
        let base = batch.base_offset().0;
        next_offset = next_offset.max(batch.next_offset().0);
        if batch.is_control() {
            continue;
        }
        let log_append_time = batch.timestamp_type() == BatchTimestampType::LogAppendTime;
        let decoded = decode_records(
            batch.attributes(),
            batch.records(),
            batch.record_count(),
            DECOMPRESSED_BATCH_BYTES_MAX,
        )
        .map_err(|e| bad(pos, e.to_string()))?;
        for record in decoded.iter() {
            let record = record.map_err(|e| bad(pos, e.to_string()))?;
            let offset = base + i64::from(record.offset_delta);
            if offset < from_offset {
                continue;
            }
            let timestamp = if log_append_time {
                batch.max_timestamp()
            } else {
                record
                    .timestamp(batch.base_timestamp())
                    .ok_or_else(|| bad(pos, "record timestamp overflows".to_owned()))?
            };
            records.push(ConsumedRecord {
                offset,
                timestamp,
                log_append_time,
                key: record.key.map(Bytes::copy_from_slice),
                value: record.value.map(Bytes::copy_from_slice),
                headers: record
                    .headers()
                    .map(|h| {
                        (
                            Bytes::copy_from_slice(h.key),
                            h.value.map(Bytes::copy_from_slice),
                        )
                    })
                    .collect(),
            });
        }
    }
    Ok((records, next_offset))
}

#[cfg(test)]
mod tests {
    use sluice_engine::builder::BatchBuilder;
    use sluice_engine::compression::Codec;
    use sluice_engine::records::Header;

    use super::*;

    fn batch(codec: Codec, base: i64, values: &[&str]) -> Bytes {
        let mut b = BatchBuilder::new(codec).base_offset(base);
        for (i, v) in values.iter().enumerate() {
            let key = format!("k{i}");
            let headers = [Header {
                key: b"h",
                value: Some(v.as_bytes()),
            }];
            b.append(
                1_000 + i as i64,
                Some(key.as_bytes()),
                Some(v.as_bytes()),
                &headers,
            )
            .unwrap();
        }
        b.build().unwrap()
    }

    #[test]
    fn decodes_every_codec_and_skips_records_before_the_offset() {
        for codec in Codec::ALL {
            let mut raw = batch(codec, 10, &["a", "b", "c"]).to_vec();
            raw.extend_from_slice(&batch(codec, 13, &["d"]));
            let (records, next) = decode_record_set("t", 0, &raw, 11).unwrap();
            let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
            assert_eq!(values, vec!["b", "c", "d"], "{codec:?}");
            assert_eq!(records[0].offset, 11);
            assert_eq!(records[0].timestamp, 1_001);
            assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(
                records[0].headers,
                vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"b")))]
            );
            assert_eq!(next, 14);
        }
    }

    #[test]
    fn a_partial_trailing_batch_ends_the_set_quietly() {
        let first = batch(Codec::None, 0, &["x"]);
        let second = batch(Codec::None, 1, &["y", "z"]);
        let mut raw = first.to_vec();
        raw.extend_from_slice(&second[..second.len() - 3]);
        let (records, next) = decode_record_set("t", 0, &raw, 0).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(next, 1);
        // Only a piece of a header: still no error, nothing returned.
        let (records, next) = decode_record_set("t", 0, &second[..20], 1).unwrap();
        assert!(records.is_empty());
        assert_eq!(next, 1);
    }

    #[test]
    fn a_flipped_byte_is_a_crc_error() {
        let mut raw = batch(Codec::None, 0, &["hello"]).to_vec();
        let last = raw.len() - 2;
        raw[last] ^= 0x40;
        let err = decode_record_set("t", 3, &raw, 0).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("t-3") && text.contains("CRC-32C"), "{text}");
    }

    #[test]
    fn null_and_empty_values_stay_distinct() {
        let mut b = BatchBuilder::new(Codec::None);
        b.append(5, None, None, &[]).unwrap();
        b.append(5, Some(b""), Some(b""), &[]).unwrap();
        let raw = b.build().unwrap();
        let (records, _) = decode_record_set("t", 0, &raw, 0).unwrap();
        assert_eq!(
            (records[0].key.clone(), records[0].value.clone()),
            (None, None)
        );
        assert_eq!(records[1].key.as_deref(), Some(&b""[..]));
        assert_eq!(records[1].value.as_deref(), Some(&b""[..]));
    }

    /// A broker (or a network) that sends garbage must get an error, never a panic: flip
    /// bytes anywhere in real batches of every codec, with the CRC both left stale and
    /// recomputed so that the records inside are parsed too, and cut the set at every length.
    #[test]
    fn mangled_record_sets_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for codec in Codec::ALL {
            let original = batch(codec, 0, &["alpha", "beta", "gamma", "delta"]);
            for cut in 0..original.len() {
                let _ = decode_record_set("t", 0, &original[..cut], 0);
            }
            for round in 0..2_000 {
                let mut raw = original.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % raw.len();
                    raw[at] ^= 1 << (next() % 8);
                }
                if round % 2 == 0 {
                    if let Some(crc) = sluice_engine::builder::batch_crc(&raw) {
                        raw[17..21].copy_from_slice(&crc.to_be_bytes());
                    }
                }
                let _ = decode_record_set("t", 0, &raw, 0);
            }
        }
    }
}
