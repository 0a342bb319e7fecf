//! The records inside a magic-v2 batch: a borrowed view of each record, a checked iterator over
//! a records section, and the validations the broker applies to a produced batch.
//!
//! This module owns the v2 inner record format:
//!
//! ```text
//! length          varint (zigzag)   bytes that follow, up to the end of this record
//! attributes      i8                unused by Kafka so far; kept as sent
//! timestampDelta  varlong (zigzag)  added to the batch's baseTimestamp
//! offsetDelta     varint  (zigzag)  added to the batch's baseOffset
//! keyLength       varint  (zigzag)  -1 = null key
//! key             keyLength bytes
//! valueLength     varint  (zigzag)  -1 = null value
//! value           valueLength bytes
//! headerCount     varint  (zigzag)
//! headers         headerCount x [keyLength varint, key (never null), valueLength varint
//!                 (-1 = null), value]
//! ```
//!
//! Guarantees: parsing never panics, never allocates (every record and header is a slice of
//! the input), bounds every varint (5 bytes for varints, 10 for varlongs), checks every length
//! against the bytes that remain, and rejects precisely: truncated fields, negative lengths
//! other than -1, a record length that disagrees with its contents, bytes left after the last
//! record, and a record count that disagrees with the header. All of it is pure and runs on
//! whichever core holds the bytes (the connection's shard for produce validation).

use std::borrow::Cow;

use thiserror::Error;

use crate::compression::{self, Codec, CompressionError};

/// The smallest possible record: one byte each for length, attributes, timestampDelta,
/// offsetDelta, key length, value length and header count.
pub const RECORD_BYTES_MIN: usize = 7;

/// Longest encoding of a 32-bit varint.
const VARINT_BYTES_MAX: usize = 5;

/// Longest encoding of a 64-bit varlong.
const VARLONG_BYTES_MAX: usize = 10;

/// A record field, named in errors so that a rejection says exactly what was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Length,
    Attributes,
    TimestampDelta,
    OffsetDelta,
    KeyLength,
    Key,
    ValueLength,
    Value,
    HeaderCount,
    HeaderKeyLength,
    HeaderKey,
    HeaderValueLength,
    HeaderValue,
}

/// Why a records section or one of its records was rejected. `record` is the zero-based index
/// of the record in the batch.
#[derive(Debug, Error)]
pub enum RecordsError {
    #[error("record {record}: {field:?} is truncated")]
    Truncated { record: u32, field: Field },
    #[error("record {record}: {field:?} varint is longer than {max_bytes} bytes")]
    VarintTooLong {
        record: u32,
        field: Field,
        max_bytes: usize,
    },
    #[error("record {record}: {field:?} is {value}; only -1 (null) may be negative")]
    NegativeLength {
        record: u32,
        field: Field,
        value: i64,
    },
    #[error("record {record}: {field:?} is {value}, which does not fit in 32 bits")]
    VarintOverflow {
        record: u32,
        field: Field,
        value: i64,
    },
    #[error("record {record}: header key is null")]
    NullHeaderKey { record: u32 },
    #[error("record {record}: length says {declared} bytes but its fields take {actual}")]
    LengthMismatch {
        record: u32,
        declared: usize,
        actual: usize,
    },
    #[error("record {record}: length says {declared} bytes but {field:?} runs past them")]
    FieldOverrunsLength {
        record: u32,
        declared: usize,
        field: Field,
    },
    #[error("{extra} bytes follow the last of {count} records")]
    TrailingBytes { count: u32, extra: usize },
    #[error("batch declares {declared} records but holds {actual}")]
    CountMismatch { declared: i64, actual: u32 },
    #[error("record {record}: offsetDelta is {actual}, expected {expected}")]
    OffsetDelta {
        record: u32,
        expected: i32,
        actual: i32,
    },
    #[error("record {record}: a compacted topic requires a key")]
    MissingKey { record: u32 },
    #[error("record {record}: timestamp {timestamp} is outside [{earliest}, {latest}]")]
    Timestamp {
        record: u32,
        timestamp: i64,
        earliest: i64,
        latest: i64,
    },
    #[error("record {record}: timestamp delta {delta} overflows from base {base}")]
    TimestampOverflow { record: u32, base: i64, delta: i64 },
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

impl RecordsError {
    /// The Kafka error code a producer gets for this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            // INVALID_RECORD: Kafka reports malformed inner records and broken record-level
            // rules with this code (it is not retriable: resending cannot fix the batch).
            RecordsError::Truncated { .. }
            | RecordsError::VarintTooLong { .. }
            | RecordsError::NegativeLength { .. }
            | RecordsError::VarintOverflow { .. }
            | RecordsError::NullHeaderKey { .. }
            | RecordsError::LengthMismatch { .. }
            | RecordsError::FieldOverrunsLength { .. }
            | RecordsError::TrailingBytes { .. }
            | RecordsError::CountMismatch { .. }
            | RecordsError::OffsetDelta { .. }
            | RecordsError::MissingKey { .. } => 87,
            // INVALID_TIMESTAMP
            RecordsError::Timestamp { .. } | RecordsError::TimestampOverflow { .. } => 32,
            RecordsError::Compression(e) => e.kafka_code(),
        }
    }
}

