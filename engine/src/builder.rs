//! Building magic-v2 record batches, and the rewrites the broker applies to produced batches.
//!
//! This module owns the write side of the batch format. `BatchBuilder` turns records (key,
//! value, headers, timestamp) into one complete, valid batch: header fields, CRC-32C, last
//! offset delta, max timestamp, compression. Tests, the load generator and the broker (control
//! markers, internal topics) all make batches through it, so it is built for speed: records are
//! encoded in one pass into a buffer whose 61 header bytes are reserved up front, and an
//! uncompressed batch is handed out as `Bytes` without a copy.
//!
//! `rewrite` recompresses a produced batch to a topic's `compression.type` and/or stamps it
//! with LogAppendTime; `set_log_append_time` does the latter in place.
//!
//! Batch header (all integers big-endian; the CRC-32C covers bytes 21 to the end):
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 (2)
//! 17 crc u32 | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64
//! 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32
//! 57 recordCount i32 | 61 records...
//! attributes: bits 0-2 codec, bit 3 timestamp type (1 = LogAppendTime), bit 4 transactional,
//!             bit 5 control, bit 6 delete horizon
//! ```
//!
//! Everything here is pure and runs on whichever core calls it (the partition's home shard for
//! rewrites).

use bytes::Bytes;
use thiserror::Error;

use crate::compression::{self, Codec, CompressionError, ATTRIBUTES_CODEC_MASK};
use crate::records::{put_varlong, varlong_len, Header, RecordsError};

use crate::batch::{
    ATTRIBUTES_AT, BASE_SEQUENCE_AT, BASE_TIMESTAMP_AT, BATCH_LENGTH_AT, CRC_AT,
    LAST_OFFSET_DELTA_AT, MAGIC_AT, MAX_TIMESTAMP_AT, PARTITION_LEADER_EPOCH_AT, PRODUCER_EPOCH_AT,
    PRODUCER_ID_AT, RECORD_COUNT_AT,
};
pub use crate::batch::{
    ATTRIBUTES_CONTROL, ATTRIBUTES_DELETE_HORIZON, ATTRIBUTES_LOG_APPEND_TIME,
    ATTRIBUTES_TRANSACTIONAL, MAGIC_V2,
};
pub use crate::limits::{BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES};
/// Producer id, epoch and sequence of an idempotence-free batch.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
/// Partition leader epoch of a batch not yet appended by a leader.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Why a batch could not be built or rewritten.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("a batch needs at least one record")]
    Empty,
    #[error("a batch holds at most {max} records")]
    TooManyRecords { max: i64 },
    #[error("the batch would be {bytes} bytes, beyond the i32 batchLength field")]
    TooLarge { bytes: usize },
    #[error("record timestamp {timestamp} is too far from the base timestamp {base}")]
    TimestampDelta { base: i64, timestamp: i64 },
    #[error("not a single magic-v2 batch: {reason}")]
    NotABatch { reason: &'static str },
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error(transparent)]
    Records(#[from] RecordsError),
}

impl BuildError {
    /// The Kafka error code for this error when it stems from a produced batch.
    pub fn kafka_code(&self) -> i16 {
        match self {
            // INVALID_RECORD
            BuildError::Empty | BuildError::TooManyRecords { .. } => 87,
            // MESSAGE_TOO_LARGE
            BuildError::TooLarge { .. } => 10,
            // INVALID_TIMESTAMP
            BuildError::TimestampDelta { .. } => 32,
            // CORRUPT_MESSAGE
            BuildError::NotABatch { .. } => 2,
            BuildError::Compression(e) => e.kafka_code(),
            BuildError::Records(e) => e.kafka_code(),
        }
    }
}

/// How record timestamps in a batch are to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampType {
    /// Each record carries the producer's timestamp.
    #[default]
    CreateTime,
    /// The broker's append time (in `maxTimestamp`) applies to every record.
    LogAppendTime { append_time_ms: i64 },
}

