//! Compression codecs for magic-v2 record batches, exactly as real Kafka clients produce them.
//!
//! This module owns the translation between a batch's compressed records section and its
//! uncompressed bytes, for the five codec ids of the v2 `attributes` field: 0 none, 1 gzip,
//! 2 snappy, 3 lz4, 4 zstd. Decoding accepts every framing that clients in the wild write:
//! multi-member gzip streams; snappy both as one raw block and in the xerial framing that the
//! Java client and kafka-python write; the LZ4 frame format (independent or linked blocks, with
//! or without block checksums, content size and content checksum, concatenated frames); and
//! zstd as a streaming decode that needs no content size and accepts concatenated frames.
//!
//! Guarantee: every decompression is capped. Output beyond `max_out` bytes is an error, and no
//! buffer is ever sized from a length that the input merely claims: buffers grow with the data
//! actually produced (snappy's declared length is first checked against what the input could
//! possibly expand to). Nothing here panics on any input.
//!
//! The functions are pure (bytes in, bytes out) and run on whichever core calls them: the
//! connection's shard for produce validation, the partition's home shard for recompression.
//! The only state is a zstd compression and decompression context cached per thread (so per
//! shard), which never crosses cores.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use thiserror::Error;

/// Largest decompressed records section accepted by callers that have no better limit.
/// Kafka's default `message.max.bytes` is about 1 MiB; a compressed batch of that size that
/// expands beyond 64 MiB is far outside anything an honest producer sends.
pub const DECOMPRESSED_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

/// Uncompressed bytes per xerial snappy chunk when we compress. 32 KiB is what the Java
/// client's snappy stream and kafka-python use, so our batches look like theirs.
pub const SNAPPY_XERIAL_CHUNK_BYTES: usize = 32 * 1024;

/// The 8-byte magic that starts a xerial-framed snappy stream.
pub const SNAPPY_XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

/// Length of the xerial header: magic, version (i32 BE), minimum compatible version (i32 BE).
const SNAPPY_XERIAL_HEADER_BYTES: usize = 16;

/// The version and compatible-version numbers written in xerial headers; readers of every
/// client accept 1/1.
const SNAPPY_XERIAL_VERSION: i32 = 1;

/// A snappy element can expand at most about 21x (a 3-byte copy tag emitting 64 bytes), so a
/// raw block whose declared length exceeds this multiple of its own size is corrupt. Checking
/// it first means a 5-byte input can never make us allocate its declared gigabytes.
const SNAPPY_EXPANSION_MAX: usize = 22;

/// Smallest and largest zstd window (log2 bytes) we allow a frame to demand. The decoder
/// allocates the window a frame header asks for before producing any output, so it is bounded
/// by the output cap; but never below 2^23, because streaming encoders (the Java client) declare
/// windows up to 2^23 at every non-"ultra" level regardless of how little data follows.
const ZSTD_WINDOW_LOG_MIN: u32 = 23;
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// gzip level used when the caller gives none (zlib's default, as the Java client uses).
pub const GZIP_LEVEL_DEFAULT: i32 = 6;

/// zstd level used when the caller gives none (the library default, as clients use).
pub const ZSTD_LEVEL_DEFAULT: i32 = 3;

/// Mask of the codec id in the v2 batch `attributes` (bits 0-2).
pub const ATTRIBUTES_CODEC_MASK: i16 = 0x07;

