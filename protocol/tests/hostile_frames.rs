//! Hostile frames: huge array counts, negative lengths, truncated and overlong varints, huge
//! and numerous tagged fields, truncated and oversized frames. Each must produce a typed
//! error (never a panic), and decoding must stay within a small multiple of the input's size
//! in memory — measured by a counting global allocator that records, per thread, the peak of
//! live bytes and the largest single allocation while a frame is decoded.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use sluice_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_protocol::{
    check_frame_len, decode_request, encode_request, ApiKey, DecodeErrorKind, Encoder, FrameError,
    Request, RequestDecodeError, Response, MAX_FRAME_BYTES,
};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    // `try_with` because the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|l| {
        let now = l.get() + size;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Memory used while decoding: (peak live bytes above the starting point, largest allocation).
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LARGEST.with(|m| m.set(0));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak, LARGEST.with(Cell::get))
}

/// Decodes `frame` as a request and checks the memory bound: peak live memory at most
/// 32 times the frame plus 4 KiB of fixed overhead.
fn decode_bounded(
    frame: Bytes,
) -> Result<(sluice_protocol::RequestHeader, Request), RequestDecodeError> {
    let len = frame.len();
    let (out, peak, largest) = measure(|| decode_request(frame));
    if len > 100_000 {
        println!(
            "decoded {len} bytes: peak {peak} live bytes ({:.1}x), largest allocation {largest}",
            peak as f64 / len as f64
        );
    }
    assert!(
        peak <= 32 * len + 4096,
        "decoding {len} bytes peaked at {peak} live bytes"
    );
    assert!(
        largest <= 16 * len + 4096,
        "decoding {len} bytes made a {largest}-byte allocation"
    );
    out
}

/// Header for `api` at `version` (v1 or v2 depending on flexibility), then `body`.
fn request(api: ApiKey, version: i16, body: impl FnOnce(&mut Encoder)) -> Bytes {
    let mut e = Encoder::new();
    e.i16(api as i16);
    e.i16(version);
    e.i32(77);
    e.nullable_string(Some("hostile"), false).unwrap();
    if api.request_header_version(version) >= 2 {
        e.uvarint(0);
    }
    body(&mut e);
    e.finish_contiguous()
}

fn body_error(
    r: Result<(sluice_protocol::RequestHeader, Request), RequestDecodeError>,
) -> (&'static str, DecodeErrorKind) {
    match r {
        Err(RequestDecodeError::Body { source, header, .. }) => {
            assert_eq!(header.correlation_id, 77);
            (source.field, source.kind)
        }
        other => panic!("expected a body error, got {other:?}"),
    }
}

mod sizes {
    include!(concat!(env!("OUT_DIR"), "/struct_sizes.rs"));
}

/// The decoder admits an array of N elements only if N times the element's minimum wire size
/// remains, so the memory an array can cost per input byte is at most size_of(element) /
/// min_size(element). This bounds that ratio for every struct of every message at every
/// version (element allocations are charged to the element's own bytes, so nesting does not
/// compound it). Primitive and string elements are at most 24 bytes (a `String`) per byte.
#[test]
fn every_struct_has_bounded_memory_per_wire_byte() {
    let mut worst = ("", 0, 0, 1);
    for (name, version, in_memory, min_wire) in sizes::struct_sizes() {
        assert!(
            min_wire >= 1 || in_memory == 0,
            "{name} v{version} has a zero minimum size"
        );
        let min_wire = min_wire.max(1);
        if in_memory * worst.3 > worst.2 * min_wire {
            worst = (name, version, in_memory, min_wire);
        }
    }
    let (name, version, in_memory, min_wire) = worst;
    println!(
        "worst struct: {name} v{version}: {in_memory} bytes in memory per {min_wire} wire bytes"
    );
    assert!(
        in_memory <= 64 * min_wire,
        "{name} v{version}: {in_memory} bytes per {min_wire} wire bytes"
    );
}

