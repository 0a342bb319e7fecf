//! Kafka wire primitives: the [`Decoder`] that reads them from a frame and the [`Encoder`]
//! that writes them, plus the size arithmetic the generated `encoded_size` functions use.
//!
//! Guarantees: the decoder never panics and never allocates on the strength of a length or
//! count it has not checked against the bytes that remain; `bytes` and `records` values are
//! zero-copy slices of the input frame. The encoder can work in vectored mode, where large
//! `records` values are not copied but become their own chunk of an [`EncodedFrame`] for
//! scatter/gather writes. Both are plain values used on the connection's core.
//!
//! Wire forms (all integers big-endian):
//!
//! ```text
//! string          i16 len, -1 = null          | compact string  uvarint len+1, 0 = null
//! bytes           i32 len, -1 = null          | compact bytes   uvarint len+1, 0 = null
//! array           i32 count, -1 = null        | compact array   uvarint count+1, 0 = null
//! uvarint         7 bits per byte, low first, high bit = more; at most 5 bytes (u32)
//! varint/varlong  zig-zag over uvarint/uvarlong (at most 5 / 10 bytes)
//! tagged fields   uvarint count, then per field: uvarint tag, uvarint size, size bytes
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::records::{FileRange, Records, RecordsPiece};

/// A 128-bit Kafka UUID (topic ids, directory ids), as its 16 raw big-endian bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero UUID Kafka uses for "no id".
    pub const ZERO: Uuid = Uuid([0; 16]);
}

type DResult<T> = Result<T, DecodeError>;

fn err<T>(kind: DecodeErrorKind) -> DResult<T> {
    Err(DecodeError::new(kind))
}

/// Reads Kafka primitives from a frame held as [`Bytes`]; slices it returns share the frame.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Bytes,
    pos: usize,
}