/// A compression codec as numbered in the v2 batch attributes (bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    /// Every codec, in id order.
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    /// The codec for a v2 attributes codec id; ids 5-7 are unassigned.
    pub fn from_id(id: u8) -> Result<Codec, CompressionError> {
        match id {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            _ => Err(CompressionError::UnknownCodec { id }),
        }
    }

    /// The codec named by bits 0-2 of a v2 batch's attributes.
    pub fn from_attributes(attributes: i16) -> Result<Codec, CompressionError> {
        // The mask keeps the value in 0..=7, so the narrowing cannot lose bits.
        Codec::from_id((attributes & ATTRIBUTES_CODEC_MASK) as u8)
    }

    /// The codec id written into bits 0-2 of the attributes.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The name Kafka uses for this codec in `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// Parses a Kafka `compression.type` codec name (not `producer`, which means "keep").
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why compressing or decompressing failed.
#[derive(Debug, Error)]
pub enum CompressionError {
    /// Attributes named a codec id that Kafka never assigned.
    #[error("unknown compression codec id {id}")]
    UnknownCodec { id: u8 },
    /// Decompressed output would exceed the cap.
    #[error("{codec} records section decompresses to more than {max_out} bytes")]
    OutputTooLarge { codec: Codec, max_out: usize },
    /// The compressed bytes are not a valid stream of the codec.
    #[error("corrupt {codec} data: {reason}")]
    Corrupt { codec: Codec, reason: String },
    /// A compressed records section must hold at least the codec's framing.
    #[error("{codec} records section is empty")]
    Empty { codec: Codec },
    /// The caller asked for a level the codec does not have.
    #[error("compression level {level} is out of range for {codec}")]
    InvalidLevel { codec: Codec, level: i32 },
    /// The encoder failed (only on internal resource errors; writing into memory cannot fail).
    #[error("{codec} compression failed: {source}")]
    Compress {
        codec: Codec,
        #[source]
        source: io::Error,
    },
}

impl CompressionError {
    /// The Kafka error code a producer gets for this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            // UNSUPPORTED_COMPRESSION_TYPE
            CompressionError::UnknownCodec { .. } => 76,
            // MESSAGE_TOO_LARGE: the records are larger than we accept, however they got here.
            CompressionError::OutputTooLarge { .. } => 10,
            // CORRUPT_MESSAGE: the bytes passed the CRC yet are not a valid stream.
            CompressionError::Corrupt { .. } | CompressionError::Empty { .. } => 2,
            // INVALID_CONFIG: levels come from topic configuration, never from the wire.
            CompressionError::InvalidLevel { .. } => 40,
            // UNKNOWN_SERVER_ERROR: a failure of ours, not of the client's data.
            CompressionError::Compress { .. } => -1,
        }
    }
}

/// Decompresses a records section, failing once the output would exceed `max_out` bytes.
///
/// `Codec::None` copies the input (still subject to the cap); callers that only need to read
/// uncompressed records should borrow them instead (see `records::decode_records`).
pub fn decompress(codec: Codec, input: &[u8], max_out: usize) -> Result<Vec<u8>, CompressionError> {
    if codec != Codec::None && input.is_empty() {
        return Err(CompressionError::Empty { codec });
    }
    match codec {
        Codec::None => {
            if input.len() > max_out {
                return Err(CompressionError::OutputTooLarge { codec, max_out });
            }
            Ok(input.to_vec())
        }
        Codec::Gzip => read_capped(
            codec,
            flate2::read::MultiGzDecoder::new(input),
            input,
            max_out,
        ),
        Codec::Snappy => decompress_snappy(input, max_out),
        Codec::Lz4 => decompress_lz4(input, max_out),
        Codec::Zstd => ZSTD_DCTX.with(|cell| match cell.try_borrow_mut() {
            Ok(mut dctx) => decompress_zstd(&mut dctx, input, max_out),
            // Only reachable if a decompression re-entered this one; use a fresh context.
            Err(_) => decompress_zstd(&mut zstd::zstd_safe::DCtx::create(), input, max_out),
        }),
    }
}

/// Compresses `input` with `codec` into a new buffer. `level` of `None` means the codec's
/// default; lz4 and snappy have no levels we use and ignore it (Kafka's `compression.lz4.level`
/// only trades speed inside the same format).
pub fn compress(
    codec: Codec,
    input: &[u8],
    level: Option<i32>,
) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::with_capacity(compress_bound(codec, input.len()));
    compress_into(codec, input, level, &mut out)?;
    Ok(out)
}