/// One record, borrowed from its records section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The encoded headers (after the count), already validated when the record was parsed.
    headers_raw: &'a [u8],
    header_count: u32,
    /// The record's full encoded size including its length prefix.
    encoded_len: usize,
}

impl<'a> Record<'a> {
    /// The record's headers, in order.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            rest: self.headers_raw,
            remaining: self.header_count,
        }
    }

    /// Number of headers.
    pub fn header_count(&self) -> u32 {
        self.header_count
    }

    /// Bytes this record occupies in the records section, length prefix included.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// The record's absolute timestamp for a batch base timestamp.
    pub fn timestamp(&self, base_timestamp: i64) -> Option<i64> {
        base_timestamp.checked_add(self.timestamp_delta)
    }
}

/// One record header, borrowed. Keys are never null; values may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Iterator over a record's headers. The bytes were validated when the record was parsed, so
/// it cannot fail; should it ever meet bytes it cannot parse, it stops.
#[derive(Clone, Debug)]
pub struct Headers<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let mut cursor = Cursor {
            buf: self.rest,
            record: 0,
        };
        let header = cursor.header().ok()?;
        self.rest = cursor.buf;
        self.remaining -= 1;
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining as usize;
        (n, Some(n))
    }
}

/// Iterator over the records of an uncompressed records section. Yields each record or the
/// first error, then stops; after the last record it checks the declared count and that no
/// bytes remain.
#[derive(Clone, Debug)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    declared: i64,
    seen: u32,
    done: bool,
}

impl<'a> RecordIter<'a> {
    /// Iterates `records` (the uncompressed bytes after the batch header), expecting
    /// `declared_count` records (the header's recordCount).
    pub fn new(records: &'a [u8], declared_count: i32) -> RecordIter<'a> {
        RecordIter {
            rest: records,
            declared: i64::from(declared_count),
            seen: 0,
            done: false,
        }
    }

    /// Records yielded so far.
    pub fn seen(&self) -> u32 {
        self.seen
    }

    fn fail(&mut self, error: RecordsError) -> Option<Result<Record<'a>, RecordsError>> {
        self.done = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if i64::from(self.seen) >= self.declared {
            self.done = true;
            if self.declared < 0 {
                return Some(Err(RecordsError::CountMismatch {
                    declared: self.declared,
                    actual: 0,
                }));
            }
            if !self.rest.is_empty() {
                return Some(Err(RecordsError::TrailingBytes {
                    count: self.seen,
                    extra: self.rest.len(),
                }));
            }
            return None;
        }
        if self.rest.is_empty() {
            let error = RecordsError::CountMismatch {
                declared: self.declared,
                actual: self.seen,
            };
            return self.fail(error);
        }
        match parse_record(self.rest, self.seen) {
            Ok(record) => {
                self.rest = &self.rest[record.encoded_len..];
                self.seen += 1;
                Some(Ok(record))
            }
            Err(error) => self.fail(error),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.declared - i64::from(self.seen)).max(0);
        // A hostile count cannot promise more records than the bytes could hold (+1 for the
        // error that ends such an iteration).
        let upper = (left as u64).min((self.rest.len() / RECORD_BYTES_MIN) as u64 + 1);
        (0, Some(upper as usize))
    }
}

/// A records section ready to iterate: borrowed when the batch is uncompressed, owned after
/// decompression.
#[derive(Clone, Debug)]
pub struct DecodedRecords<'a> {
    bytes: Cow<'a, [u8]>,
    declared_count: i32,
}