impl Decoder {
    /// Starts decoding at the beginning of `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes consumed so far.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    fn take<const N: usize>(&mut self) -> DResult<[u8; N]> {
        let rest = &self.buf[self.pos..];
        match rest.first_chunk::<N>() {
            Some(chunk) => {
                self.pos += N;
                Ok(*chunk)
            }
            None => err(DecodeErrorKind::Truncated {
                needed: N,
                remaining: rest.len(),
            }),
        }
    }

    /// Returns the next `len` bytes as a zero-copy slice of the frame.
    #[inline]
    pub fn slice(&mut self, len: usize) -> DResult<Bytes> {
        let remaining = self.remaining();
        if len > remaining {
            return err(DecodeErrorKind::LengthExceedsRemaining { len, remaining });
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// Splits off the next `len` bytes as their own decoder (used for tagged field values,
    /// so a value can never read past the size its header declared).
    pub fn sub(&mut self, len: usize) -> DResult<Decoder> {
        Ok(Decoder::new(self.slice(len)?))
    }

    #[inline]
    pub fn i8(&mut self) -> DResult<i8> {
        Ok(i8::from_be_bytes(self.take::<1>()?))
    }
    #[inline]
    pub fn i16(&mut self) -> DResult<i16> {
        Ok(i16::from_be_bytes(self.take::<2>()?))
    }
    #[inline]
    pub fn u16(&mut self) -> DResult<u16> {
        Ok(u16::from_be_bytes(self.take::<2>()?))
    }
    #[inline]
    pub fn i32(&mut self) -> DResult<i32> {
        Ok(i32::from_be_bytes(self.take::<4>()?))
    }
    #[inline]
    pub fn u32(&mut self) -> DResult<u32> {
        Ok(u32::from_be_bytes(self.take::<4>()?))
    }
    #[inline]
    pub fn i64(&mut self) -> DResult<i64> {
        Ok(i64::from_be_bytes(self.take::<8>()?))
    }
    #[inline]
    pub fn f64(&mut self) -> DResult<f64> {
        Ok(f64::from_be_bytes(self.take::<8>()?))
    }
    /// Any non-zero byte is `true`, as in Kafka's own reader.
    #[inline]
    pub fn bool(&mut self) -> DResult<bool> {
        Ok(self.take::<1>()?[0] != 0)
    }
    #[inline]
    pub fn uuid(&mut self) -> DResult<Uuid> {
        Ok(Uuid(self.take::<16>()?))
    }

    /// Unsigned varint of at most 5 bytes; the fifth byte may only carry the top 4 bits.
    #[inline]
    pub fn uvarint(&mut self) -> DResult<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.take::<1>()?[0];
            if i == 4 && b > 0x0f {
                return err(DecodeErrorKind::MalformedVarint);
            }
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        err(DecodeErrorKind::MalformedVarint)
    }

    /// Unsigned varlong of at most 10 bytes; the tenth byte may only carry the top bit.
    pub fn uvarlong(&mut self) -> DResult<u64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.take::<1>()?[0];
            if i == 9 && b > 0x01 {
                return err(DecodeErrorKind::MalformedVarint);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        err(DecodeErrorKind::MalformedVarint)
    }

    /// Zig-zag signed varint (record fields).
    pub fn varint(&mut self) -> DResult<i32> {
        let v = self.uvarint()?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// Zig-zag signed varlong (record fields).
    pub fn varlong(&mut self) -> DResult<i64> {
        let v = self.uvarlong()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// Reads a length prefix: `Ok(None)` for null, otherwise a length already checked to be
    /// at most `remaining / min_unit` so no caller can allocate beyond the input's size.
    #[inline]
    fn length(&mut self, compact: bool, wide: bool, min_unit: usize) -> DResult<Option<usize>> {
        let len: i64 = if compact {
            let n = self.uvarint()?;
            if n == 0 {
                return Ok(None);
            }
            i64::from(n) - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return err(DecodeErrorKind::NegativeLength { len });
        }
        let len = len as usize;
        let remaining = self.remaining();
        let min_unit = min_unit.max(1);
        if len > remaining / min_unit {
            return if min_unit == 1 {
                err(DecodeErrorKind::LengthExceedsRemaining { len, remaining })
            } else {
                err(DecodeErrorKind::ArrayCountExceedsRemaining {
                    count: len,
                    min_bytes: len.saturating_mul(min_unit),
                    remaining,
                })
            };
        }
        Ok(Some(len))
    }

    /// A nullable string (`i16` or compact length).
    pub fn nullable_string(&mut self, compact: bool) -> DResult<Option<String>> {
        match self.length(compact, false, 1)? {
            None => Ok(None),
            Some(len) => {
                let raw = &self.buf[self.pos..self.pos + len];
                let s = std::str::from_utf8(raw)
                    .map_err(|_| DecodeError::new(DecodeErrorKind::InvalidUtf8))?
                    .to_owned();
                self.pos += len;
                Ok(Some(s))
            }
        }
    }

    /// A non-nullable string; null is an error.
    pub fn string(&mut self, compact: bool) -> DResult<String> {
        self.nullable_string(compact)?
            .ok_or_else(|| DecodeError::new(DecodeErrorKind::NullNotAllowed))
    }

    /// Nullable bytes (`i32` or compact length), as a zero-copy slice.
    pub fn nullable_bytes(&mut self, compact: bool) -> DResult<Option<Bytes>> {
        match self.length(compact, true, 1)? {
            None => Ok(None),
            Some(len) => Ok(Some(self.slice(len)?)),
        }
    }

    /// Non-nullable bytes; null is an error.
    pub fn bytes(&mut self, compact: bool) -> DResult<Bytes> {
        self.nullable_bytes(compact)?
            .ok_or_else(|| DecodeError::new(DecodeErrorKind::NullNotAllowed))
    }

    /// An array count: `Ok(None)` for null; otherwise a count `n` for which
    /// `n * min_element_bytes` bytes remain, so `Vec::with_capacity(n)` is bounded by the input.
    #[inline]
    pub fn array_len(&mut self, compact: bool, min_element_bytes: usize) -> DResult<Option<usize>> {
        self.length(compact, true, min_element_bytes)
    }

    /// The count of a tagged-field section, checked against the input (each field takes at
    /// least two bytes: its tag and its size).
    pub fn tagged_count(&mut self) -> DResult<usize> {
        let n = self.uvarint()? as usize;
        let remaining = self.remaining();
        if n > remaining / 2 {
            return err(DecodeErrorKind::ArrayCountExceedsRemaining {
                count: n,
                min_bytes: n.saturating_mul(2),
                remaining,
            });
        }
        Ok(n)
    }

    /// Fails unless the whole input was consumed.
    pub fn finish(&self) -> DResult<()> {
        match self.remaining() {
            0 => Ok(()),
            remaining => err(DecodeErrorKind::TrailingBytes { remaining }),
        }
    }
}

/// An encoded frame as a list of chunks to be written in order (scatter/gather). The first
/// chunk holds the size prefix and the response skeleton; each large records value that was
/// not copied is a chunk of its own.
///
/// A response's records may also hold ranges of files ([`FileRange`]); they are listed in
/// `files`, each with the index of the chunk it goes before (`chunks.len()` for after the
/// last), and the size prefix counts them. Only responses have them, and only the broker's
/// connection writer sends them; a frame with `files` is not complete without them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedFrame {
    pub chunks: Vec<Bytes>,
    pub files: Vec<(usize, FileRange)>,
}

impl From<Bytes> for EncodedFrame {
    fn from(b: Bytes) -> EncodedFrame {
        EncodedFrame {
            chunks: vec![b],
            files: Vec::new(),
        }
    }
}

impl EncodedFrame {
    /// Total bytes over all chunks and file ranges (the size prefix included).
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>()
            + self
                .files
                .iter()
                .map(|(_, f)| f.len as usize)
                .sum::<usize>()
    }

    /// True when the frame has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies all chunks into one contiguous buffer (tests and small frames). Only for frames
    /// without file ranges: the codec reads no file, so their bytes cannot be included.
    pub fn to_contiguous(&self) -> Bytes {
        debug_assert!(
            self.files.is_empty(),
            "a frame with file ranges has no contiguous form"
        );
        if self.chunks.len() == 1 {
            return self.chunks[0].clone();
        }
        let mut out = BytesMut::with_capacity(self.len());
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out.freeze()
    }
}