/// Compresses `input` and appends the result to `out`, so a batch can be built in one buffer.
pub fn compress_into(
    codec: Codec,
    input: &[u8],
    level: Option<i32>,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    out.reserve(compress_bound(codec, input.len()));
    match codec {
        Codec::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Codec::Gzip => {
            let level = level.unwrap_or(GZIP_LEVEL_DEFAULT);
            let level = u32::try_from(level)
                .ok()
                .filter(|l| *l <= 9)
                .ok_or(CompressionError::InvalidLevel { codec, level })?;
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            encoder
                .write_all(input)
                .and_then(|()| encoder.try_finish())
                .map_err(|source| CompressionError::Compress { codec, source })
        }
        Codec::Snappy => compress_snappy_xerial(input, out),
        Codec::Lz4 => {
            // Independent 64 KiB blocks without checksums, as the Java client writes them;
            // independence lets every block decode on its own.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .content_size(Some(input.len() as u64));
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder
                .write_all(input)
                .map_err(|source| CompressionError::Compress { codec, source })?;
            encoder
                .finish()
                .map(|_| ())
                .map_err(|e| CompressionError::Compress {
                    codec,
                    source: io::Error::other(e),
                })
        }
        Codec::Zstd => {
            let level = level.unwrap_or(ZSTD_LEVEL_DEFAULT);
            if !zstd::compression_level_range().contains(&level) {
                return Err(CompressionError::InvalidLevel { codec, level });
            }
            ZSTD_CCTX.with(|cell| match cell.try_borrow_mut() {
                Ok(mut cctx) => compress_zstd(&mut cctx, input, level, out),
                // Only reachable if a compression re-entered this one; use a fresh context.
                Err(_) => compress_zstd(&mut zstd::zstd_safe::CCtx::create(), input, level, out),
            })
        }
    }
}

/// An upper bound of the compressed size, used to pre-size output buffers once.
pub fn compress_bound(codec: Codec, input_len: usize) -> usize {
    match codec {
        Codec::None => input_len,
        // Stored deflate blocks cost 5 bytes per 64 KiB, plus the gzip header and trailer.
        Codec::Gzip => input_len + input_len / 16_000 * 5 + 64,
        Codec::Snappy => {
            let chunks = input_len.div_ceil(SNAPPY_XERIAL_CHUNK_BYTES).max(1);
            SNAPPY_XERIAL_HEADER_BYTES
                + chunks * (4 + snap::raw::max_compress_len(SNAPPY_XERIAL_CHUNK_BYTES))
        }
        // Incompressible LZ4 blocks are stored raw with a 4-byte header each.
        Codec::Lz4 => input_len + input_len / 65_536 * 4 + 64,
        Codec::Zstd => zstd::zstd_safe::compress_bound(input_len),
    }
}

/// Reads a decoder to its end into a buffer that grows with the data actually produced,
/// stopping with `OutputTooLarge` as soon as one byte more than `max_out` appears.
fn read_capped<R: Read>(
    codec: Codec,
    decoder: R,
    input: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, CompressionError> {
    // Start from a small multiple of the input (typical ratios are 2-10x), never from a size
    // the stream claims.
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(max_out));
    let limit = (max_out as u64).saturating_add(1);
    let read = decoder
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, &e))?;
    if read > max_out {
        return Err(CompressionError::OutputTooLarge { codec, max_out });
    }
    Ok(out)
}

thread_local! {
    /// One zstd decompression context per thread (per shard: a shard is one thread). Creating a
    /// context costs tens of microseconds, as much as decoding a 16 KiB batch, so it is reused;
    /// each use starts a fresh session.
    static ZSTD_DCTX: RefCell<zstd::zstd_safe::DCtx<'static>> =
        RefCell::new(zstd::zstd_safe::DCtx::create());

    /// Likewise one zstd compression context per thread, for recompression and the builder.
    static ZSTD_CCTX: RefCell<zstd::zstd_safe::CCtx<'static>> =
        RefCell::new(zstd::zstd_safe::CCtx::create());
}

