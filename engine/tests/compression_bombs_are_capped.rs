//! Hostile compressed input hits the decompression cap with an error, and memory stays
//! bounded while it does: small inputs that expand hugely (bombs) for every codec, and tiny
//! inputs whose headers claim enormous sizes.
//!
//! A counting global allocator measures the peak heap growth of each decompression. It sees
//! Rust allocations only; zstd's C decoder allocates with malloc, so for zstd the bound is
//! proven instead by a frame that demands a huge window being refused.
//!
//! The whole file is one test so that no other test thread disturbs the measurements.

// A test crate: a failed unwrap in a helper is a failed test, which is what we want.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_engine::compression::{self, Codec, CompressionError, SNAPPY_XERIAL_MAGIC};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak heap growth it caused.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const CAP: usize = 1 << 20;
const BOMB_BYTES: usize = 48 << 20;

fn assert_too_large(result: Result<Vec<u8>, CompressionError>, codec: Codec, what: &str) {
    match result {
        Err(CompressionError::OutputTooLarge { codec: c, max_out }) => {
            assert_eq!((c, max_out), (codec, CAP), "{what}");
        }
        other => panic!("{what}: expected OutputTooLarge, got {other:?}"),
    }
}

fn assert_corrupt(result: Result<Vec<u8>, CompressionError>, what: &str) {
    match result {
        Err(e @ CompressionError::Corrupt { .. }) => assert_eq!(e.kafka_code(), 2, "{what}"),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

#[test]
fn hostile_inputs_hit_the_cap_with_bounded_memory() {
    let zeros = vec![0u8; BOMB_BYTES];

    // Bombs: 48 MiB of zeros compressed by each codec (a few KiB to a few MiB of input).
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        let bomb = compression::compress(codec, &zeros, None).unwrap();
        assert!(
            bomb.len() < BOMB_BYTES / 20,
            "{codec} bomb is {} bytes",
            bomb.len()
        );
        let (result, peak) = peak_growth(|| compression::decompress(codec, &bomb, CAP));
        assert_too_large(result, codec, codec.name());
        // The output buffer may double past the cap once; nothing else is large.
        assert!(
            peak <= 2 * CAP + (1 << 20),
            "{codec}: peak heap growth {peak}"
        );
    }

    // A raw snappy block of 6 bytes declaring 4 GiB: refused before any allocation.
    let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    let (result, peak) = peak_growth(|| compression::decompress(Codec::Snappy, &claim, CAP));
    assert_corrupt(result, "snappy 4 GiB claim");
    assert!(peak < 64 << 10, "snappy claim: peak heap growth {peak}");

    // A plausible raw block (declared size within snappy's expansion ratio) over the cap.
    let honest = snap::raw::Encoder::new()
        .compress_vec(&zeros[..2 * CAP])
        .unwrap();
    let (result, peak) = peak_growth(|| compression::decompress(Codec::Snappy, &honest, CAP));
    assert_too_large(result, Codec::Snappy, "snappy raw over cap");
    assert!(
        peak < 64 << 10,
        "snappy raw over cap: peak heap growth {peak}"
    );

    // Xerial framing whose many small chunks add up past the cap: stopped at the chunk that
    // would cross it.
    let chunk = snap::raw::Encoder::new()
        .compress_vec(&zeros[..32 << 10])
        .unwrap();
    let mut xerial = SNAPPY_XERIAL_MAGIC.to_vec();
    xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    for _ in 0..100 {
        xerial.extend_from_slice(&(chunk.len() as i32).to_be_bytes());
        xerial.extend_from_slice(&chunk);
    }
    let (result, peak) = peak_growth(|| compression::decompress(Codec::Snappy, &xerial, CAP));
    assert_too_large(result, Codec::Snappy, "xerial chunks over cap");
    assert!(
        peak <= 2 * CAP + (64 << 10),
        "xerial: peak heap growth {peak}"
    );

    // Xerial chunk lengths that are negative or run past the input.
    for len in [-1i32, i32::MAX, 1000] {
        let mut bad = SNAPPY_XERIAL_MAGIC.to_vec();
        bad.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        bad.extend_from_slice(&len.to_be_bytes());
        bad.extend_from_slice(&chunk[..10]);
        assert_corrupt(
            compression::decompress(Codec::Snappy, &bad, CAP),
            "xerial length",
        );
    }

    // An LZ4 frame whose header claims 2^60 bytes of content but holds one small block.
    let mut lz4 = vec![0x04, 0x22, 0x4d, 0x18];
    // FLG: version 01, block independence, content size present; BD: 64 KiB blocks.
    let descriptor = [0b0110_1000u8, 0x40];
    let content_size = (1u64 << 60).to_le_bytes();
    lz4.extend_from_slice(&descriptor);
    lz4.extend_from_slice(&content_size);
    let mut hashed = descriptor.to_vec();
    hashed.extend_from_slice(&content_size);
    lz4.push(header_checksum(&hashed));
    // One uncompressed block of 4 bytes (high bit set), then the end mark.
    lz4.extend_from_slice(&(0x8000_0004u32).to_le_bytes());
    lz4.extend_from_slice(b"abcd");
    lz4.extend_from_slice(&[0, 0, 0, 0]);
    let (result, peak) = peak_growth(|| compression::decompress(Codec::Lz4, &lz4, CAP));
    assert_corrupt(result, "lz4 content size claim");
    assert!(peak < 1 << 20, "lz4 claim: peak heap growth {peak}");

    // A zstd frame demanding a 2 GiB window (window descriptor exponent 21): refused up front.
    let mut zstd = vec![0x28, 0xb5, 0x2f, 0xfd];
    zstd.push(0x00); // frame header descriptor: no content size, no checksum, no dictionary
    zstd.push(21 << 3); // window descriptor: 2^(10 + 21)
                        // One raw block of 4 bytes, last block.
    zstd.extend_from_slice(&[(4 << 3) | 1, 0, 0]);
    zstd.extend_from_slice(b"abcd");
    assert_corrupt(
        compression::decompress(Codec::Zstd, &zstd, CAP),
        "zstd 2 GiB window",
    );
    // The same frame with a 1 MiB window decodes: the refusal is about the window alone.
    zstd[5] = 10 << 3;
    assert_eq!(
        compression::decompress(Codec::Zstd, &zstd, CAP).unwrap(),
        b"abcd"
    );

    // A gzip member whose trailer claims 4 GiB: the claim is never used for sizing, and the
    // wrong length is detected.
    let mut gzip = compression::compress(Codec::Gzip, b"tiny", None).unwrap();
    let n = gzip.len();
    gzip[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    let (result, peak) = peak_growth(|| compression::decompress(Codec::Gzip, &gzip, CAP));
    assert_corrupt(result, "gzip size claim");
    assert!(peak < 1 << 20, "gzip claim: peak heap growth {peak}");

    // Empty compressed sections and trailing garbage are corrupt, not empty output.
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        let err = compression::decompress(codec, &[], CAP).unwrap_err();
        assert_eq!(err.kafka_code(), 2, "{codec} empty");
        let mut trailing = compression::compress(codec, b"some records", None).unwrap();
        trailing.extend_from_slice(&[0x13, 0x37, 0x00]);
        assert!(
            compression::decompress(codec, &trailing, CAP).is_err(),
            "{codec} accepted trailing garbage"
        );
    }
}

/// The LZ4 frame header checksum: the second byte of XXH32(descriptor, seed 0).
fn header_checksum(descriptor: &[u8]) -> u8 {
    (twox_hash::XxHash32::oneshot(0, descriptor) >> 8) as u8
}