/// What the encoder inserts into the skeleton at a recorded offset.
enum Shared {
    Bytes(Bytes),
    File(FileRange),
}

/// Writes Kafka primitives into a growable buffer; in vectored mode `records` values of at
/// least `split_threshold` bytes are referenced, not copied.
///
/// The skeleton is always one buffer; a split only records "at this skeleton offset, insert
/// this shared blob", so splitting never allocates and the size prefix at offset 0 can be
/// patched at the end. `finish` cuts the frozen skeleton at the recorded offsets.
pub struct Encoder {
    buf: BytesMut,
    splits: Vec<(usize, Shared)>,
    shared_len: usize,
    split_threshold: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// A contiguous encoder: everything is copied into one buffer.
    pub fn new() -> Self {
        Self::with_buffer(BytesMut::new(), usize::MAX)
    }

    /// A vectored encoder: `records` values of `split_threshold` bytes or more become their
    /// own chunk instead of being copied.
    pub fn vectored(split_threshold: usize) -> Self {
        Self::with_buffer(BytesMut::new(), split_threshold)
    }

    /// Uses `buf` (its spare capacity) as the skeleton buffer.
    pub fn with_buffer(buf: BytesMut, split_threshold: usize) -> Self {
        Self {
            buf,
            splits: Vec::new(),
            shared_len: 0,
            split_threshold,
        }
    }