/// Compresses `input` as one zstd frame appended to `out`, declaring the content size (which
/// also lets the encoder shrink its window to the data).
fn compress_zstd(
    cctx: &mut zstd::zstd_safe::CCtx<'static>,
    input: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
    use zstd::zstd_safe::{get_error_name, CParameter, InBuffer, OutBuffer};
    let codec = Codec::Zstd;
    let zstd_error = |code: usize| CompressionError::Compress {
        codec,
        source: io::Error::other(get_error_name(code)),
    };
    cctx.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters)
        .map_err(zstd_error)?;
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zstd_error)?;
    cctx.set_pledged_src_size(Some(input.len() as u64))
        .map_err(zstd_error)?;
    out.reserve(zstd::zstd_safe::compress_bound(input.len()));
    let mut source = InBuffer::around(input);
    loop {
        let start = out.len();
        let remaining = {
            let mut sink = OutBuffer::around_pos(out, start);
            cctx.compress_stream2(&mut sink, &mut source, ZSTD_EndDirective::ZSTD_e_end)
                .map_err(zstd_error)?
        };
        if remaining == 0 {
            return Ok(());
        }
        // The bound makes this unreachable in practice; keep going with more room if not.
        out.reserve(remaining.max(4096));
    }
}

/// Streams zstd frames (any number, with or without content sizes) into a buffer that grows
/// with the output and never past `max_out + 1` bytes.
fn decompress_zstd(
    dctx: &mut zstd::zstd_safe::DCtx<'static>,
    input: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, CompressionError> {
    use zstd::zstd_safe::{get_error_name, DParameter, InBuffer, OutBuffer, ResetDirective};
    let codec = Codec::Zstd;
    let zstd_error = |code: usize| CompressionError::Corrupt {
        codec,
        reason: get_error_name(code).to_string(),
    };
    dctx.reset(ResetDirective::SessionAndParameters)
        .map_err(zstd_error)?;
    dctx.set_parameter(DParameter::WindowLogMax(zstd_window_log_max(max_out)))
        .map_err(zstd_error)?;
    let limit = max_out.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(input.len().saturating_mul(4).clamp(1, limit));
    let mut source = InBuffer::around(input);
    loop {
        if out.len() == out.capacity() {
            if out.len() > max_out {
                return Err(CompressionError::OutputTooLarge { codec, max_out });
            }
            // Double, but never past one byte over the cap (enough to detect the overflow).
            let grow = out.capacity().max(4096).min(limit - out.len());
            out.reserve_exact(grow);
        }
        let (consumed_before, produced_before) = (source.pos(), out.len());
        let hint = {
            let mut sink = OutBuffer::around_pos(&mut out, produced_before);
            dctx.decompress_stream(&mut sink, &mut source)
                .map_err(zstd_error)?
        };
        if out.len() > max_out {
            return Err(CompressionError::OutputTooLarge { codec, max_out });
        }
        // zstd answers 0 once a frame is decoded and fully flushed: with all input read, the
        // stream is complete, even when the output exactly filled the buffer (checking for room
        // first sent a finished stream into one more call, which then waited for a next frame
        // that never comes: an 816-byte records section compressed 4:1 was refused).
        if source.pos() == input.len() && hint == 0 {
            return Ok(out);
        }
        if source.pos() == input.len() && out.len() < out.capacity() {
            // All input read and room left over, but the last frame is unfinished. zstd can
            // still hold decoded bytes then (a block decoded into its own buffer because the
            // room at the call's start was smaller than the block, flushed only up to that
            // room), so only a call that produced nothing proves the frame is cut short.
            if out.len() == produced_before {
                return Err(CompressionError::Corrupt {
                    codec,
                    reason: "the last frame is incomplete".into(),
                });
            }
            continue;
        }
        if source.pos() == consumed_before
            && out.len() == produced_before
            && out.len() < out.capacity()
        {
            return Err(CompressionError::Corrupt {
                codec,
                reason: "decoder made no progress".into(),
            });
        }
    }
}

/// LZ4 frames, one after another until the input is used up.
///
/// ```text
/// frame: magic 04 22 4D 18 | FLG | BD | [content size u64 LE] | [dict id u32] | HC
///        block*: [size u32 LE, high bit = stored] [data] [block checksum u32]
///        end mark 00 00 00 00 | [content checksum u32]
/// ```
///
/// We walk the framing ourselves, so that a frame cut short, a block larger than its frame
/// allows, or bytes after the last frame are errors (the library's streaming decoder treats a
/// frame cut at a block boundary as complete and stops at the first frame's end). Frames with
/// independent blocks, which is what Kafka clients write, are decoded block by block straight
/// into the output with no intermediate buffers, verifying the header checksum, the content
/// size and any block and content checksums (XXH32) on the way; frames with linked blocks go
/// through the library's frame decoder. Skippable frames are allowed; the legacy format, which
/// no Kafka client writes, is not.
fn decompress_lz4(input: &[u8], max_out: usize) -> Result<Vec<u8>, CompressionError> {
    const FRAME_MAGIC: u32 = 0x184D_2204;
    const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
    let codec = Codec::Lz4;
    let bad = |reason: String| CompressionError::Corrupt { codec, reason };
    let word = |at: usize| -> Result<u32, CompressionError> {
        input
            .get(at..at.saturating_add(4))
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| bad(format!("frame truncated at byte {at} of {}", input.len())))
    };
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(max_out));
    let mut pos = 0usize;
    while pos < input.len() {
        let frame_start = pos;
        let magic = word(pos)?;
        if magic & 0xFFFF_FFF0 == SKIPPABLE_MAGIC {
            pos = pos
                .saturating_add(8)
                .saturating_add(word(pos + 4)? as usize);
            if pos > input.len() {
                return Err(bad("skippable frame runs past the input".into()));
            }
            continue;
        }
        if magic != FRAME_MAGIC {
            return Err(bad(format!("no LZ4 frame magic at byte {pos}")));
        }
        let (Some(&flg), Some(&bd)) = (input.get(pos + 4), input.get(pos + 5)) else {
            return Err(bad("frame descriptor truncated".into()));
        };
        if flg >> 6 != 0b01 {
            return Err(bad(format!("unsupported frame version {}", flg >> 6)));
        }
        let independent = flg & 0x20 != 0;
        let block_checksum = flg & 0x10 != 0;
        let has_content_size = flg & 0x08 != 0;
        let content_checksum = flg & 0x04 != 0;
        let has_dict_id = flg & 0x01 != 0;
        let block_max: usize = match (bd >> 4) & 0x07 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            other => return Err(bad(format!("invalid block size id {other}"))),
        };
        let content_size = if has_content_size {
            let raw = input
                .get(pos + 6..pos + 14)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("content size truncated".into()))?;
            Some(u64::from_le_bytes(raw))
        } else {
            None
        };
        let descriptor_end =
            pos + 6 + if has_content_size { 8 } else { 0 } + if has_dict_id { 4 } else { 0 };
        let (Some(descriptor), Some(&header_checksum)) = (
            input.get(pos + 4..descriptor_end),
            input.get(descriptor_end),
        ) else {
            return Err(bad("frame descriptor truncated".into()));
        };
        // HC is the second byte of XXH32 over the descriptor (FLG up to the last optional field).
        if (xxh32(descriptor) >> 8) as u8 != header_checksum {
            return Err(bad("frame header checksum mismatch".into()));
        }
        pos = descriptor_end + 1;
        let direct = independent && !has_dict_id;
        let frame_out_start = out.len();
        loop {
            let block = word(pos)?;
            pos += 4;
            if block == 0 {
                break;
            }
            let size = (block & 0x7FFF_FFFF) as usize;
            if size > block_max {
                return Err(bad(format!(
                    "block of {size} bytes exceeds the frame's {block_max}"
                )));
            }
            let data = input
                .get(pos..pos + size)
                .ok_or_else(|| bad(format!("block runs past the input ({} bytes)", input.len())))?;
            pos += size;
            if block_checksum {
                let expected = word(pos)?;
                pos += 4;
                if direct && xxh32(data) != expected {
                    return Err(bad("block checksum mismatch".into()));
                }
            }
            if direct {
                lz4_block_append(data, block & 0x8000_0000 != 0, block_max, max_out, &mut out)?;
            }
        }
        if content_checksum {
            let expected = word(pos)?;
            pos += 4;
            if direct && xxh32(&out[frame_out_start..]) != expected {
                return Err(bad("content checksum mismatch".into()));
            }
        }
        if direct {
            let produced = (out.len() - frame_out_start) as u64;
            if content_size.is_some_and(|declared| declared != produced) {
                return Err(bad(format!(
                    "frame declares {} bytes of content but holds {produced}",
                    content_size.unwrap_or_default()
                )));
            }
        } else {
            let room = (max_out - out.len()) as u64 + 1;
            lz4_flex::frame::FrameDecoder::new(&input[frame_start..pos])
                .take(room)
                .read_to_end(&mut out)
                .map_err(|e| corrupt(codec, &e))?;
            if out.len() > max_out {
                return Err(CompressionError::OutputTooLarge { codec, max_out });
            }
        }
    }
    Ok(out)
}