#[test]
fn huge_array_counts_are_rejected_before_allocating() {
    // Classic (v3) Produce: i32::MAX topics in a few bytes.
    let frame = request(ApiKey::Produce, 3, |e| {
        e.i16(-1); // null transactional id
        e.i16(1);
        e.i32(1000);
        e.i32(i32::MAX);
    });
    let (field, kind) = body_error(decode_bounded(frame));
    assert_eq!(field, "ProduceRequest.topic_data");
    assert!(
        matches!(kind, DecodeErrorKind::ArrayCountExceedsRemaining { count, .. } if count == i32::MAX as usize)
    );

    // Flexible (v9) Produce: the largest compact count a 5-byte varint can carry.
    let frame = request(ApiKey::Produce, 9, |e| {
        e.uvarint(0);
        e.i16(1);
        e.i32(1000);
        e.uvarint(u32::MAX);
    });
    let (_, kind) = body_error(decode_bounded(frame));
    assert!(matches!(
        kind,
        DecodeErrorKind::ArrayCountExceedsRemaining { .. }
    ));

    // A count that fits the byte budget but not the minimum element size: 100 partitions of
    // at least 6 bytes each in 100 bytes.
    let frame = request(ApiKey::Produce, 9, |e| {
        e.uvarint(0);
        e.i16(1);
        e.i32(1000);
        e.uvarint(2);
        e.string("t", true).unwrap();
        e.uvarint(101);
        e.raw(&[0u8; 100]);
    });
    let (field, kind) = body_error(decode_bounded(frame));
    assert_eq!(field, "ProduceRequest.TopicProduceData.partition_data");
    assert!(matches!(
        kind,
        DecodeErrorKind::ArrayCountExceedsRemaining { count: 100, .. }
    ));
}

#[test]
fn negative_lengths_are_errors() {
    // A string length of -2 in the header's client id.
    let mut e = Encoder::new();
    e.i16(ApiKey::Metadata as i16);
    e.i16(4);
    e.i32(5);
    e.i16(-2);
    match decode_bounded(e.finish_contiguous()) {
        Err(RequestDecodeError::Header { source, prefix, .. }) => {
            assert_eq!(prefix.correlation_id, 5);
            assert_eq!(source.kind, DecodeErrorKind::NegativeLength { len: -2 });
        }
        other => panic!("{other:?}"),
    }
    // Negative records length in a classic Produce.
    let frame = request(ApiKey::Produce, 3, |e| {
        e.i16(-1);
        e.i16(1);
        e.i32(1000);
        e.i32(1);
        e.string("t", false).unwrap();
        e.i32(1);
        e.i32(0);
        e.i32(-7);
    });
    let (field, kind) = body_error(decode_bounded(frame));
    assert_eq!(field, "ProduceRequest.PartitionProduceData.records");
    assert_eq!(kind, DecodeErrorKind::NegativeLength { len: -7 });
    // A negative array count other than -1.
    let frame = request(ApiKey::Metadata, 4, |e| e.i32(-3));
    assert_eq!(
        body_error(decode_bounded(frame)).1,
        DecodeErrorKind::NegativeLength { len: -3 }
    );
    // Null where the schema forbids it: a null topics array in Produce.
    let frame = request(ApiKey::Produce, 3, |e| {
        e.i16(-1);
        e.i16(1);
        e.i32(1000);
        e.i32(-1);
    });
    assert_eq!(
        body_error(decode_bounded(frame)).1,
        DecodeErrorKind::NullNotAllowed
    );
}

#[test]
fn truncated_and_overlong_varints_are_errors() {
    // A compact string length cut off in the middle of its varint.
    let frame = request(ApiKey::Produce, 9, |e| e.raw(&[0x80, 0x80]));
    assert!(matches!(
        body_error(decode_bounded(frame)).1,
        DecodeErrorKind::Truncated { .. }
    ));
    // Six continuation bytes: longer than any u32 varint.
    let frame = request(ApiKey::Produce, 9, |e| {
        e.raw(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01])
    });
    assert_eq!(
        body_error(decode_bounded(frame)).1,
        DecodeErrorKind::MalformedVarint
    );
    // Five bytes whose last carries bits beyond 32.
    let frame = request(ApiKey::Produce, 9, |e| {
        e.raw(&[0xff, 0xff, 0xff, 0xff, 0x7f])
    });
    assert_eq!(
        body_error(decode_bounded(frame)).1,
        DecodeErrorKind::MalformedVarint
    );
}