impl DecodedRecords<'_> {
    /// Iterates the records.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter::new(&self.bytes, self.declared_count)
    }

    /// The uncompressed records section.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether decompression produced a new buffer (false when the batch was uncompressed).
    pub fn is_owned(&self) -> bool {
        matches!(self.bytes, Cow::Owned(_))
    }
}

/// Prepares a batch's records section for iteration: decompresses it with the codec named in
/// `attributes` (capped at `max_out` bytes) or borrows it when uncompressed.
pub fn decode_records(
    attributes: i16,
    records_section: &[u8],
    declared_count: i32,
    max_out: usize,
) -> Result<DecodedRecords<'_>, RecordsError> {
    let codec = Codec::from_attributes(attributes)?;
    let bytes = match codec {
        Codec::None => Cow::Borrowed(records_section),
        _ => Cow::Owned(compression::decompress(codec, records_section, max_out)?),
    };
    Ok(DecodedRecords {
        bytes,
        declared_count,
    })
}

/// Which record-level rules to enforce while validating a produced batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordChecks {
    /// Every record must have a non-null key (compacted topics).
    pub require_keys: bool,
    /// Record timestamps must lie in this inclusive range (CreateTime topics:
    /// `[now - message.timestamp.before.max.ms, now + message.timestamp.after.max.ms]`).
    pub timestamp_range: Option<(i64, i64)>,
}

/// What validation learned about a batch's records, for comparison with its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordsSummary {
    pub count: u32,
    /// The last record's offset delta, or -1 for an empty section.
    pub last_offset_delta: i32,
    /// The largest record timestamp, or -1 for an empty section (Kafka's "no timestamp").
    pub max_timestamp: i64,
    /// The offset delta of the record holding `max_timestamp` (the first such record).
    pub offset_delta_of_max_timestamp: i32,
}

/// Validates every record of a decoded section in one pass: the structure (via the
/// iterator), offset deltas exactly 0..count-1 in order (Kafka requires consecutive deltas in
/// v2 producer batches), and the optional key and timestamp rules.
pub fn validate_records(
    records: RecordIter<'_>,
    base_timestamp: i64,
    checks: &RecordChecks,
) -> Result<RecordsSummary, RecordsError> {
    let mut summary = RecordsSummary {
        count: 0,
        last_offset_delta: -1,
        max_timestamp: -1,
        offset_delta_of_max_timestamp: -1,
    };
    for (index, record) in records.enumerate() {
        let record = record?;
        // The iterator yields at most declared_count (an i32) records, so this fits.
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let expected = i32::try_from(index).unwrap_or(i32::MAX);
        if record.offset_delta != expected {
            return Err(RecordsError::OffsetDelta {
                record: index,
                expected,
                actual: record.offset_delta,
            });
        }
        if checks.require_keys && record.key.is_none() {
            return Err(RecordsError::MissingKey { record: index });
        }
        let timestamp =
            record
                .timestamp(base_timestamp)
                .ok_or(RecordsError::TimestampOverflow {
                    record: index,
                    base: base_timestamp,
                    delta: record.timestamp_delta,
                })?;
        if let Some((earliest, latest)) = checks.timestamp_range {
            if timestamp < earliest || timestamp > latest {
                return Err(RecordsError::Timestamp {
                    record: index,
                    timestamp,
                    earliest,
                    latest,
                });
            }
        }
        if summary.count == 0 || timestamp > summary.max_timestamp {
            summary.max_timestamp = timestamp;
            summary.offset_delta_of_max_timestamp = record.offset_delta;
        }
        summary.count += 1;
        summary.last_offset_delta = record.offset_delta;
    }
    Ok(summary)
}

/// Parses the record at the start of `buf`.
fn parse_record(buf: &[u8], record: u32) -> Result<Record<'_>, RecordsError> {
    let mut cursor = Cursor { buf, record };
    let length = cursor.varint(Field::Length)?;
    let length = usize::try_from(length).map_err(|_| RecordsError::NegativeLength {
        record,
        field: Field::Length,
        value: i64::from(length),
    })?;
    let prefix_len = buf.len() - cursor.buf.len();
    let Some(body) = cursor.buf.get(..length) else {
        return Err(RecordsError::Truncated {
            record,
            field: Field::Length,
        });
    };
    // Parse the body strictly inside its declared length: running past it or stopping short
    // of it both mean the length disagrees with the contents.
    let mut body_cursor = Cursor { buf: body, record };
    let parsed = parse_body(&mut body_cursor, prefix_len + length);
    match parsed {
        Ok(parsed) if body_cursor.buf.is_empty() => Ok(parsed),
        Ok(_) => Err(RecordsError::LengthMismatch {
            record,
            declared: length,
            actual: length - body_cursor.buf.len(),
        }),
        Err(RecordsError::Truncated { field, .. }) => Err(RecordsError::FieldOverrunsLength {
            record,
            declared: length,
            field,
        }),
        Err(other) => Err(other),
    }
}

