//! Record payloads: batches built once and reused, send-time stamps, and reading batches back.
//!
//! Produce requests in throughput runs are encoded once per connection and re-sent with only
//! the correlation id patched in place, so the generator spends its time on the socket, not on
//! encoding. Runs that measure end-to-end latency build each batch when it is sent, with every
//! record's value starting with a 16-byte stamp:
//!
//! ```text
//! value = run_id:u64 (big-endian) | intended_send_ns:u64 (since the run's epoch) | filler
//! ```
//!
//! The run id keeps records of earlier runs on the same topic out of the latency figures.
//! Everything here is pure and runs on whichever executor calls it.

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::compression::Codec;
use sluice_engine::records::decode_records;
use sluice_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_protocol::{encode_request, Request};

use crate::client::CLIENT_ID;

/// Bytes at the start of a stamped value.
pub const STAMP_BYTES: usize = 16;

/// Byte offsets in a request frame: size(4) api_key(2) api_version(2) correlation_id(4).
const CORRELATION_ID_AT: usize = 8;

// Offsets in a magic-v2 batch header (see sluice_engine::builder for the full layout).
const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORD_COUNT_AT: usize = 57;
const BATCH_HEADER_BYTES: usize = 61;
const BATCH_LOG_OVERHEAD_BYTES: usize = 12;

/// Largest decompressed records section accepted when reading stamps back.
const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// Builds the batches of one producer connection. Owned by that connection's task.
pub struct BatchMaker {
    builder: BatchBuilder,
    value: Vec<u8>,
    run_id: u64,
}

impl BatchMaker {
    pub fn new(codec: Codec, record_size: usize, run_id: u64, seed: u64) -> BatchMaker {
        BatchMaker {
            builder: BatchBuilder::with_capacity(codec, 0),
            value: filler(record_size, seed),
            run_id,
        }
    }

    /// A batch of `n` identical records (throughput runs; built once, sent many times).
    pub fn plain(&mut self, n: usize, timestamp_ms: i64) -> Result<Bytes> {
        for _ in 0..n {
            self.builder
                .append(timestamp_ms, None, Some(&self.value), &[])
                .map_err(|e| anyhow!("building a batch: {e}"))?;
        }
        self.builder
            .build()
            .map_err(|e| anyhow!("building a batch: {e}"))
    }

    /// A batch whose records carry the given intended send times (ns since the run epoch).
    pub fn stamped(&mut self, sends_ns: &[u64], timestamp_ms: i64) -> Result<Bytes> {
        for &ns in sends_ns {
            write_stamp(&mut self.value, self.run_id, ns);
            self.builder
                .append(timestamp_ms, None, Some(&self.value), &[])
                .map_err(|e| anyhow!("building a batch: {e}"))?;
        }
        self.builder
            .build()
            .map_err(|e| anyhow!("building a batch: {e}"))
    }
}