#[test]
fn tagged_field_abuse_is_bounded() {
    // A header claiming 2^31 tagged fields.
    let mut e = Encoder::new();
    e.i16(ApiKey::Metadata as i16);
    e.i16(12);
    e.i32(9);
    e.i16(-1);
    e.uvarint(1 << 31);
    match decode_bounded(e.finish_contiguous()) {
        Err(RequestDecodeError::Header { source, .. }) => {
            assert!(matches!(
                source.kind,
                DecodeErrorKind::ArrayCountExceedsRemaining { .. }
            ))
        }
        other => panic!("{other:?}"),
    }
    // A tagged field whose declared size exceeds the frame.
    let frame = request(ApiKey::Metadata, 12, |e| {
        e.uvarint(1); // empty topics array
        e.bool(false);
        e.bool(false);
        e.uvarint(1);
        e.uvarint(5);
        e.uvarint(1 << 30);
    });
    assert!(matches!(
        body_error(decode_bounded(frame)).1,
        DecodeErrorKind::LengthExceedsRemaining { .. }
    ));
    // A known tagged field (Fetch v12 ClusterId, tag 0) whose value is shorter than declared.
    let frame = request(ApiKey::Fetch, 12, |e| {
        e.i32(-1);
        e.i32(500);
        e.i32(1);
        e.i32(1000);
        e.i8(0);
        e.i32(0);
        e.i32(0);
        e.uvarint(1);
        e.uvarint(1);
        e.string("", true).unwrap();
        e.uvarint(1);
        e.uvarint(0); // tag 0 ClusterId
        e.uvarint(4); // declared 4 bytes ...
        e.raw(&[2, b'x', 0, 0]); // ... but the compact string "x" uses 2
    });
    let (field, kind) = body_error(decode_bounded(frame));
    assert_eq!(field, "FetchRequest.cluster_id");
    assert_eq!(
        kind,
        DecodeErrorKind::TaggedFieldSize {
            tag: 0,
            declared: 4,
            used: 2
        }
    );
    // Many small unknown tagged fields in every partition of a large Produce request: all
    // kept (zero-copy) and re-emitted, within the memory bound.
    let frame = request(ApiKey::Produce, 9, |e| {
        e.uvarint(0);
        e.i16(1);
        e.i32(1000);
        e.uvarint(2);
        e.string("t", true).unwrap();
        e.uvarint(201);
        for p in 0..200 {
            e.i32(p);
            e.uvarint(0); // null records
            e.uvarint(20);
            for tag in 0..20u32 {
                e.uvarint(100 + tag);
                e.uvarint(0);
            }
        }
        e.uvarint(0);
        e.uvarint(0);
    });
    let (_, req) = decode_bounded(frame).unwrap();
    let Request::Produce(p) = req else {
        panic!("wrong variant")
    };
    assert_eq!(p.topic_data[0].partition_data.len(), 200);
    assert_eq!(
        p.topic_data[0].partition_data[199]
            .unknown_tagged_fields
            .len(),
        20
    );
}

#[test]
fn many_tiny_elements_stay_within_the_memory_bound() {
    // The worst ratio of memory to input: the smallest possible elements, as many as fit.
    let frame = request(ApiKey::Produce, 9, |e| {
        e.uvarint(0);
        e.i16(1);
        e.i32(1000);
        e.uvarint(2);
        e.string("t", true).unwrap();
        let n = 100_000;
        e.uvarint(n + 1);
        for p in 0..n {
            e.i32(p as i32);
            e.uvarint(0);
            e.uvarint(0);
        }
        e.uvarint(0);
        e.uvarint(0);
    });
    assert!(decode_bounded(frame).is_ok());
    // Metadata v12: topics with null names and zero ids, 18 bytes each.
    let frame = request(ApiKey::Metadata, 12, |e| {
        let n = 50_000;
        e.uvarint(n + 1);
        for _ in 0..n {
            e.raw(&[0; 16]);
            e.uvarint(0);
            e.uvarint(0);
        }
        e.bool(true);
        e.bool(false);
        e.uvarint(0);
    });
    assert!(decode_bounded(frame).is_ok());
}

