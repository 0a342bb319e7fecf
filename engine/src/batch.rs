//! A borrowed, zero-copy view of a magic-v2 record batch, its validation, and the in-place edits
//! the broker makes (base offset, partition leader epoch, log-append time).
//!
//! Plain functions over byte slices: no allocation, no I/O, usable on any core. A batch is laid
//! out as (big-endian, offsets in bytes):
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32
//! 61 records …
//! attributes: bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control, 6 delete horizon
//! ```
//!
//! `batchLength` counts from byte 12 to the end, so a batch occupies `batchLength + 12` bytes.
//! The CRC starts at `attributes`, so the base offset and leader epoch can be rewritten without
//! re-checksumming; setting the log-append time changes covered bytes and does re-checksum.

use crate::error::{Corruption, Error, InvalidRecord, Result};
use crate::limits::{BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES};
use crate::types::Offset;

const BASE_OFFSET_AT: usize = 0;
// Field offsets within the header: the one description of the v2 layout, shared with the
// builder (crate-visible) so the two can never disagree.
pub(crate) const BATCH_LENGTH_AT: usize = 8;
pub(crate) const PARTITION_LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = 23;
pub(crate) const BASE_TIMESTAMP_AT: usize = 27;
pub(crate) const MAX_TIMESTAMP_AT: usize = 35;
pub(crate) const PRODUCER_ID_AT: usize = 43;
pub(crate) const PRODUCER_EPOCH_AT: usize = 51;
pub(crate) const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORD_COUNT_AT: usize = 57;
const _: () = assert!(RECORD_COUNT_AT + 4 == BATCH_HEADER_BYTES);
const _: () = assert!(CRC_AT + 4 == ATTRIBUTES_AT);

/// Attribute bits: the codec in bits 0-2 (`compression::ATTRIBUTES_CODEC_MASK`), then the flags.
pub use crate::compression::ATTRIBUTES_CODEC_MASK;
pub const ATTRIBUTES_LOG_APPEND_TIME: i16 = 1 << 3;
pub const ATTRIBUTES_TRANSACTIONAL: i16 = 1 << 4;
pub const ATTRIBUTES_CONTROL: i16 = 1 << 5;
pub const ATTRIBUTES_DELETE_HORIZON: i16 = 1 << 6;

/// The only batch format we store.
pub const MAGIC_V2: i8 = 2;

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec for a Kafka codec id, or `None` for an id Kafka does not define.
    pub fn from_id(id: u8) -> Option<Compression> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Which timestamp a batch carries (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// A borrowed view of exactly one batch (`total_len()` bytes). Constructing one checks only
/// that the declared length fits the buffer; [`BatchView::validate`] checks the rest.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    buf: &'a [u8],
}

impl std::fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchView")
            .field("base_offset", &self.base_offset())
            .field("len", &self.total_len())
            .field("records", &self.record_count())
            .finish()
    }
}

/// Reads the base offset and total length of the batch starting at `buf[0]`, when at least the
/// 12-byte log overhead is present. Used by scans that only need to hop from batch to batch.
pub fn peek_offset_and_len(buf: &[u8]) -> Option<(i64, i64)> {
    if buf.len() < BATCH_LOG_OVERHEAD_BYTES {
        return None;
    }
    let base = be_i64(buf, BASE_OFFSET_AT);
    let len = i64::from(be_i32(buf, BATCH_LENGTH_AT)) + BATCH_LOG_OVERHEAD_BYTES as i64;
    Some((base, len))
}

/// The fixed header fields a log scan needs, read from the first 61 bytes of a batch without
/// the rest of it (scans hop from header to header without reading batch bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    pub total_len: u64,
    pub magic: i8,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `buf`; `None` when fewer than 61 bytes are present or
    /// `batchLength` is too small to cover the header.
    pub fn read(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < BATCH_HEADER_BYTES {
            return None;
        }
        let length = be_i32(buf, BATCH_LENGTH_AT);
        if length < (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i32 {
            return None;
        }
        Some(BatchHeader {
            base_offset: Offset(be_i64(buf, BASE_OFFSET_AT)),
            total_len: length as u64 + BATCH_LOG_OVERHEAD_BYTES as u64,
            magic: buf[MAGIC_AT] as i8,
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            record_count: be_i32(buf, RECORD_COUNT_AT),
        })
    }

    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta))
    }

    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }
}