/// Builds one magic-v2 batch at a time. Not shared between cores; each user owns its own.
///
/// Configure with the consuming setters, `append` records, then `build`, which returns the
/// batch and leaves the builder empty with the same settings (and its scratch capacity) for
/// the next batch.
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    codec: Codec,
    level: Option<i32>,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    timestamp_type: TimestampType,
    /// 61 reserved header bytes followed by the uncompressed records.
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// A builder for batches compressed with `codec`, without producer id.
    pub fn new(codec: Codec) -> BatchBuilder {
        BatchBuilder::with_capacity(codec, 0)
    }

    /// As `new`, with room for `records_bytes` bytes of encoded records before reallocating.
    pub fn with_capacity(codec: Codec, records_bytes: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(BATCH_HEADER_BYTES + records_bytes);
        buf.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            codec,
            level: None,
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            timestamp_type: TimestampType::CreateTime,
            buf,
            count: 0,
            base_timestamp: -1,
            max_timestamp: -1,
        }
    }

    /// Compression level (`None` = the codec's default).
    pub fn level(mut self, level: Option<i32>) -> BatchBuilder {
        self.level = level;
        self
    }

    pub fn base_offset(mut self, base_offset: i64) -> BatchBuilder {
        self.base_offset = base_offset;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> BatchBuilder {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Idempotent/transactional producer identity and the first record's sequence number.
    pub fn producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> BatchBuilder {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn transactional(mut self, transactional: bool) -> BatchBuilder {
        self.transactional = transactional;
        self
    }

    pub fn control(mut self, control: bool) -> BatchBuilder {
        self.control = control;
        self
    }

    pub fn timestamp_type(mut self, timestamp_type: TimestampType) -> BatchBuilder {
        self.timestamp_type = timestamp_type;
        self
    }

    /// Sets the base offset of the next batch (the load generator and tests number batches).
    pub fn set_base_offset(&mut self, base_offset: i64) {
        self.base_offset = base_offset;
    }

    /// Sets the base sequence of the next batch (idempotent producers advance it per batch).
    pub fn set_base_sequence(&mut self, base_sequence: i32) {
        self.base_sequence = base_sequence;
    }

    /// Records appended since the last build.
    pub fn record_count(&self) -> i32 {
        self.count
    }

    /// Uncompressed size of the batch built now (header plus encoded records).
    pub fn uncompressed_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends one record. Its offset delta is its position; its timestamp delta is relative to
    /// the first record's timestamp, as Kafka clients encode them.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> Result<(), BuildError> {
        if self.count == i32::MAX {
            return Err(BuildError::TooManyRecords {
                max: i64::from(i32::MAX),
            });
        }
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        let timestamp_delta =
            timestamp
                .checked_sub(self.base_timestamp)
                .ok_or(BuildError::TimestampDelta {
                    base: self.base_timestamp,
                    timestamp,
                })?;
        let offset_delta = i64::from(self.count);
        let body_len = 1
            + varlong_len(timestamp_delta)
            + varlong_len(offset_delta)
            + bytes_len(key)
            + bytes_len(value)
            + varlong_len(headers.len() as i64)
            + headers
                .iter()
                .map(|h| bytes_len(Some(h.key)) + bytes_len(h.value))
                .sum::<usize>();
        let body_len_i64 =
            i64::try_from(body_len).map_err(|_| BuildError::TooLarge { bytes: body_len })?;
        if body_len_i64 > i64::from(i32::MAX) {
            return Err(BuildError::TooLarge { bytes: body_len });
        }
        let buf = &mut self.buf;
        buf.reserve(varlong_len(body_len_i64) + body_len);
        put_varlong(buf, body_len_i64);
        // Record attributes are unused by Kafka; clients write 0.
        buf.push(0);
        put_varlong(buf, timestamp_delta);
        put_varlong(buf, offset_delta);
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varlong(buf, headers.len() as i64);
        for header in headers {
            put_bytes(buf, Some(header.key));
            put_bytes(buf, header.value);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        Ok(())
    }

    /// Finishes the batch: header, compression, CRC-32C. The builder is then empty again, with
    /// the same settings.
    pub fn build(&mut self) -> Result<Bytes, BuildError> {
        if self.count == 0 {
            return Err(BuildError::Empty);
        }
        let mut attributes = i16::from(self.codec.id());
        if self.transactional {
            attributes |= ATTRIBUTES_TRANSACTIONAL;
        }
        if self.control {
            attributes |= ATTRIBUTES_CONTROL;
        }
        let max_timestamp = match self.timestamp_type {
            TimestampType::CreateTime => self.max_timestamp,
            TimestampType::LogAppendTime { append_time_ms } => {
                attributes |= ATTRIBUTES_LOG_APPEND_TIME;
                append_time_ms
            }
        };
        let header = HeaderFields {
            base_offset: self.base_offset,
            partition_leader_epoch: self.partition_leader_epoch,
            attributes,
            last_offset_delta: self.count - 1,
            base_timestamp: self.base_timestamp,
            max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: self.count,
        };
        let batch = if self.codec == Codec::None {
            // The records are already in place behind the reserved header: hand the buffer over.
            let mut buf = std::mem::take(&mut self.buf);
            finish_header(&mut buf, &header)?;
            buf
        } else {
            let records = &self.buf[BATCH_HEADER_BYTES..];
            let mut out = Vec::with_capacity(
                BATCH_HEADER_BYTES + compression::compress_bound(self.codec, records.len()),
            );
            out.resize(BATCH_HEADER_BYTES, 0);
            compression::compress_into(self.codec, records, self.level, &mut out)?;
            finish_header(&mut out, &header)?;
            out
        };
        self.reset();
        Ok(Bytes::from(batch))
    }

    /// Drops the appended records, keeping the settings.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(BATCH_HEADER_BYTES, 0);
        self.count = 0;
        self.base_timestamp = -1;
        self.max_timestamp = -1;
    }
}

/// Builds a transaction marker: a control batch holding one control record whose key says
/// commit or abort and whose value carries the coordinator epoch.
pub fn control_marker_batch(
    commit: bool,
    coordinator_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    timestamp: i64,
) -> Result<Bytes, BuildError> {
    // Key: version i16 (0), type i16 (0 abort, 1 commit). Value: version i16 (0),
    // coordinatorEpoch i32.
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = [0u8; 6];
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let mut builder = BatchBuilder::with_capacity(Codec::None, 32)
        .producer(producer_id, producer_epoch, NO_SEQUENCE)
        .transactional(true)
        .control(true);
    builder.append(timestamp, Some(&key), Some(&value), &[])?;
    builder.build()
}

/// What `rewrite` changes in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// The codec the records should end up in (a topic's `compression.type`).
    pub codec: Codec,
    pub level: Option<i32>,
    /// Stamp the batch with this LogAppendTime (a topic with `message.timestamp.type=LogAppendTime`).
    pub log_append_time_ms: Option<i64>,
    /// Cap on the decompressed records section.
    pub max_out: usize,
}