    /// Bytes written so far, across all chunks.
    pub fn len(&self) -> usize {
        self.buf.len() + self.shared_len
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves room for at least `additional` more bytes in the skeleton buffer.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// Overwrites the first 4 bytes of the output with `value` (the frame size prefix,
    /// reserved by writing a placeholder first). Returns false if fewer than 4 bytes of
    /// skeleton precede the first shared chunk, which the frame encoders never do.
    pub fn patch_prefix(&mut self, value: i32) -> bool {
        if self.splits.first().is_some_and(|(at, _)| *at < 4) {
            return false;
        }
        match self.buf.get_mut(..4) {
            Some(head) => {
                head.copy_from_slice(&value.to_be_bytes());
                true
            }
            None => false,
        }
    }

    /// Finishes into a frame of one or more chunks.
    pub fn finish(self) -> EncodedFrame {
        let skeleton = self.buf.freeze();
        if self.splits.is_empty() {
            return EncodedFrame::from(skeleton);
        }
        let mut chunks = Vec::with_capacity(2 * self.splits.len() + 1);
        let mut files = Vec::new();
        let mut start = 0;
        for (at, shared) in self.splits {
            if at > start {
                chunks.push(skeleton.slice(start..at));
            }
            match shared {
                Shared::Bytes(blob) => chunks.push(blob),
                Shared::File(range) => files.push((chunks.len(), range)),
            }
            start = at;
        }
        if start < skeleton.len() {
            chunks.push(skeleton.slice(start..));
        }
        EncodedFrame { chunks, files }
    }

    /// Finishes into one contiguous buffer.
    pub fn finish_contiguous(self) -> Bytes {
        self.finish().to_contiguous()
    }

    #[inline]
    pub fn i8(&mut self, v: i8) {
        self.buf.put_i8(v);
    }
    #[inline]
    pub fn i16(&mut self, v: i16) {
        self.buf.put_i16(v);
    }
    #[inline]
    pub fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }
    #[inline]
    pub fn i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }
    #[inline]
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }
    #[inline]
    pub fn i64(&mut self, v: i64) {
        self.buf.put_i64(v);
    }
    #[inline]
    pub fn f64(&mut self, v: f64) {
        self.buf.put_f64(v);
    }
    #[inline]
    pub fn bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }
    #[inline]
    pub fn uuid(&mut self, v: &Uuid) {
        self.buf.put_slice(&v.0);
    }
    #[inline]
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.put_slice(v);
    }

    #[inline]
    pub fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    pub fn uvarlong(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    pub fn varint(&mut self, v: i32) {
        self.uvarint(((v << 1) ^ (v >> 31)) as u32);
    }

    pub fn varlong(&mut self, v: i64) {
        self.uvarlong(((v << 1) ^ (v >> 63)) as u64);
    }

    fn length(&mut self, len: Option<usize>, compact: bool, wide: bool) -> Result<(), EncodeError> {
        let too_long = || EncodeError::TooLong {
            field: "",
            len: len.unwrap_or(0),
        };
        match (len, compact) {
            (None, true) => self.uvarint(0),
            (None, false) if wide => self.i32(-1),
            (None, false) => self.i16(-1),
            (Some(n), true) => {
                let n = u32::try_from(n)
                    .ok()
                    .and_then(|n| n.checked_add(1))
                    .ok_or_else(too_long)?;
                self.uvarint(n);
            }
            (Some(n), false) if wide => self.i32(i32::try_from(n).map_err(|_| too_long())?),
            (Some(n), false) => self.i16(i16::try_from(n).map_err(|_| too_long())?),
        }
        Ok(())
    }

    pub fn nullable_string(&mut self, v: Option<&str>, compact: bool) -> Result<(), EncodeError> {
        self.length(v.map(str::len), compact, false)?;
        if let Some(s) = v {
            self.buf.put_slice(s.as_bytes());
        }
        Ok(())
    }

    pub fn string(&mut self, v: &str, compact: bool) -> Result<(), EncodeError> {
        self.nullable_string(Some(v), compact)
    }

    pub fn nullable_bytes(&mut self, v: Option<&Bytes>, compact: bool) -> Result<(), EncodeError> {
        self.length(v.map(Bytes::len), compact, true)?;
        if let Some(b) = v {
            self.buf.put_slice(b);
        }
        Ok(())
    }

    pub fn bytes(&mut self, v: &Bytes, compact: bool) -> Result<(), EncodeError> {
        self.nullable_bytes(Some(v), compact)
    }

    /// A `records` value: like bytes, but in vectored mode a large value is not copied.
    pub fn nullable_records(
        &mut self,
        v: Option<&Bytes>,
        compact: bool,
    ) -> Result<(), EncodeError> {
        self.length(v.map(Bytes::len), compact, true)?;
        if let Some(b) = v {
            self.records_bytes(b);
        }
        Ok(())
    }

    pub fn records(&mut self, v: &Bytes, compact: bool) -> Result<(), EncodeError> {
        self.nullable_records(Some(v), compact)
    }

    /// A response's `records` value: each piece is written like a `records` value (large
    /// buffers referenced, small ones copied), and file ranges are always referenced.
    pub fn nullable_response_records(
        &mut self,
        v: Option<&Records>,
        compact: bool,
    ) -> Result<(), EncodeError> {
        self.length(v.map(Records::len), compact, true)?;
        for piece in v.map_or(&[][..], Records::pieces) {
            match piece {
                RecordsPiece::Bytes(b) => self.records_bytes(b),
                RecordsPiece::File(f) => {
                    self.splits.push((self.buf.len(), Shared::File(f.clone())));
                    self.shared_len += f.len as usize;
                }
            }
        }
        Ok(())
    }

    pub fn response_records(&mut self, v: &Records, compact: bool) -> Result<(), EncodeError> {
        self.nullable_response_records(Some(v), compact)
    }

    fn records_bytes(&mut self, b: &Bytes) {
        if b.len() >= self.split_threshold && !b.is_empty() {
            self.splits.push((self.buf.len(), Shared::Bytes(b.clone())));
            self.shared_len += b.len();
        } else {
            self.buf.put_slice(b);
        }
    }

    /// An array count (`None` for a null array).
    pub fn array_len(&mut self, n: Option<usize>, compact: bool) -> Result<(), EncodeError> {
        self.length(n, compact, true)
    }
}

