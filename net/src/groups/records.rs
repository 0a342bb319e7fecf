//! The record formats of `__consumer_offsets`, byte for byte as Kafka writes them, so that
//! Kafka's own tools (and anything that reads the topic with Kafka's formatter) understand it.
//!
//! Every key and value starts with a big-endian `int16` version; the fields follow in Kafka's
//! classic (non-flexible) encoding: `string` is an `int16` length and UTF-8 bytes (-1 for
//! null), `bytes` an `int32` length and the bytes.
//!
//! ```text
//! OffsetCommitKey   v1: group string | topic string | partition int32
//! GroupMetadataKey  v2: group string
//! OffsetCommitValue v3: offset int64 | leaderEpoch int32 | metadata string | commitTimestamp int64
//!                   v1: offset int64 | metadata string | commitTimestamp int64 | expireTimestamp int64
//! GroupMetadataValue v3: protocolType string | generation int32 | protocol string? |
//!                   leader string? | currentStateTimestamp int64 | members [
//!                   memberId string | groupInstanceId string? | clientId string |
//!                   clientHost string | rebalanceTimeout int32 | sessionTimeout int32 |
//!                   subscription bytes | assignment bytes ]
//! ```
//!
//! A null value is a tombstone: the offset was deleted or the group removed. Decoding accepts
//! every version Kafka has written (offset values v0-v3, group values v0-v3) so a topic
//! written by another broker version still loads. Pure; runs on any core.

use bytes::{BufMut, Bytes, BytesMut};

/// Key version of an offset commit (Kafka writes 1; 0 is the same layout).
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of group metadata.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;

/// A decoded record key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

impl RecordKey {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

/// A decoded OffsetCommitValue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Only version 1 carries it; -1 when absent.
    pub expire_timestamp: i64,
}

/// One member in a GroupMetadataValue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A decoded GroupMetadataValue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
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
    #[error("a required string is null")]
    UnexpectedNull,
}

/// Encodes an OffsetCommitKey.
pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + 4 + group.len() + topic.len() + 4);
    b.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut b, group);
    put_string(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

/// Encodes a GroupMetadataKey.
pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(GROUP_METADATA_KEY_VERSION);
    put_string(&mut b, group);
    b.freeze()
}

/// Encodes an OffsetCommitValue: version 1 when an explicit expiry is given (the only
/// version with that field), else version 3, as Kafka chooses.
pub fn offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::with_capacity(32 + v.metadata.len());
    if v.expire_timestamp >= 0 {
        b.put_i16(1);
        b.put_i64(v.offset);
        put_string(&mut b, &v.metadata);
        b.put_i64(v.commit_timestamp);
        b.put_i64(v.expire_timestamp);
    } else {
        b.put_i16(3);
        b.put_i64(v.offset);
        b.put_i32(v.leader_epoch);
        put_string(&mut b, &v.metadata);
        b.put_i64(v.commit_timestamp);
    }
    b.freeze()
}

/// Encodes a GroupMetadataValue (version 3).
pub fn group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(3);
    put_string(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_string(&mut b, v.protocol.as_deref());
    put_nullable_string(&mut b, v.leader.as_deref());
    b.put_i64(v.current_state_timestamp);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_string(&mut b, &m.member_id);
        put_nullable_string(&mut b, m.group_instance_id.as_deref());
        put_string(&mut b, &m.client_id);
        put_string(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout);
        b.put_i32(m.session_timeout);
        b.put_i32(m.subscription.len() as i32);
        b.put_slice(&m.subscription);
        b.put_i32(m.assignment.len() as i32);
        b.put_slice(&m.assignment);
    }
    b.freeze()
}

/// Decodes a record key.
pub fn decode_key(key: &[u8]) -> Result<RecordKey, RecordError> {
    let mut r = Reader(key);
    match r.i16()? {
        0 | 1 => Ok(RecordKey::Offset {
            group: r.string()?,
            topic: r.string()?,
            partition: r.i32()?,
        }),
        2 => Ok(RecordKey::Group { group: r.string()? }),
        version => Err(RecordError::UnknownVersion {
            what: "key",
            version,
        }),
    }
}

/// Decodes an OffsetCommitValue (versions 0-4; v4 is v3 plus tagged fields, ignored).
pub fn decode_offset_value(value: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut r = Reader(value);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "offset commit value",
            version,
        });
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = if version >= 4 {
        r.compact_string()?
    } else {
        r.string()?
    };
    let commit_timestamp = r.i64()?;
    let expire_timestamp = if version == 1 { r.i64()? } else { -1 };
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        expire_timestamp,
    })
}

/// Decodes a GroupMetadataValue (versions 0-3).
pub fn decode_group_value(value: &[u8]) -> Result<GroupValue, RecordError> {
    let mut r = Reader(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "group metadata value",
            version,
        });
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?.max(0) as usize;
    let mut members = Vec::with_capacity(count.min(value.len() / 16));
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        // v0 had no separate rebalance timeout: the session timeout served as both.
        let rebalance_timeout = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout: if rebalance_timeout < 0 {
                session_timeout
            } else {
                rebalance_timeout
            },
            session_timeout,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

fn put_string(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(s.len() as i16);
    b.put_slice(s);
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
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

    fn i16(&mut self) -> Result<i16, RecordError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| RecordError::NotUtf8)
    }

    fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?.ok_or(RecordError::UnexpectedNull)
    }

    /// A flexible-version string: unsigned varint length + 1.
    fn compact_string(&mut self) -> Result<String, RecordError> {
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.take(1)?[0];
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(RecordError::Truncated);
            }
        }
        if len == 0 {
            return Err(RecordError::UnexpectedNull);
        }
        let b = self.take(len as usize - 1)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::NotUtf8)
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip() {
        let key = offset_key("g", "orders", 3);
        assert_eq!(
            &key[..],
            &[0, 1, 0, 1, b'g', 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 3]
        );
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 3
            }
        );
        for expire in [-1, 99] {
            let v = OffsetValue {
                offset: 42,
                leader_epoch: if expire < 0 { 7 } else { -1 },
                metadata: "meta".into(),
                commit_timestamp: 1234,
                expire_timestamp: expire,
            };
            assert_eq!(decode_offset_value(&offset_value(&v)).unwrap(), v);
        }
    }

    #[test]
    fn group_records_round_trip() {
        assert_eq!(
            decode_key(&group_key("grp")).unwrap(),
            RecordKey::Group {
                group: "grp".into()
            }
        );
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp: 77,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout: 300000,
                session_timeout: 10000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group_value(&group_value(&v)).unwrap(), v);
    }

    #[test]
    fn truncated_and_unknown_records_are_errors() {
        assert_eq!(decode_key(&[0]), Err(RecordError::Truncated));
        assert!(matches!(
            decode_key(&[0, 9, 0, 0]),
            Err(RecordError::UnknownVersion { .. })
        ));
        let v = offset_value(&OffsetValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
            expire_timestamp: -1,
        });
        assert_eq!(
            decode_offset_value(&v[..v.len() - 1]),
            Err(RecordError::Truncated)
        );
    }
}