/// XXH32 with seed 0, the checksum of the LZ4 frame format.
fn xxh32(data: &[u8]) -> u32 {
    twox_hash::XxHash32::oneshot(0, data)
}

/// Appends one independent LZ4 block (or a stored one) to `out`, within `max_out`.
fn lz4_block_append(
    data: &[u8],
    stored: bool,
    block_max: usize,
    max_out: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let codec = Codec::Lz4;
    let start = out.len();
    let room = max_out - start;
    if stored {
        if data.len() > room {
            return Err(CompressionError::OutputTooLarge { codec, max_out });
        }
        out.extend_from_slice(data);
        return Ok(());
    }
    let window = block_max.min(room);
    out.resize(start + window, 0);
    match lz4_flex::block::decompress_into(data, &mut out[start..]) {
        Ok(written) => {
            out.truncate(start + written);
            Ok(())
        }
        Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) if window < block_max => {
            Err(CompressionError::OutputTooLarge { codec, max_out })
        }
        Err(e) => Err(corrupt(codec, &e)),
    }
}

/// Snappy: xerial framing when the magic is present, otherwise one raw block.
fn decompress_snappy(input: &[u8], max_out: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Codec::Snappy;
    if !input.starts_with(&SNAPPY_XERIAL_MAGIC) {
        let mut out = Vec::new();
        snappy_raw_append(input, max_out, &mut out)?;
        return Ok(out);
    }
    //   0       8         12              16
    //   | magic | version | compat version | chunk* : [len i32 BE][raw snappy block of len]
    if input.len() < SNAPPY_XERIAL_HEADER_BYTES {
        return Err(CompressionError::Corrupt {
            codec,
            reason: "xerial header is truncated".into(),
        });
    }
    let mut rest = &input[SNAPPY_XERIAL_HEADER_BYTES..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some((len_bytes, tail)) = rest.split_first_chunk::<4>() else {
            return Err(CompressionError::Corrupt {
                codec,
                reason: format!("xerial chunk length truncated ({} bytes left)", rest.len()),
            });
        };
        let len = i32::from_be_bytes(*len_bytes);
        let chunk = usize::try_from(len)
            .ok()
            .and_then(|len| tail.get(..len))
            .ok_or_else(|| CompressionError::Corrupt {
                codec,
                reason: format!(
                    "xerial chunk length {len} exceeds the {} bytes left",
                    tail.len()
                ),
            })?;
        snappy_raw_append(chunk, max_out, &mut out)?;
        rest = &tail[chunk.len()..];
    }
    Ok(out)
}