/// Size arithmetic mirrored by the generated `encoded_size` functions.
pub mod size {
    /// Bytes taken by `v` as an unsigned varint.
    #[inline]
    pub const fn uvarint(v: u32) -> usize {
        match v {
            0..=0x7f => 1,
            0x80..=0x3fff => 2,
            0x4000..=0x1f_ffff => 3,
            0x20_0000..=0xfff_ffff => 4,
            _ => 5,
        }
    }

    /// Bytes taken by a length or count prefix (`None` = null).
    #[inline]
    pub fn length(len: Option<usize>, compact: bool, wide: bool) -> usize {
        if compact {
            uvarint(len.map_or(0, |n| (n as u32).wrapping_add(1)))
        } else if wide {
            4
        } else {
            2
        }
    }

    /// A (nullable) string with its prefix.
    #[inline]
    pub fn string(len: Option<usize>, compact: bool) -> usize {
        length(len, compact, false) + len.unwrap_or(0)
    }

    /// A (nullable) bytes or records value with its prefix.
    #[inline]
    pub fn bytes(len: Option<usize>, compact: bool) -> usize {
        length(len, compact, true) + len.unwrap_or(0)
    }

    /// An array prefix.
    #[inline]
    pub fn array(len: Option<usize>, compact: bool) -> usize {
        length(len, compact, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(b: &[u8]) -> Decoder {
        Decoder::new(Bytes::copy_from_slice(b))
    }

    #[test]
    fn uvarint_round_trips_at_every_width() {
        for v in [
            0u32,
            1,
            127,
            128,
            16383,
            16384,
            2_097_151,
            2_097_152,
            u32::MAX,
        ] {
            let mut e = Encoder::new();
            e.uvarint(v);
            let b = e.finish_contiguous();
            assert_eq!(b.len(), size::uvarint(v), "size of {v}");
            let mut d = Decoder::new(b);
            assert_eq!(d.uvarint().unwrap(), v);
            assert_eq!(d.remaining(), 0);
        }
    }

    #[test]
    fn uvarint_rejects_overlong_and_truncated() {
        assert_eq!(
            dec(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01])
                .uvarint()
                .unwrap_err()
                .kind,
            DecodeErrorKind::MalformedVarint
        );
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xff, 0x1f])
                .uvarint()
                .unwrap_err()
                .kind,
            DecodeErrorKind::MalformedVarint
        );
        assert!(matches!(
            dec(&[0x80, 0x80]).uvarint().unwrap_err().kind,
            DecodeErrorKind::Truncated { .. }
        ));
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xff, 0x0f]).uvarint().unwrap(),
            u32::MAX
        );
    }

    #[test]
    fn varlong_zigzag_round_trips_and_is_bounded() {
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, 300, -300] {
            let mut e = Encoder::new();
            e.varlong(v);
            let mut d = Decoder::new(e.finish_contiguous());
            assert_eq!(d.varlong().unwrap(), v);
        }
        for v in [0i32, -1, i32::MIN, i32::MAX] {
            let mut e = Encoder::new();
            e.varint(v);
            let mut d = Decoder::new(e.finish_contiguous());
            assert_eq!(d.varint().unwrap(), v);
        }
        assert_eq!(
            dec(&[0xff; 11]).varlong().unwrap_err().kind,
            DecodeErrorKind::MalformedVarint
        );
    }

    #[test]
    fn strings_classic_and_compact_with_null() {
        for compact in [false, true] {
            let mut e = Encoder::new();
            e.nullable_string(None, compact).unwrap();
            e.string("héllo", compact).unwrap();
            e.string("", compact).unwrap();
            let b = e.finish_contiguous();
            assert_eq!(
                b.len(),
                size::string(None, compact)
                    + size::string(Some(6), compact)
                    + size::string(Some(0), compact)
            );
            let mut d = Decoder::new(b);
            assert_eq!(d.nullable_string(compact).unwrap(), None);
            assert_eq!(d.string(compact).unwrap(), "héllo");
            assert_eq!(d.string(compact).unwrap(), "");
            d.finish().unwrap();
        }
    }

    #[test]
    fn negative_and_oversized_lengths_are_errors() {
        assert_eq!(
            dec(&[0xff, 0xfe]).nullable_string(false).unwrap_err().kind,
            DecodeErrorKind::NegativeLength { len: -2 }
        );
        assert_eq!(
            dec(&[0xff, 0xff]).string(false).unwrap_err().kind,
            DecodeErrorKind::NullNotAllowed
        );
        assert_eq!(
            dec(&[0, 5, b'a']).string(false).unwrap_err().kind,
            DecodeErrorKind::LengthExceedsRemaining {
                len: 5,
                remaining: 1
            }
        );
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xf0])
                .nullable_bytes(false)
                .unwrap_err()
                .kind,
            DecodeErrorKind::NegativeLength { len: -16 }
        );
        assert_eq!(dec(&[0]).nullable_string(true).unwrap(), None);
        assert_eq!(
            dec(&[0x43, 0x28]).string(true).unwrap_err().kind,
            DecodeErrorKind::LengthExceedsRemaining {
                len: 66,
                remaining: 1
            }
        );
        assert_eq!(
            dec(&[2, 0xc3, 0x28]).string(true).unwrap_err().kind,
            DecodeErrorKind::InvalidUtf8
        );
    }

    #[test]
    fn array_counts_are_checked_against_minimum_element_size() {
        // 1000 int32 elements cannot fit in 8 bytes.
        let mut d = dec(&[0, 0, 0x03, 0xe8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(
            d.array_len(false, 4).unwrap_err().kind,
            DecodeErrorKind::ArrayCountExceedsRemaining { count: 1000, .. }
        ));
        let mut d = dec(&[0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(d.array_len(false, 4).unwrap(), Some(2));
        assert_eq!(dec(&[0]).array_len(true, 4).unwrap(), None);
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xff]).array_len(false, 1).unwrap(),
            None
        );
    }

    #[test]
    fn bytes_are_zero_copy_slices() {
        let frame = Bytes::from_static(&[0, 0, 0, 3, 9, 8, 7]);
        let mut d = Decoder::new(frame.clone());
        let b = d.bytes(false).unwrap();
        assert_eq!(&b[..], &[9, 8, 7]);
        assert_eq!(b.as_ptr(), frame[4..].as_ptr());
    }

    #[test]
    fn vectored_records_are_not_copied_and_prefix_is_patchable() {
        let blob = Bytes::from(vec![7u8; 100]);
        let mut e = Encoder::vectored(64);
        e.i32(0);
        e.i16(1);
        e.records(&blob, false).unwrap();
        e.i16(2);
        let total = e.len() as i32;
        assert!(e.patch_prefix(total - 4));
        let frame = e.finish();
        assert_eq!(frame.chunks.len(), 3);
        assert_eq!(frame.chunks[1].as_ptr(), blob.as_ptr());
        assert_eq!(frame.len(), 4 + 2 + 4 + 100 + 2);
        let flat = frame.to_contiguous();
        assert_eq!(&flat[..4], &(total - 4).to_be_bytes());
        let mut d = Decoder::new(flat.slice(4..));
        assert_eq!(d.i16().unwrap(), 1);
        assert_eq!(d.bytes(false).unwrap(), blob);
        assert_eq!(d.i16().unwrap(), 2);
    }
}