/// Returns `batch` (one complete v2 batch) with its records in `rewrite.codec` and, if asked,
/// LogAppendTime set; the CRC is recomputed. Every other header field is kept. The records
/// themselves are not re-validated: the caller validated the batch before rewriting it.
pub fn rewrite(batch: &[u8], rewrite: &Rewrite) -> Result<Bytes, BuildError> {
    check_single_batch(batch)?;
    let attributes = read_i16(batch, ATTRIBUTES_AT);
    let from = Codec::from_attributes(attributes)?;
    let section = &batch[BATCH_HEADER_BYTES..];
    let mut out;
    if from == rewrite.codec {
        out = batch.to_vec();
    } else {
        let records: std::borrow::Cow<'_, [u8]> = match from {
            Codec::None => {
                if section.len() > rewrite.max_out {
                    return Err(CompressionError::OutputTooLarge {
                        codec: from,
                        max_out: rewrite.max_out,
                    }
                    .into());
                }
                section.into()
            }
            _ => compression::decompress(from, section, rewrite.max_out)?.into(),
        };
        out = Vec::with_capacity(
            BATCH_HEADER_BYTES + compression::compress_bound(rewrite.codec, records.len()),
        );
        out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
        compression::compress_into(rewrite.codec, &records, rewrite.level, &mut out)?;
        let attributes = (attributes & !ATTRIBUTES_CODEC_MASK) | i16::from(rewrite.codec.id());
        out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        let batch_length = batch_length_field(out.len())?;
        out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    }
    if let Some(now) = rewrite.log_append_time_ms {
        stamp_log_append_time(&mut out, now);
    }
    write_crc(&mut out);
    Ok(Bytes::from(out))
}

/// Sets LogAppendTime on one complete v2 batch in place: the timestamp-type bit, maxTimestamp
/// = `append_time_ms`, and a recomputed CRC. No allocation.
pub fn set_log_append_time(batch: &mut [u8], append_time_ms: i64) -> Result<(), BuildError> {
    check_single_batch(batch)?;
    stamp_log_append_time(batch, append_time_ms);
    write_crc(batch);
    Ok(())
}

/// The CRC-32C a v2 batch should carry (over attributes to the end).
pub fn batch_crc(batch: &[u8]) -> Option<u32> {
    batch.get(ATTRIBUTES_AT..).map(crc32c::crc32c)
}