/// Encodes a whole produce request frame (size prefix included) with correlation id 0;
/// `set_correlation_id` adapts it to each send.
pub fn produce_frame(
    version: i16,
    acks: i16,
    timeout_ms: i32,
    topic: &str,
    batches: Vec<(i32, Bytes)>,
) -> Result<Vec<u8>> {
    let request = Request::Produce(ProduceRequest {
        transactional_id: None,
        acks,
        timeout_ms,
        topic_data: vec![TopicProduceData {
            name: topic.to_owned(),
            partition_data: batches
                .into_iter()
                .map(|(index, records)| PartitionProduceData {
                    index,
                    records: Some(records),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let frame = encode_request(0, version, Some(CLIENT_ID), &request)
        .map_err(|e| anyhow!("encoding a produce request: {e}"))?;
    Ok(frame.to_contiguous().to_vec())
}

/// Patches the correlation id of an encoded request frame in place.
pub fn set_correlation_id(frame: &mut [u8], correlation_id: i32) {
    if let Some(slot) = frame.get_mut(CORRELATION_ID_AT..CORRELATION_ID_AT + 4) {
        slot.copy_from_slice(&correlation_id.to_be_bytes());
    }
}

/// Writes the stamp at the start of `value` (which is at least `STAMP_BYTES` long).
pub fn write_stamp(value: &mut [u8], run_id: u64, sent_ns: u64) {
    if value.len() >= STAMP_BYTES {
        value[..8].copy_from_slice(&run_id.to_be_bytes());
        value[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// Reads a stamp back: `(run_id, sent_ns)`.
pub fn read_stamp(value: &[u8]) -> Option<(u64, u64)> {
    let run = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let sent = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((run, sent))
}

/// The fields of a fetched batch's header the consumer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub attributes: i16,
    /// Whole batch size including the 12-byte offset and length prefix.
    pub total_bytes: usize,
}

impl BatchInfo {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
}

/// Splits a fetched records field into whole magic-v2 batches. A trailing partial batch (which
/// brokers may send when a size limit cuts one) is not returned; a batch of another magic is
/// an error.
pub fn split_batches(mut records: &[u8]) -> Result<Vec<(BatchInfo, &[u8])>> {
    let mut out = Vec::new();
    while records.len() >= BATCH_HEADER_BYTES {
        let base_offset = i64::from_be_bytes(read_n(records, 0)?);
        let batch_length = i32::from_be_bytes(read_n(records, BATCH_LENGTH_AT)?);
        let total = usize::try_from(batch_length)
            .map_err(|_| anyhow!("negative batch length {batch_length}"))?
            + BATCH_LOG_OVERHEAD_BYTES;
        if total > records.len() {
            break;
        }
        if records[MAGIC_AT] != 2 {
            bail!(
                "batch at offset {base_offset} has magic {}",
                records[MAGIC_AT]
            );
        }
        let info = BatchInfo {
            base_offset,
            last_offset_delta: i32::from_be_bytes(read_n(records, LAST_OFFSET_DELTA_AT)?),
            record_count: i32::from_be_bytes(read_n(records, RECORD_COUNT_AT)?),
            attributes: i16::from_be_bytes(read_n(records, ATTRIBUTES_AT)?),
            total_bytes: total,
        };
        out.push((info, &records[..total]));
        records = &records[total..];
    }
    Ok(out)
}

/// Calls `f(offset, sent_ns)` for every record of `batch` at or after `from_offset` that carries
/// a stamp of run `run_id`.
pub fn for_each_stamp(
    info: &BatchInfo,
    batch: &[u8],
    from_offset: i64,
    run_id: u64,
    mut f: impl FnMut(u64),
) -> Result<()> {
    let section = batch
        .get(BATCH_HEADER_BYTES..)
        .ok_or_else(|| anyhow!("short batch"))?;
    let decoded = decode_records(
        info.attributes,
        section,
        info.record_count,
        MAX_DECOMPRESSED_BYTES,
    )
    .map_err(|e| anyhow!("decoding records at offset {}: {e}", info.base_offset))?;
    for record in decoded.iter() {
        let record =
            record.map_err(|e| anyhow!("decoding records at offset {}: {e}", info.base_offset))?;
        if info.base_offset + i64::from(record.offset_delta) < from_offset {
            continue;
        }
        if let Some((run, sent)) = record.value.and_then(read_stamp) {
            if run == run_id {
                f(sent);
            }
        }
    }
    Ok(())
}

fn read_n<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N]> {
    buf.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| anyhow!("short batch header"))
}

/// Upper-case letters from a small xorshift generator: compressible about as much as text,
/// which is what Kafka's own performance tool sends.
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::{decode_request, Request};

    #[test]
    fn a_pre_encoded_frame_decodes_with_each_patched_correlation_id() {
        let mut maker = BatchMaker::new(Codec::None, 100, 7, 1);
        let batch = maker.plain(10, 1_700_000_000_000).expect("batch");
        let mut frame =
            produce_frame(9, 1, 30_000, "t", vec![(0, batch.clone()), (3, batch)]).expect("frame");
        for id in [1, 99, i32::MAX] {
            set_correlation_id(&mut frame, id);
            let body = Bytes::copy_from_slice(&frame[4..]);
            let (header, request) = decode_request(body).expect("decodes");
            assert_eq!(header.correlation_id, id);
            let Request::Produce(p) = request else {
                panic!("not a produce request");
            };
            assert_eq!(p.acks, 1);
            let parts: Vec<i32> = p.topic_data[0]
                .partition_data
                .iter()
                .map(|d| d.index)
                .collect();
            assert_eq!(parts, vec![0, 3]);
        }
    }

    #[test]
    fn stamps_survive_every_codec() {
        for codec in Codec::ALL {
            let mut maker = BatchMaker::new(codec, 64, 42, 3);
            let sends = [5u64, 6, 1_000_000_007];
            let batch = maker.stamped(&sends, 1).expect("batch");
            let batches = split_batches(&batch).expect("split");
            assert_eq!(batches.len(), 1);
            let (info, bytes) = batches[0];
            assert_eq!(info.record_count, 3);
            assert_eq!(info.last_offset(), 2);
            let mut seen = Vec::new();
            for_each_stamp(&info, bytes, 0, 42, |ns| seen.push(ns)).expect("stamps");
            assert_eq!(seen, sends, "{codec:?}");
            // Records before the fetch offset and of other runs are skipped.
            let mut later = Vec::new();
            for_each_stamp(&info, bytes, 1, 42, |ns| later.push(ns)).expect("stamps");
            assert_eq!(later, &sends[1..]);
            let mut other = Vec::new();
            for_each_stamp(&info, bytes, 0, 41, |ns| other.push(ns)).expect("stamps");
            assert!(other.is_empty());
        }
    }

    #[test]
    fn a_partial_trailing_batch_is_left_for_the_next_fetch() {
        let mut maker = BatchMaker::new(Codec::None, 20, 1, 1);
        let a = maker.plain(2, 1).expect("batch");
        let b = maker.plain(3, 1).expect("batch");
        let mut both = a.to_vec();
        both.extend_from_slice(&b[..b.len() - 1]);
        let batches = split_batches(&both).expect("split");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].0.total_bytes, a.len());
        both.extend_from_slice(&b[b.len() - 1..]);
        assert_eq!(split_batches(&both).expect("split").len(), 2);
    }

    #[test]
    fn filler_is_letters() {
        let v = filler(1000, 9);
        assert!(v.iter().all(u8::is_ascii_uppercase));
        assert_ne!(v[..10], v[10..20]);
    }
}