fn parse_body<'a>(cursor: &mut Cursor<'a>, encoded_len: usize) -> Result<Record<'a>, RecordsError> {
    let attributes = cursor.byte(Field::Attributes)? as i8;
    let timestamp_delta = cursor.varlong(Field::TimestampDelta)?;
    let offset_delta = cursor.varint(Field::OffsetDelta)?;
    let key = cursor.nullable_bytes(Field::KeyLength, Field::Key)?;
    let value = cursor.nullable_bytes(Field::ValueLength, Field::Value)?;
    let header_count = cursor.varint(Field::HeaderCount)?;
    let header_count = u32::try_from(header_count).map_err(|_| RecordsError::NegativeLength {
        record: cursor.record,
        field: Field::HeaderCount,
        value: i64::from(header_count),
    })?;
    let headers_raw = cursor.buf;
    for _ in 0..header_count {
        // Each header takes at least two bytes, so a hostile count fails on the bytes, after
        // at most len/2 iterations.
        cursor.header()?;
    }
    let headers_len = headers_raw.len() - cursor.buf.len();
    Ok(Record {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_raw: &headers_raw[..headers_len],
        header_count,
        encoded_len,
    })
}

/// A read position over untrusted bytes; every read is bounds-checked.
struct Cursor<'a> {
    buf: &'a [u8],
    record: u32,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self, field: Field) -> Result<u8, RecordsError> {
        let (&first, rest) = self.buf.split_first().ok_or(RecordsError::Truncated {
            record: self.record,
            field,
        })?;
        self.buf = rest;
        Ok(first)
    }

    /// An unsigned LEB128 value of at most `max_bytes` bytes.
    fn unsigned(&mut self, field: Field, max_bytes: usize) -> Result<u64, RecordsError> {
        // Most fields of most records (attributes aside: deltas, small lengths, header counts)
        // fit in one byte.
        if let Some((&b, rest)) = self.buf.split_first() {
            if b & 0x80 == 0 {
                self.buf = rest;
                return Ok(u64::from(b));
            }
        }
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(max_bytes) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        if self.buf.len() < max_bytes {
            Err(RecordsError::Truncated {
                record: self.record,
                field,
            })
        } else {
            Err(RecordsError::VarintTooLong {
                record: self.record,
                field,
                max_bytes,
            })
        }
    }

    /// A zigzag varint that must fit in an i32.
    fn varint(&mut self, field: Field) -> Result<i32, RecordsError> {
        let raw = self.unsigned(field, VARINT_BYTES_MAX)?;
        let value = zigzag_decode(raw);
        i32::try_from(value).map_err(|_| RecordsError::VarintOverflow {
            record: self.record,
            field,
            value,
        })
    }

    /// A zigzag varlong.
    fn varlong(&mut self, field: Field) -> Result<i64, RecordsError> {
        Ok(zigzag_decode(self.unsigned(field, VARLONG_BYTES_MAX)?))
    }

    /// A varint length (-1 = null) followed by that many bytes.
    fn nullable_bytes(
        &mut self,
        length_field: Field,
        bytes_field: Field,
    ) -> Result<Option<&'a [u8]>, RecordsError> {
        let length = self.varint(length_field)?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| RecordsError::NegativeLength {
            record: self.record,
            field: length_field,
            value: i64::from(length),
        })?;
        let Some((bytes, rest)) = self.buf.split_at_checked(length) else {
            return Err(RecordsError::Truncated {
                record: self.record,
                field: bytes_field,
            });
        };
        self.buf = rest;
        Ok(Some(bytes))
    }

    fn header(&mut self) -> Result<Header<'a>, RecordsError> {
        let key = self
            .nullable_bytes(Field::HeaderKeyLength, Field::HeaderKey)?
            .ok_or(RecordsError::NullHeaderKey {
                record: self.record,
            })?;
        let value = self.nullable_bytes(Field::HeaderValueLength, Field::HeaderValue)?;
        Ok(Header { key, value })
    }
}

