//! The record formats of `__transaction_state`, byte for byte as Kafka writes them, so that
//! Kafka's own tools (and anything that reads the topic with Kafka's formatter) understand it.
//!
//! Every key and value starts with a big-endian `int16` version.
//!
//! ```text
//! TransactionLogKey   v0: transactionalId string
//! TransactionLogValue v0: producerId int64 | producerEpoch int16 | transactionTimeoutMs int32 |
//!                         transactionStatus int8 | transactionPartitions [topic string |
//!                         partitionIds [int32]]? | lastUpdateTimestampMs int64 |
//!                         startTimestampMs int64
//!                     v1: the same fields in flexible encoding (compact strings and arrays,
//!                         unsigned-varint lengths + 1, a tagged-field section after each
//!                         struct); tags 0 PreviousProducerId int64, 1 NextProducerId int64,
//!                         2 ClientTransactionVersion int16, written only when not default
//! ```
//!
//! A null value is a tombstone: the transactional id expired. Writes use v1 (it carries the
//! previous producer id that a KIP-360 retry is checked against across a restart); reads
//! accept v0 and v1 and skip unknown tags, as Kafka does. Pure; runs on any core.

use bytes::{BufMut, Bytes, BytesMut};

/// Key version Kafka writes (the only one).
pub const KEY_VERSION: i16 = 0;
/// Value version written: the flexible one.
pub const VALUE_VERSION: i16 = 1;

const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;

/// A decoded TransactionLogValue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    /// Tagged (v1+); -1 when absent.
    pub previous_producer_id: i64,
    /// Tagged (v1+); -1 when absent.
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: i8,
    /// `(topic, partitions)`, topics in order.
    pub partitions: Vec<(String, Vec<i32>)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// Tagged (v1+); 0 when absent.
    pub client_transaction_version: i16,
}

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is truncated")]
    Truncated,
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("a string is not UTF-8")]
    NotUtf8,
    #[error("a required field is null")]
    UnexpectedNull,
    #[error("a length is malformed")]
    BadLength,
}

/// Encodes a TransactionLogKey.
pub fn key(transactional_id: &str) -> Bytes {
    let id = &transactional_id.as_bytes()[..transactional_id.len().min(i16::MAX as usize)];
    let mut b = BytesMut::with_capacity(4 + id.len());
    b.put_i16(KEY_VERSION);
    b.put_i16(id.len() as i16);
    b.put_slice(id);
    b.freeze()
}

/// Decodes a TransactionLogKey into its transactional id.
pub fn decode_key(key: &[u8]) -> Result<String, RecordError> {
    let mut r = Reader(key);
    match r.i16()? {
        KEY_VERSION => r.string(),
        version => Err(RecordError::UnknownVersion {
            what: "transaction log key",
            version,
        }),
    }
}

/// Encodes a TransactionLogValue at `version` (0 or 1).
pub fn value(v: &TxnValue, version: i16) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(version);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.timeout_ms);
    b.put_i8(v.status);
    let flexible = version >= 1;
    if flexible {
        put_uvarint(&mut b, v.partitions.len() as u64 + 1);
    } else {
        b.put_i32(v.partitions.len() as i32);
    }
    for (topic, parts) in &v.partitions {
        if flexible {
            put_uvarint(&mut b, topic.len() as u64 + 1);
            b.put_slice(topic.as_bytes());
            put_uvarint(&mut b, parts.len() as u64 + 1);
        } else {
            b.put_i16(topic.len() as i16);
            b.put_slice(topic.as_bytes());
            b.put_i32(parts.len() as i32);
        }
        for p in parts {
            b.put_i32(*p);
        }
        if flexible {
            put_uvarint(&mut b, 0);
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    if flexible {
        let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
        if v.previous_producer_id != -1 {
            tags.push((
                TAG_PREVIOUS_PRODUCER_ID,
                v.previous_producer_id.to_be_bytes().to_vec(),
            ));
        }
        if v.next_producer_id != -1 {
            tags.push((
                TAG_NEXT_PRODUCER_ID,
                v.next_producer_id.to_be_bytes().to_vec(),
            ));
        }
        if v.client_transaction_version != 0 {
            tags.push((
                TAG_CLIENT_TRANSACTION_VERSION,
                v.client_transaction_version.to_be_bytes().to_vec(),
            ));
        }
        put_uvarint(&mut b, tags.len() as u64);
        for (tag, data) in tags {
            put_uvarint(&mut b, u64::from(tag));
            put_uvarint(&mut b, data.len() as u64);
            b.put_slice(&data);
        }
    }
    b.freeze()
}

/// Decodes a TransactionLogValue (versions 0 and 1).
pub fn decode_value(value: &[u8]) -> Result<TxnValue, RecordError> {
    let mut r = Reader(value);
    let version = r.i16()?;
    if !(0..=1).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "transaction log value",
            version,
        });
    }
    let flexible = version >= 1;
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let status = r.i8()?;
    let count = if flexible {
        r.compact_len()?
    } else {
        let n = r.i32()?;
        (n >= 0).then_some(n as usize)
    };
    let mut partitions = Vec::new();
    for _ in 0..count.unwrap_or(0) {
        let topic = if flexible {
            r.compact_string()?
        } else {
            r.string()?
        };
        let n = if flexible {
            r.compact_len()?.ok_or(RecordError::UnexpectedNull)?
        } else {
            usize::try_from(r.i32()?).map_err(|_| RecordError::UnexpectedNull)?
        };
        if n > r.0.len() / 4 {
            return Err(RecordError::Truncated);
        }
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            parts.push(r.i32()?);
        }
        if flexible {
            r.skip_tags(|_, _| Ok(()))?;
        }
        partitions.push((topic, parts));
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    let mut out = TxnValue {
        producer_id,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch,
        timeout_ms,
        status,
        partitions,
        last_update_ms,
        start_ms,
        client_transaction_version: 0,
    };
    if flexible {
        r.skip_tags(|tag, data| {
            match tag {
                TAG_PREVIOUS_PRODUCER_ID => out.previous_producer_id = be_i64(data)?,
                TAG_NEXT_PRODUCER_ID => out.next_producer_id = be_i64(data)?,
                TAG_CLIENT_TRANSACTION_VERSION => {
                    let d: [u8; 2] = data.try_into().map_err(|_| RecordError::BadLength)?;
                    out.client_transaction_version = i16::from_be_bytes(d);
                }
                _ => {}
            }
            Ok(())
        })?;
    }
    Ok(out)
}