impl<'a> BatchView<'a> {
    /// A view of the batch at the start of `buf` (which may hold more bytes after it). `pos` is
    /// the batch's position in the enclosing buffer, reported in errors.
    pub fn parse(buf: &'a [u8], pos: usize) -> Result<BatchView<'a>> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(Error::CorruptBatch {
                pos,
                reason: Corruption::TooShort,
            });
        }
        let length = be_i32(buf, BATCH_LENGTH_AT);
        if length < (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i32 {
            return Err(Error::CorruptBatch {
                pos,
                reason: Corruption::LengthTooSmall,
            });
        }
        let total = length as usize + BATCH_LOG_OVERHEAD_BYTES;
        if total > buf.len() {
            return Err(Error::CorruptBatch {
                pos,
                reason: Corruption::LengthPastEnd,
            });
        }
        Ok(BatchView { buf: &buf[..total] })
    }

    /// Full validation of a batch received from a producer or read back during recovery:
    /// magic, size limit, CRC-32C, compression codec, and record count against
    /// `lastOffsetDelta`. `max_batch_bytes` is the topic's `max.message.bytes`.
    pub fn validate(&self, pos: usize, max_batch_bytes: usize) -> Result<()> {
        if self.magic() != MAGIC_V2 {
            return Err(Error::UnsupportedMagic {
                pos,
                magic: self.magic(),
            });
        }
        let size = self.total_len();
        if size > max_batch_bytes.min(BATCH_BYTES_MAX) {
            return Err(Error::MessageTooLarge {
                size,
                max: max_batch_bytes.min(BATCH_BYTES_MAX),
            });
        }
        let computed = self.compute_crc();
        if computed != self.crc() {
            return Err(Error::CorruptBatch {
                pos,
                reason: Corruption::CrcMismatch {
                    stored: self.crc(),
                    computed,
                },
            });
        }
        if self.compression().is_none() {
            return Err(Error::UnsupportedCompression {
                pos,
                codec: self.compression_id(),
            });
        }
        let count = self.record_count();
        let delta = self.last_offset_delta();
        if delta < 0 {
            return Err(Error::InvalidRecord {
                pos,
                reason: InvalidRecord::NegativeLastOffsetDelta,
            });
        }
        if count <= 0 {
            return Err(Error::InvalidRecord {
                pos,
                reason: InvalidRecord::NoRecords,
            });
        }
        // Clients always send dense batches (count == lastOffsetDelta + 1), compressed or not;
        // only compaction produces sparse batches, and those are never produced by clients.
        if i64::from(count) != i64::from(delta) + 1 {
            return Err(Error::InvalidRecord {
                pos,
                reason: InvalidRecord::CountMismatch {
                    count,
                    last_offset_delta: delta,
                },
            });
        }
        Ok(())
    }

    /// Validation of a batch read back from a segment: like [`BatchView::validate`], except
    /// that the cleaner's batches are accepted: fewer records than the offset span (records
    /// removed, offsets kept) and, for a batch kept to preserve an idempotent producer's state,
    /// no records at all.
    pub fn validate_stored(&self, pos: usize, max_batch_bytes: usize) -> Result<()> {
        match self.validate(pos, max_batch_bytes) {
            Err(Error::InvalidRecord {
                reason: InvalidRecord::NoRecords | InvalidRecord::CountMismatch { .. },
                ..
            }) if self.record_count() >= 0
                && i64::from(self.record_count()) <= i64::from(self.last_offset_delta()) + 1 =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// The bytes of this batch, exactly `total_len()` long.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    pub fn total_len(&self) -> usize {
        self.buf.len()
    }
    pub fn base_offset(&self) -> Offset {
        Offset(be_i64(self.buf, BASE_OFFSET_AT))
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(self.buf, BATCH_LENGTH_AT)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.buf, PARTITION_LEADER_EPOCH_AT)
    }
    pub fn magic(&self) -> i8 {
        self.buf[MAGIC_AT] as i8
    }
    pub fn crc(&self) -> u32 {
        be_u32(self.buf, CRC_AT)
    }
    /// CRC-32C of the bytes from `attributes` to the end.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.buf[ATTRIBUTES_AT..])
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.buf, ATTRIBUTES_AT)
    }
    pub fn compression_id(&self) -> u8 {
        (self.attributes() & ATTRIBUTES_CODEC_MASK) as u8
    }
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_id(self.compression_id())
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & ATTRIBUTES_LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTRIBUTES_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTRIBUTES_CONTROL != 0
    }
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & ATTRIBUTES_DELETE_HORIZON != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.buf, LAST_OFFSET_DELTA_AT)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.buf, BASE_TIMESTAMP_AT)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.buf, MAX_TIMESTAMP_AT)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.buf, PRODUCER_ID_AT)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.buf, PRODUCER_EPOCH_AT)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.buf, BASE_SEQUENCE_AT)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(self.buf, RECORD_COUNT_AT)
    }
    /// The offset of the last record: `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> Offset {
        self.base_offset().plus(i64::from(self.last_offset_delta()))
    }
    /// The offset the next batch in the log gets.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }
    /// The records section (possibly compressed).
    pub fn records(&self) -> &'a [u8] {
        &self.buf[BATCH_HEADER_BYTES..]
    }
}