fn zigzag_decode(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// Zigzag-encodes a signed value for a varint/varlong.
pub fn zigzag_encode(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Appends `value` as a zigzag varint/varlong.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = zigzag_encode(value);
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Bytes `put_varlong(value)` writes.
pub fn varlong_len(value: i64) -> usize {
    let raw = zigzag_encode(value);
    // One byte per started group of 7 significant bits, and at least one.
    let bits = 64 - (raw | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varlong(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varlong(&mut out, v);
        out
    }

    /// Encodes one record by hand (independently of the builder) from raw field values.
    fn record(fields: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = fields.concat();
        let mut out = varlong(body.len() as i64);
        out.extend(body);
        out
    }

    fn simple(offset_delta: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
        let bytes = |b: Option<&[u8]>| match b {
            None => varlong(-1),
            Some(b) => [varlong(b.len() as i64), b.to_vec()].concat(),
        };
        record(&[
            vec![0],
            varlong(5),
            varlong(offset_delta),
            bytes(key),
            bytes(value),
            varlong(1),
            [varlong(1), b"h".to_vec(), varlong(-1)].concat(),
        ])
    }

    #[test]
    fn varint_lengths_and_zigzag() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            i32::MAX.into(),
            i32::MIN.into(),
            i64::MAX,
            i64::MIN,
        ] {
            let enc = varlong(v);
            assert_eq!(enc.len(), varlong_len(v), "{v}");
            let mut c = Cursor {
                buf: &enc,
                record: 0,
            };
            assert_eq!(c.varlong(Field::TimestampDelta).unwrap(), v);
            assert!(c.buf.is_empty());
        }
        assert_eq!(varlong(-1), vec![1]);
        assert_eq!(varlong(1), vec![2]);
        assert_eq!(varlong(i64::MIN).len(), 10);
    }

    #[test]
    fn parses_records_and_headers() {
        let section = [simple(0, Some(b"k"), Some(b"")), simple(1, None, None)].concat();
        let records: Vec<_> = RecordIter::new(&section, 2)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key, Some(&b"k"[..]));
        assert_eq!(records[0].value, Some(&b""[..]));
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].value, None);
        assert_eq!(records[1].timestamp_delta, 5);
        let headers: Vec<_> = records[0].headers().collect();
        assert_eq!(
            headers,
            vec![Header {
                key: b"h",
                value: None
            }]
        );
        let summary =
            validate_records(RecordIter::new(&section, 2), 100, &RecordChecks::default()).unwrap();
        assert_eq!(summary.count, 2);
        assert_eq!(summary.last_offset_delta, 1);
        assert_eq!(summary.max_timestamp, 105);
    }

    #[test]
    fn count_and_trailing_errors() {
        let section = simple(0, None, Some(b"v"));
        let err = RecordIter::new(&section, 2).find_map(Result::err).unwrap();
        assert!(
            matches!(
                err,
                RecordsError::CountMismatch {
                    declared: 2,
                    actual: 1
                }
            ),
            "{err}"
        );
        let err = RecordIter::new(&section, 0).find_map(Result::err).unwrap();
        assert!(
            matches!(err, RecordsError::TrailingBytes { count: 0, .. }),
            "{err}"
        );
        let err = RecordIter::new(&section, -1).find_map(Result::err).unwrap();
        assert!(
            matches!(err, RecordsError::CountMismatch { declared: -1, .. }),
            "{err}"
        );
        let mut extra = section.clone();
        extra.push(0);
        let err = RecordIter::new(&extra, 1).find_map(Result::err).unwrap();
        assert!(
            matches!(err, RecordsError::TrailingBytes { count: 1, extra: 1 }),
            "{err}"
        );
        assert_eq!(err.kafka_code(), 87);
        assert_eq!(RecordIter::new(&[], 0).count(), 0);
    }

    #[test]
    fn length_disagreeing_with_contents() {
        let mut long = simple(0, None, Some(b"v"));
        // Declare one byte more and supply it: the fields end before the declared length.
        long[0] += 2;
        long.push(0);
        let err = RecordIter::new(&long, 1).find_map(Result::err).unwrap();
        assert!(matches!(err, RecordsError::LengthMismatch { .. }), "{err}");
        let mut short = simple(0, None, Some(b"v"));
        short[0] -= 2;
        let err = RecordIter::new(&short, 1).find_map(Result::err).unwrap();
        assert!(
            matches!(
                err,
                RecordsError::FieldOverrunsLength {
                    field: Field::HeaderValueLength,
                    ..
                }
            ),
            "{err}"
        );
        let truncated = &simple(0, None, Some(b"v"))[..4];
        let err = RecordIter::new(truncated, 1).find_map(Result::err).unwrap();
        assert!(
            matches!(
                err,
                RecordsError::Truncated {
                    field: Field::Length,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn negative_lengths_and_long_varints() {
        let bad_key = record(&[
            vec![0],
            varlong(0),
            varlong(0),
            varlong(-2),
            varlong(-1),
            varlong(0),
        ]);
        let err = RecordIter::new(&bad_key, 1).find_map(Result::err).unwrap();
        assert!(
            matches!(
                err,
                RecordsError::NegativeLength {
                    field: Field::KeyLength,
                    value: -2,
                    ..
                }
            ),
            "{err}"
        );
        let null_header_key = record(&[
            vec![0],
            varlong(0),
            varlong(0),
            varlong(-1),
            varlong(-1),
            varlong(1),
            varlong(-1),
            varlong(-1),
        ]);
        let err = RecordIter::new(&null_header_key, 1)
            .find_map(Result::err)
            .unwrap();
        assert!(
            matches!(err, RecordsError::NullHeaderKey { record: 0 }),
            "{err}"
        );
        let too_long = record(&[
            vec![0],
            vec![0x80; 10],
            vec![0],
            varlong(0),
            varlong(-1),
            varlong(-1),
            varlong(0),
        ]);
        let err = RecordIter::new(&too_long, 1).find_map(Result::err).unwrap();
        assert!(
            matches!(
                err,
                RecordsError::VarintTooLong {
                    field: Field::TimestampDelta,
                    max_bytes: 10,
                    ..
                }
            ),
            "{err}"
        );
        let overflow = record(&[
            vec![0],
            varlong(0),
            varlong(i64::from(i32::MAX) + 1),
            varlong(-1),
            varlong(-1),
            varlong(0),
        ]);
        let err = RecordIter::new(&overflow, 1).find_map(Result::err).unwrap();
        assert!(
            matches!(
                err,
                RecordsError::VarintOverflow {
                    field: Field::OffsetDelta,
                    ..
                }
            ),
            "{err}"
        );
        let huge_headers = record(&[
            vec![0],
            varlong(0),
            varlong(0),
            varlong(-1),
            varlong(-1),
            varlong(i64::from(i32::MAX)),
        ]);
        let err = RecordIter::new(&huge_headers, 1)
            .find_map(Result::err)
            .unwrap();
        assert!(
            matches!(
                err,
                RecordsError::FieldOverrunsLength {
                    field: Field::HeaderKeyLength,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn validation_rules() {
        let section = [simple(0, Some(b"k"), None), simple(2, None, None)].concat();
        let err = validate_records(RecordIter::new(&section, 2), 0, &RecordChecks::default())
            .unwrap_err();
        assert!(
            matches!(
                err,
                RecordsError::OffsetDelta {
                    record: 1,
                    expected: 1,
                    actual: 2
                }
            ),
            "{err}"
        );
        let section = [simple(0, Some(b"k"), None), simple(1, None, None)].concat();
        let keys = RecordChecks {
            require_keys: true,
            ..RecordChecks::default()
        };
        let err = validate_records(RecordIter::new(&section, 2), 0, &keys).unwrap_err();
        assert!(
            matches!(err, RecordsError::MissingKey { record: 1 }),
            "{err}"
        );
        let window = RecordChecks {
            timestamp_range: Some((0, 104)),
            ..RecordChecks::default()
        };
        let err = validate_records(RecordIter::new(&section, 2), 100, &window).unwrap_err();
        assert!(
            matches!(
                err,
                RecordsError::Timestamp {
                    record: 0,
                    timestamp: 105,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.kafka_code(), 32);
        let err = validate_records(
            RecordIter::new(&section, 2),
            i64::MAX,
            &RecordChecks::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, RecordsError::TimestampOverflow { .. }),
            "{err}"
        );
    }

    #[test]
    fn decode_records_borrows_uncompressed_and_rejects_unknown_codec() {
        let section = simple(0, None, Some(b"v"));
        let decoded = decode_records(0, &section, 1, 1 << 20).unwrap();
        assert!(!decoded.is_owned());
        assert_eq!(decoded.iter().count(), 1);
        let err = decode_records(6, &section, 1, 1 << 20).unwrap_err();
        assert_eq!(err.kafka_code(), 76);
    }
}