fn be_i64(data: &[u8]) -> Result<i64, RecordError> {
    let d: [u8; 8] = data.try_into().map_err(|_| RecordError::BadLength)?;
    Ok(i64::from_be_bytes(d))
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

/// A bounds-checked big-endian reader over a stored key or value.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i8(&mut self) -> Result<i8, RecordError> {
        Ok(self.take(1)?[0] as i8)
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        be_i64(self.take(8)?)
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Err(RecordError::UnexpectedNull);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::NotUtf8)
    }

    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let mut v: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::BadLength)
    }

    /// A flexible-version length (unsigned varint, length + 1); `None` for null.
    fn compact_len(&mut self) -> Result<Option<usize>, RecordError> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        let n = (n - 1) as usize;
        if n > self.0.len() {
            return Err(RecordError::Truncated);
        }
        Ok(Some(n))
    }

    fn compact_string(&mut self) -> Result<String, RecordError> {
        let n = self.compact_len()?.ok_or(RecordError::UnexpectedNull)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::NotUtf8)
    }

    /// Reads a tagged-field section, handing each field to `each`.
    fn skip_tags(
        &mut self,
        mut each: impl FnMut(u32, &[u8]) -> Result<(), RecordError>,
    ) -> Result<(), RecordError> {
        let count = self.uvarint()?;
        for _ in 0..count {
            let tag = u32::try_from(self.uvarint()?).map_err(|_| RecordError::BadLength)?;
            let len = usize::try_from(self.uvarint()?).map_err(|_| RecordError::BadLength)?;
            let data = self.take(len)?;
            each(tag, data)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TxnValue {
        TxnValue {
            producer_id: 4001,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 3,
            timeout_ms: 60_000,
            status: 1,
            partitions: vec![("orders".into(), vec![0, 2]), ("z".into(), vec![7])],
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
            client_transaction_version: 0,
        }
    }

    #[test]
    fn keys_are_kafkas_bytes() {
        assert_eq!(&key("tx")[..], &[0, 0, 0, 2, b't', b'x']);
        assert_eq!(decode_key(&key("tx")).unwrap(), "tx");
        assert!(matches!(
            decode_key(&[0, 1, 0, 0]),
            Err(RecordError::UnknownVersion { .. })
        ));
    }

    #[test]
    fn values_round_trip_in_both_versions() {
        let v = sample();
        let v0 = value(&v, 0);
        // Version, producer id, epoch, timeout, status, then an int32 count of topics.
        assert_eq!(&v0[..2], &[0, 0]);
        assert_eq!(&v0[2..10], &4001i64.to_be_bytes());
        assert_eq!(&v0[10..12], &[0, 3]);
        assert_eq!(v0[16], 1);
        assert_eq!(&v0[17..21], &[0, 0, 0, 2]);
        assert_eq!(decode_value(&v0).unwrap(), v);
        let mut tagged = sample();
        tagged.previous_producer_id = 17;
        tagged.client_transaction_version = 2;
        let v1 = value(&tagged, 1);
        assert_eq!(&v1[..2], &[0, 1]);
        // Compact array count: 2 topics + 1.
        assert_eq!(v1[17], 3);
        assert_eq!(decode_value(&v1).unwrap(), tagged);
        // v0 cannot carry the tagged fields.
        assert_eq!(
            decode_value(&value(&tagged, 0))
                .unwrap()
                .previous_producer_id,
            -1
        );
    }

    #[test]
    fn an_empty_transaction_and_unknown_tags_decode() {
        let mut v = sample();
        v.partitions.clear();
        v.status = 0;
        let mut bytes = value(&v, 1).to_vec();
        // Replace the empty tag section with one unknown tag (9, 1 byte).
        let last = bytes.len() - 1;
        assert_eq!(bytes[last], 0);
        bytes.truncate(last);
        bytes.extend_from_slice(&[1, 9, 1, 0xaa]);
        assert_eq!(decode_value(&bytes).unwrap(), v);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders() {
        // A damaged or hostile log must give errors, never a panic or a huge allocation.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let valid = value(&sample(), 1);
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if round % 2 == 0 {
                // Mostly valid: one flipped byte of a real value.
                buf = valid.to_vec();
                let at = (x as usize) % buf.len();
                buf[at] ^= (x >> 32) as u8 | 1;
            }
            let _ = decode_value(&buf);
            let _ = decode_key(&buf);
        }
    }

    #[test]
    fn truncated_values_are_errors() {
        let v = value(&sample(), 1);
        for cut in [1, 5, 20, v.len() - 1] {
            assert!(decode_value(&v[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            decode_value(&[0, 5]),
            Err(RecordError::UnknownVersion { .. })
        ));
    }
}