/// Header values that `build` writes.
struct HeaderFields {
    base_offset: i64,
    partition_leader_epoch: i32,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

/// Writes the header into the first 61 bytes of a finished batch and the CRC over the rest.
fn finish_header(buf: &mut [u8], h: &HeaderFields) -> Result<(), BuildError> {
    let batch_length = batch_length_field(buf.len())?;
    buf[..8].copy_from_slice(&h.base_offset.to_be_bytes());
    buf[BATCH_LENGTH_AT..][..4].copy_from_slice(&batch_length.to_be_bytes());
    buf[PARTITION_LEADER_EPOCH_AT..][..4].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
    buf[MAGIC_AT] = MAGIC_V2 as u8;
    buf[ATTRIBUTES_AT..][..2].copy_from_slice(&h.attributes.to_be_bytes());
    buf[LAST_OFFSET_DELTA_AT..][..4].copy_from_slice(&h.last_offset_delta.to_be_bytes());
    buf[BASE_TIMESTAMP_AT..][..8].copy_from_slice(&h.base_timestamp.to_be_bytes());
    buf[MAX_TIMESTAMP_AT..][..8].copy_from_slice(&h.max_timestamp.to_be_bytes());
    buf[PRODUCER_ID_AT..][..8].copy_from_slice(&h.producer_id.to_be_bytes());
    buf[PRODUCER_EPOCH_AT..][..2].copy_from_slice(&h.producer_epoch.to_be_bytes());
    buf[BASE_SEQUENCE_AT..][..4].copy_from_slice(&h.base_sequence.to_be_bytes());
    buf[RECORD_COUNT_AT..][..4].copy_from_slice(&h.record_count.to_be_bytes());
    write_crc(buf);
    Ok(())
}

fn batch_length_field(total_len: usize) -> Result<i32, BuildError> {
    i32::try_from(total_len - BATCH_LOG_OVERHEAD_BYTES)
        .map_err(|_| BuildError::TooLarge { bytes: total_len })
}

fn stamp_log_append_time(batch: &mut [u8], append_time_ms: i64) {
    let attributes = read_i16(batch, ATTRIBUTES_AT) | ATTRIBUTES_LOG_APPEND_TIME;
    batch[ATTRIBUTES_AT..][..2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..][..8].copy_from_slice(&append_time_ms.to_be_bytes());
}

fn write_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..][..4].copy_from_slice(&crc.to_be_bytes());
}

