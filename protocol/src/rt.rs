//! Runtime support for the generated message code: small generic helpers that keep the
//! generated functions short. Every helper preserves the decoder's guarantees (counts are
//! checked against the remaining input before any allocation). Used on the connection's core.

use bytes::Bytes;

use crate::codec::{Decoder, Encoder};
use crate::error::{DecodeError, DecodeErrorKind};

type DResult<T> = Result<T, DecodeError>;

/// Reads an array whose count is bounded by `remaining / min_element_bytes`.
#[inline]
pub fn array<T>(
    d: &mut Decoder,
    compact: bool,
    min_element_bytes: usize,
    mut element: impl FnMut(&mut Decoder) -> DResult<T>,
) -> DResult<Option<Vec<T>>> {
    match d.array_len(compact, min_element_bytes)? {
        None => Ok(None),
        Some(n) => {
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(element(d)?);
            }
            Ok(Some(items))
        }
    }
}

/// Reads a nullable struct: a presence byte (negative = null, as Kafka reads it), then the
/// struct.
#[inline]
pub fn nullable_struct<T>(
    d: &mut Decoder,
    body: impl FnOnce(&mut Decoder) -> DResult<T>,
) -> DResult<Option<T>> {
    if d.i8()? < 0 {
        Ok(None)
    } else {
        body(d).map(Some)
    }
}

/// Rejects null where the schema never allows it.
#[inline]
pub fn non_null<T>(v: Option<T>) -> DResult<T> {
    v.ok_or_else(|| DecodeError::new(DecodeErrorKind::NullNotAllowed))
}

/// Rejects null in a version where the field is not nullable.
#[inline]
pub fn check_null<T>(v: Option<T>, allowed: bool) -> DResult<Option<T>> {
    if v.is_none() && !allowed {
        return Err(DecodeError::new(DecodeErrorKind::NullNotAllowed));
    }
    Ok(v)
}

/// A known tagged field must use exactly the bytes its header declared.
#[inline]
pub fn tag_consumed(d: &Decoder, tag: u32, declared: usize) -> DResult<()> {
    if d.remaining() != 0 {
        return Err(DecodeError::new(DecodeErrorKind::TaggedFieldSize {
            tag,
            declared,
            used: declared - d.remaining(),
        }));
    }
    Ok(())
}

/// The rest of a tagged field's value, kept as a zero-copy slice.
#[inline]
pub fn rest(d: &mut Decoder) -> Bytes {
    let n = d.remaining();
    d.slice(n).unwrap_or_default()
}

/// Puts decoded unknown tagged fields in ascending tag order (a stable sort, only when a
/// sender wrote them out of order), so that a decoded value re-encodes to bytes that decode
/// to the same value.
#[inline]
pub fn sort_unknown(fields: &mut [(u32, Bytes)]) {
    if !fields.is_sorted_by_key(|f| f.0) {
        fields.sort_by_key(|f| f.0);
    }
}

/// Unknown tagged fields in ascending tag order (Kafka requires ascending order on the wire,
/// and a caller may have pushed them in any order).
#[inline]
pub fn sorted_unknown(fields: &[(u32, Bytes)]) -> Vec<&(u32, Bytes)> {
    let mut v: Vec<&(u32, Bytes)> = fields.iter().collect();
    if v.len() > 1 {
        v.sort_by_key(|f| f.0);
    }
    v
}

/// Writes unknown tagged fields from `next` whose tag is below `limit`; returns the new index.
#[inline]
pub fn write_unknown_below(
    e: &mut Encoder,
    unknown: &[&(u32, Bytes)],
    mut next: usize,
    limit: u32,
) -> usize {
    while let Some((tag, value)) = unknown.get(next).copied() {
        if *tag >= limit {
            break;
        }
        e.uvarint(*tag);
        e.uvarint(value.len() as u32);
        e.raw(value);
        next += 1;
    }
    next
}

/// Writes the remaining unknown tagged fields from `next` on.
#[inline]
pub fn write_unknown_rest(e: &mut Encoder, unknown: &[&(u32, Bytes)], next: usize) {
    for (tag, value) in unknown.iter().skip(next).copied() {
        e.uvarint(*tag);
        e.uvarint(value.len() as u32);
        e.raw(value);
    }
}