/// Decodes one raw snappy block and appends it to `out`, keeping `out` within `max_out`.
fn snappy_raw_append(
    block: &[u8],
    max_out: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let codec = Codec::Snappy;
    let declared = snap::raw::decompress_len(block).map_err(|e| corrupt(codec, &e))?;
    if declared > block.len().saturating_mul(SNAPPY_EXPANSION_MAX) {
        return Err(CompressionError::Corrupt {
            codec,
            reason: format!(
                "block of {} bytes declares {declared} bytes, more than snappy can expand to",
                block.len()
            ),
        });
    }
    let start = out.len();
    if declared > max_out.saturating_sub(start) {
        return Err(CompressionError::OutputTooLarge { codec, max_out });
    }
    out.resize(start + declared, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(codec, &e))?;
    // snap checks that the block produces exactly its declared length; keep the buffer honest
    // regardless.
    out.truncate(start + written);
    Ok(())
}

/// Writes `input` in xerial framing: every client decodes it (raw blocks are not understood by
/// older Java clients, which always expect the framing).
fn compress_snappy_xerial(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
    let codec = Codec::Snappy;
    out.extend_from_slice(&SNAPPY_XERIAL_MAGIC);
    out.extend_from_slice(&SNAPPY_XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&SNAPPY_XERIAL_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for chunk in input.chunks(SNAPPY_XERIAL_CHUNK_BYTES) {
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
        let written =
            encoder
                .compress(chunk, &mut out[start..])
                .map_err(|e| CompressionError::Compress {
                    codec,
                    source: io::Error::other(e),
                })?;
        out.truncate(start + written);
        // A chunk of 32 KiB compresses to well under 2 GiB, so the length always fits.
        let len = i32::try_from(written).map_err(|e| CompressionError::Compress {
            codec,
            source: io::Error::other(e),
        })?;
        out[len_at..start].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// The zstd window limit for an output cap: large enough for honest streaming encoders, never
/// larger than the cap itself needs (above the 2^23 floor).
fn zstd_window_log_max(max_out: usize) -> u32 {
    let needed = usize::BITS - max_out.saturating_sub(1).leading_zeros();
    needed.clamp(ZSTD_WINDOW_LOG_MIN, ZSTD_WINDOW_LOG_MAX)
}

fn corrupt(codec: Codec, error: &dyn std::fmt::Display) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for codec in Codec::ALL {
            let packed = compress(codec, &data, None).unwrap();
            assert!(packed.len() <= compress_bound(codec, data.len()), "{codec}");
            let unpacked = decompress(codec, &packed, data.len()).unwrap();
            assert_eq!(unpacked, data, "{codec}");
        }
        // Our zstd frames declare their content size.
        let packed = compress(Codec::Zstd, &data, Some(1)).unwrap();
        let declared = zstd::zstd_safe::get_frame_content_size(&packed).unwrap();
        assert_eq!(declared, Some(data.len() as u64));
        for (codec, level) in [(Codec::Gzip, 10), (Codec::Gzip, -1), (Codec::Zstd, 23)] {
            let err = compress(codec, &data, Some(level)).unwrap_err();
            assert!(
                matches!(err, CompressionError::InvalidLevel { .. }),
                "{codec} {level}"
            );
        }
    }

    #[test]
    fn cap_is_exact() {
        let data = sample();
        for codec in Codec::ALL {
            let packed = compress(codec, &data, None).unwrap();
            let err = decompress(codec, &packed, data.len() - 1).unwrap_err();
            assert!(
                matches!(err, CompressionError::OutputTooLarge { max_out, .. } if max_out == data.len() - 1),
                "{codec}: {err}"
            );
            assert_eq!(err.kafka_code(), 10);
        }
    }

    #[test]
    fn codec_ids_and_names() {
        for codec in Codec::ALL {
            assert_eq!(Codec::from_id(codec.id()).unwrap(), codec);
            assert_eq!(Codec::from_name(codec.name()), Some(codec));
            assert_eq!(
                Codec::from_attributes(0x70 | i16::from(codec.id())).unwrap(),
                codec
            );
        }
        for id in 5..=7 {
            let err = Codec::from_attributes(id).unwrap_err();
            assert!(
                matches!(err, CompressionError::UnknownCodec { id: got } if i16::from(got) == id)
            );
            assert_eq!(err.kafka_code(), 76);
        }
    }

    #[test]
    fn truncation_is_an_error() {
        let data = sample();
        // Snappy's xerial framing has no end mark, so a cut at a chunk boundary is a shorter
        // valid stream; the records iterator catches that one (count mismatch).
        for codec in [Codec::Gzip, Codec::Lz4, Codec::Zstd] {
            let packed = compress(codec, &data, None).unwrap();
            for cut in (0..packed.len()).step_by(97).chain([packed.len() - 1]) {
                assert!(
                    decompress(codec, &packed[..cut], data.len()).is_err(),
                    "{codec} accepted a cut at {cut} of {}",
                    packed.len()
                );
            }
        }
    }

    #[test]
    fn concatenated_frames_decode_in_order() {
        let data = sample();
        let (a, b) = data.split_at(123_457);
        for codec in [Codec::Gzip, Codec::Lz4, Codec::Zstd] {
            let mut packed = compress(codec, a, None).unwrap();
            packed.extend(compress(codec, b, None).unwrap());
            assert_eq!(
                decompress(codec, &packed, data.len()).unwrap(),
                data,
                "{codec}"
            );
        }
        // Raw snappy, as librdkafka writes it.
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Codec::Snappy, &raw, data.len()).unwrap(), data);
    }

    fn lz4_frame(data: &[u8], mode: lz4_flex::frame::BlockMode, checksums: bool) -> Vec<u8> {
        let info = lz4_flex::frame::FrameInfo::new()
            .block_mode(mode)
            .block_checksums(checksums)
            .content_checksum(checksums)
            .content_size(Some(data.len() as u64));
        let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn lz4_checksums_and_linked_blocks() {
        use lz4_flex::frame::BlockMode::{Independent, Linked};
        let data = sample();
        for mode in [Independent, Linked] {
            let frame = lz4_frame(&data, mode, true);
            assert_eq!(
                decompress(Codec::Lz4, &frame, data.len()).unwrap(),
                data,
                "{mode:?}"
            );
            // Header checksum (byte 14: after magic, FLG, BD and the 8-byte content size).
            let mut bad = frame.clone();
            bad[14] ^= 1;
            assert!(
                decompress(Codec::Lz4, &bad, data.len()).is_err(),
                "{mode:?} HC"
            );
            // Content checksum: the last 4 bytes.
            let mut bad = frame.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert!(
                decompress(Codec::Lz4, &bad, data.len()).is_err(),
                "{mode:?} content"
            );
            // First block checksum: right after the first block's data.
            let mut bad = frame.clone();
            let size = u32::from_le_bytes(bad[15..19].try_into().unwrap()) & 0x7fff_ffff;
            bad[19 + size as usize] ^= 1;
            assert!(
                decompress(Codec::Lz4, &bad, data.len()).is_err(),
                "{mode:?} block"
            );
        }
        let plain = lz4_frame(&data, Independent, false);
        assert_eq!(decompress(Codec::Lz4, &plain, data.len()).unwrap(), data);
    }

    #[test]
    fn zstd_window_follows_cap() {
        assert_eq!(zstd_window_log_max(1), ZSTD_WINDOW_LOG_MIN);
        assert_eq!(zstd_window_log_max(64 << 20), 26);
        assert_eq!(zstd_window_log_max((64 << 20) + 1), 27);
        assert_eq!(zstd_window_log_max(usize::MAX), ZSTD_WINDOW_LOG_MAX);
    }

    #[test]
    fn zstd_output_that_exactly_fills_the_first_buffer_is_complete() {
        // The decoder's first buffer is four times the input; find records-like data that
        // compresses exactly 4:1, so the decoded bytes fill that buffer to the last byte.
        let text: Vec<u8> = (0..4096u32)
            .flat_map(|i| {
                format!(
                    "key-{:03}value-{:05}-{}",
                    i % 40,
                    i * 7919 % 65536,
                    "x".repeat((i % 97) as usize)
                )
                .into_bytes()
            })
            .collect();
        let exact: Vec<usize> = (64..text.len().min(8192))
            .filter(|&n| compress(Codec::Zstd, &text[..n], None).unwrap().len() * 4 == n)
            .take(3)
            .collect();
        assert!(!exact.is_empty(), "no input compressed exactly 4:1");
        for n in exact {
            let packed = compress(Codec::Zstd, &text[..n], None).unwrap();
            assert_eq!(
                decompress(Codec::Zstd, &packed, 1 << 20).unwrap(),
                &text[..n],
                "{n} bytes"
            );
        }
    }
}