/// Checks the framing facts the rewrites rely on; full validation is the batch module's job.
fn check_single_batch(batch: &[u8]) -> Result<(), BuildError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BuildError::NotABatch {
            reason: "shorter than a batch header",
        });
    }
    if batch[MAGIC_AT] as i8 != MAGIC_V2 {
        return Err(BuildError::NotABatch {
            reason: "magic is not 2",
        });
    }
    let batch_length = i32::from_be_bytes([
        batch[BATCH_LENGTH_AT],
        batch[BATCH_LENGTH_AT + 1],
        batch[BATCH_LENGTH_AT + 2],
        batch[BATCH_LENGTH_AT + 3],
    ]);
    if usize::try_from(batch_length).ok() != Some(batch.len() - BATCH_LOG_OVERHEAD_BYTES) {
        return Err(BuildError::NotABatch {
            reason: "batchLength disagrees with the bytes given",
        });
    }
    Ok(())
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn bytes_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{decode_records, validate_records, RecordChecks};

    fn field_i64(b: &[u8], at: usize) -> i64 {
        i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn field_i32(b: &[u8], at: usize) -> i32 {
        i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn sample(codec: Codec) -> Bytes {
        let mut b = BatchBuilder::new(codec).base_offset(42).producer(7, 3, 100);
        b.append(
            1_000,
            Some(b"k1"),
            Some(b"v1"),
            &[Header {
                key: b"h",
                value: Some(b"x"),
            }],
        )
        .unwrap();
        b.append(990, None, None, &[]).unwrap();
        b.append(1_005, Some(b""), Some(&[7u8; 300]), &[]).unwrap();
        b.build().unwrap()
    }

    #[test]
    fn header_fields_and_crc() {
        for codec in Codec::ALL {
            let batch = sample(codec);
            assert_eq!(field_i64(&batch, 0), 42);
            assert_eq!(
                field_i32(&batch, BATCH_LENGTH_AT) as usize,
                batch.len() - 12
            );
            assert_eq!(batch[MAGIC_AT], 2);
            assert_eq!(read_i16(&batch, ATTRIBUTES_AT), i16::from(codec.id()));
            assert_eq!(field_i32(&batch, LAST_OFFSET_DELTA_AT), 2);
            assert_eq!(field_i64(&batch, BASE_TIMESTAMP_AT), 1_000);
            assert_eq!(field_i64(&batch, MAX_TIMESTAMP_AT), 1_005);
            assert_eq!(field_i64(&batch, PRODUCER_ID_AT), 7);
            assert_eq!(field_i32(&batch, BASE_SEQUENCE_AT), 100);
            assert_eq!(field_i32(&batch, RECORD_COUNT_AT), 3);
            assert_eq!(batch_crc(&batch), Some(field_i32(&batch, CRC_AT) as u32));
            let decoded =
                decode_records(read_i16(&batch, ATTRIBUTES_AT), &batch[61..], 3, 1 << 20).unwrap();
            let summary =
                validate_records(decoded.iter(), 1_000, &RecordChecks::default()).unwrap();
            assert_eq!(summary.max_timestamp, 1_005);
            assert_eq!(summary.offset_delta_of_max_timestamp, 2);
            let records: Vec<_> = decoded.iter().map(Result::unwrap).collect();
            assert_eq!(records[1].timestamp_delta, -10);
            assert_eq!(records[0].headers().next().unwrap().value, Some(&b"x"[..]));
        }
    }

    #[test]
    fn builder_is_reusable_and_rejects_empty() {
        let mut b = BatchBuilder::new(Codec::Lz4);
        assert!(matches!(b.build(), Err(BuildError::Empty)));
        b.append(5, None, Some(b"a"), &[]).unwrap();
        let first = b.build().unwrap();
        b.append(5, None, Some(b"a"), &[]).unwrap();
        assert_eq!(b.build().unwrap(), first);
    }

    #[test]
    fn rewrite_recompresses_and_stamps() {
        let original = sample(Codec::Gzip);
        for codec in Codec::ALL {
            let rw = Rewrite {
                codec,
                level: None,
                log_append_time_ms: Some(9_999),
                max_out: 1 << 20,
            };
            let out = rewrite(&original, &rw).unwrap();
            let attributes = read_i16(&out, ATTRIBUTES_AT);
            assert_eq!(Codec::from_attributes(attributes).unwrap(), codec);
            assert_ne!(attributes & ATTRIBUTES_LOG_APPEND_TIME, 0);
            assert_eq!(field_i64(&out, MAX_TIMESTAMP_AT), 9_999);
            assert_eq!(field_i64(&out, 0), 42);
            assert_eq!(field_i32(&out, BATCH_LENGTH_AT) as usize, out.len() - 12);
            assert_eq!(batch_crc(&out), Some(field_i32(&out, CRC_AT) as u32));
            assert_eq!(&out[PRODUCER_ID_AT..61], &original[PRODUCER_ID_AT..61]);
            let a = decode_records(attributes, &out[61..], 3, 1 << 20).unwrap();
            let b = decode_records(
                read_i16(&original, ATTRIBUTES_AT),
                &original[61..],
                3,
                1 << 20,
            )
            .unwrap();
            assert_eq!(a.bytes(), b.bytes());
        }
        let mut none = sample(Codec::None).to_vec();
        set_log_append_time(&mut none, 77).unwrap();
        assert_eq!(field_i64(&none, MAX_TIMESTAMP_AT), 77);
        assert_eq!(batch_crc(&none), Some(field_i32(&none, CRC_AT) as u32));
        let err = set_log_append_time(&mut none[..60], 1).unwrap_err();
        assert!(matches!(err, BuildError::NotABatch { .. }));
        let err = rewrite(
            &original[..original.len() - 1],
            &Rewrite {
                codec: Codec::None,
                level: None,
                log_append_time_ms: None,
                max_out: 1 << 20,
            },
        )
        .unwrap_err();
        assert_eq!(err.kafka_code(), 2);
    }

    #[test]
    fn control_marker() {
        let batch = control_marker_batch(true, 5, 9, 1, 123).unwrap();
        let attributes = read_i16(&batch, ATTRIBUTES_AT);
        assert_eq!(attributes, ATTRIBUTES_TRANSACTIONAL | ATTRIBUTES_CONTROL);
        let decoded = decode_records(attributes, &batch[61..], 1, 1024).unwrap();
        let record = decoded.iter().next().unwrap().unwrap();
        assert_eq!(record.key, Some(&[0, 0, 0, 1][..]));
        assert_eq!(record.value, Some(&[0, 0, 0, 0, 0, 5][..]));
    }
}