/// Writes the base offset into the batch header at the start of `buf`. The field is outside the
/// CRC, so the checksum stays valid.
pub fn set_base_offset(buf: &mut [u8], offset: Offset) {
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&offset.0.to_be_bytes());
}

/// Writes the partition leader epoch into the batch header at the start of `buf` (outside the
/// CRC, so the checksum stays valid).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch at the start of `buf` (exactly one batch) as LogAppendTime with `now_ms` as
/// its max timestamp, as Kafka does for topics with `message.timestamp.type=LogAppendTime`,
/// and recomputes the CRC because both fields are covered by it.
pub fn set_log_append_time(buf: &mut [u8], now_ms: i64) {
    let attrs = be_i16(buf, ATTRIBUTES_AT) | ATTRIBUTES_LOG_APPEND_TIME;
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    buf[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Like [`set_log_append_time`] for a batch held as its 61-byte header and its records section
/// in separate buffers (the header is patched, the records are only read for the CRC).
pub fn set_log_append_time_split(header: &mut [u8], records: &[u8], now_ms: i64) {
    let attrs = be_i16(header, ATTRIBUTES_AT) | ATTRIBUTES_LOG_APPEND_TIME;
    header[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    header[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&header[ATTRIBUTES_AT..BATCH_HEADER_BYTES]),
        records,
    );
    header[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over a buffer of concatenated batches (a Produce `records` blob, or a piece of a
/// segment), yielding each batch with its position, or one error and then nothing.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> BatchIter<'a> {
        BatchIter {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Bytes consumed by the batches yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(usize, BatchView<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match BatchView::parse(&self.buf[self.pos..], self.pos) {
            Ok(view) => {
                let at = self.pos;
                self.pos += view.total_len();
                Some(Ok((at, view)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Builds syntactically valid v2 batches for tests and benchmarks. The records section is opaque
/// filler of the requested size: the storage engine never looks inside it, only at the header
/// and the CRC. Real record encoding lives in `builder.rs`.
pub mod testing {
    use super::*;

    /// Options of a test batch.
    #[derive(Clone, Copy, Debug)]
    pub struct TestBatch {
        pub record_count: i32,
        pub payload_bytes: usize,
        pub base_timestamp: i64,
        pub max_timestamp: i64,
        pub codec: u8,
        /// A seed for the filler bytes, so different batches differ.
        pub fill: u8,
    }

    impl Default for TestBatch {
        fn default() -> Self {
            TestBatch {
                record_count: 1,
                payload_bytes: 100,
                base_timestamp: 1_700_000_000_000,
                max_timestamp: 1_700_000_000_000,
                codec: 0,
                fill: 0x5a,
            }
        }
    }

    /// Encodes one batch with base offset 0 and a correct CRC.
    pub fn make_batch(opts: TestBatch) -> Vec<u8> {
        let total = BATCH_HEADER_BYTES + opts.payload_bytes;
        let mut b = vec![0u8; total];
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
            .copy_from_slice(&((total - BATCH_LOG_OVERHEAD_BYTES) as i32).to_be_bytes());
        b[MAGIC_AT] = MAGIC_V2 as u8;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&i16::from(opts.codec).to_be_bytes());
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(opts.record_count - 1).to_be_bytes());
        b[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8]
            .copy_from_slice(&opts.base_timestamp.to_be_bytes());
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&opts.max_timestamp.to_be_bytes());
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
        b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&(-1i16).to_be_bytes());
        b[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&opts.record_count.to_be_bytes());
        for (i, byte) in b[BATCH_HEADER_BYTES..].iter_mut().enumerate() {
            *byte = opts.fill.wrapping_add(i as u8);
        }
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Rewrites `recordCount` and fixes the CRC (to build batches that are well-formed but lie).
    pub fn set_record_count(buf: &mut [u8], count: i32) {
        buf[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// Sets the magic byte (outside the CRC).
    pub fn set_magic(buf: &mut [u8], magic: i8) {
        buf[MAGIC_AT] = magic as u8;
    }

    /// The byte offset of the CRC field, for tests that flip it.
    pub const CRC_FIELD_AT: usize = CRC_AT;
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn reads_every_header_field() {
        let mut b = make_batch(TestBatch {
            record_count: 5,
            payload_bytes: 40,
            base_timestamp: 10,
            max_timestamp: 20,
            codec: 3,
            fill: 1,
        });
        set_base_offset(&mut b, Offset(1000));
        set_partition_leader_epoch(&mut b, 7);
        let v = BatchView::parse(&b, 0).unwrap();
        v.validate(0, MAX).unwrap();
        assert_eq!(v.base_offset(), Offset(1000));
        assert_eq!(v.partition_leader_epoch(), 7);
        assert_eq!(v.magic(), 2);
        assert_eq!(v.compression(), Some(Compression::Lz4));
        assert_eq!(v.timestamp_type(), TimestampType::CreateTime);
        assert!(!v.is_transactional() && !v.is_control() && !v.has_delete_horizon());
        assert_eq!(v.last_offset_delta(), 4);
        assert_eq!(v.last_offset(), Offset(1004));
        assert_eq!(v.next_offset(), Offset(1005));
        assert_eq!(v.base_timestamp(), 10);
        assert_eq!(v.max_timestamp(), 20);
        assert_eq!(v.producer_id(), -1);
        assert_eq!(v.producer_epoch(), -1);
        assert_eq!(v.base_sequence(), -1);
        assert_eq!(v.record_count(), 5);
        assert_eq!(v.total_len(), 61 + 40);
        assert_eq!(v.batch_length(), 61 + 40 - 12);
        assert_eq!(v.records().len(), 40);
    }

    #[test]
    fn split_log_append_time_matches_whole_batch_version() {
        let mut whole = make_batch(TestBatch::default());
        let mut header = whole[..BATCH_HEADER_BYTES].to_vec();
        set_log_append_time_split(&mut header, &whole[BATCH_HEADER_BYTES..], 77);
        set_log_append_time(&mut whole, 77);
        assert_eq!(&header[..], &whole[..BATCH_HEADER_BYTES]);
    }

    #[test]
    fn log_append_time_rewrites_and_rechecksums() {
        let mut b = make_batch(TestBatch::default());
        set_log_append_time(&mut b, 42);
        let v = BatchView::parse(&b, 0).unwrap();
        v.validate(0, MAX).unwrap();
        assert_eq!(v.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(v.max_timestamp(), 42);
    }

    #[test]
    fn each_defect_gets_its_precise_error() {
        let good = make_batch(TestBatch::default());
        let code = |b: &[u8]| {
            BatchView::parse(b, 0)
                .and_then(|v| v.validate(0, 200))
                .unwrap_err()
                .kafka_code()
        };
        assert_eq!(code(&good[..30]), 2, "too short");
        assert_eq!(code(&good[..good.len() - 1]), 2, "length past end");
        let mut b = good.clone();
        b[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(code(&b), 2, "length too small");
        let mut b = good.clone();
        b[100] ^= 1;
        assert_eq!(code(&b), 2, "crc");
        let mut b = good.clone();
        set_magic(&mut b, 1);
        assert_eq!(code(&b), 43, "magic");
        let b = make_batch(TestBatch {
            codec: 6,
            ..TestBatch::default()
        });
        assert_eq!(code(&b), 76, "codec");
        let mut b = good.clone();
        set_record_count(&mut b, 3);
        assert_eq!(code(&b), 87, "count mismatch");
        let b = make_batch(TestBatch {
            payload_bytes: 500,
            ..TestBatch::default()
        });
        assert_eq!(code(&b), 10, "too large");
    }

    #[test]
    fn iterates_concatenated_batches_then_reports_trailing_garbage() {
        let mut blob = make_batch(TestBatch::default());
        blob.extend(make_batch(TestBatch {
            record_count: 3,
            ..TestBatch::default()
        }));
        let n = blob.len();
        let items: Vec<_> = BatchIter::new(&blob).collect::<Result<_>>().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].0, 161);
        blob.extend_from_slice(&[1, 2, 3]);
        let mut it = BatchIter::new(&blob);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_ok());
        match it.next() {
            Some(Err(Error::CorruptBatch { pos, .. })) => assert_eq!(pos, n),
            other => panic!("{other:?}"),
        }
        assert!(it.next().is_none());
    }
}