#[test]
fn every_truncation_of_a_valid_frame_is_an_error() {
    let req = ProduceRequest {
        transactional_id: Some("tx".into()),
        acks: 1,
        timeout_ms: 5,
        topic_data: vec![TopicProduceData {
            name: "topic".into(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(Bytes::from_static(b"0123456789")),
                unknown_tagged_fields: vec![(9, Bytes::from_static(b"xy"))],
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    for version in [3, 8, 9, 11] {
        let mut req = req.clone();
        if version < 9 {
            // Unknown tagged fields exist only in flexible versions; encoding them earlier is
            // (rightly) an error.
            req.topic_data[0].partition_data[0]
                .unknown_tagged_fields
                .clear();
        }
        let frame = encode_request(1, version, Some("c"), &Request::Produce(req))
            .unwrap_or_else(|e| panic!("v{version}: {e}"))
            .to_contiguous()
            .slice(4..);
        assert!(decode_bounded(frame.clone()).is_ok());
        for cut in 0..frame.len() {
            let r = decode_bounded(frame.slice(..cut));
            assert!(
                r.is_err(),
                "v{version}: a frame cut at {cut} of {} decoded",
                frame.len()
            );
            if cut >= 8 {
                assert_eq!(r.unwrap_err().correlation_id(), Some(1));
            }
        }
    }
}

#[test]
fn oversized_and_unknown_frames() {
    assert_eq!(
        check_frame_len(MAX_FRAME_BYTES as i32 + 1, MAX_FRAME_BYTES),
        Err(FrameError::TooLarge {
            len: MAX_FRAME_BYTES + 1,
            max: MAX_FRAME_BYTES
        })
    );
    assert_eq!(
        check_frame_len(i32::MIN, MAX_FRAME_BYTES),
        Err(FrameError::Negative { len: i32::MIN })
    );
    assert_eq!(
        decode_bounded(Bytes::from_static(&[0, 1, 2])),
        Err(RequestDecodeError::TooShort { len: 3 })
    );
    let r = decode_bounded(Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 3]));
    assert!(
        matches!(r, Err(RequestDecodeError::UnknownApiKey { prefix }) if prefix.correlation_id == 3)
    );
    let r = decode_bounded(Bytes::from_static(&[0, 0, 0x7f, 0, 0, 0, 0, 4]));
    assert!(matches!(
        r,
        Err(RequestDecodeError::UnsupportedVersion {
            api: ApiKey::Produce,
            ..
        })
    ));
}

#[test]
fn response_decoders_reject_hostile_bodies_too() {
    // A Fetch v12 response whose partition count is absurd.
    let mut e = Encoder::new();
    e.i32(3); // correlation id
    e.uvarint(0); // header tagged fields
    e.i32(0);
    e.i16(0);
    e.i32(0);
    e.uvarint(2);
    e.string("t", true).unwrap();
    e.uvarint(u32::MAX);
    let frame = e.finish_contiguous();
    let len = frame.len();
    let (r, peak, _) = measure(|| sluice_protocol::decode_response(ApiKey::Fetch, 12, frame));
    assert!(peak <= 32 * len + 4096);
    let err = r.unwrap_err();
    assert_eq!(err.field, "FetchResponse.FetchableTopicResponse.partitions");
    let _ = Response::decode; // the enum-level decoder is what decode_response uses
}

#[test]
fn negative_and_out_of_range_versions_are_unsupported() {
    use sluice_protocol::{Decoder, EncodeError};
    for version in [-1, i16::MIN, 12, i16::MAX] {
        let err = ProduceRequest::decode(&mut Decoder::new(Bytes::from_static(&[0; 64])), version)
            .unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::UnsupportedVersion { version });
        assert_eq!(
            ProduceRequest::default()
                .encode(&mut Encoder::new(), version)
                .unwrap_err(),
            EncodeError::UnsupportedVersion {
                message: "ProduceRequest",
                version
            }
        );
    }
    let r = decode_bounded(Bytes::from_static(&[0, 0, 0xff, 0xff, 0, 0, 0, 4]));
    assert!(matches!(
        r,
        Err(RequestDecodeError::UnsupportedVersion {
            api: ApiKey::Produce,
            ..
        })
    ));
}
