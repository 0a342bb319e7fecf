//! Fuzzes every decompressor with arbitrary input and an arbitrary cap.
//!
//! Input layout: byte 0 picks the codec (modulo 5), bytes 1-2 the cap (u16, in KiB steps so
//! that bombs are reachable), the rest is the compressed data. Properties: no panic, output
//! never exceeds the cap, and whatever decodes re-encodes and decodes back unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::compression::{compress, decompress, Codec};

fuzz_target!(|data: &[u8]| {
    let [selector, cap_hi, cap_lo, input @ ..] = data else {
        return;
    };
    let codec = Codec::ALL[usize::from(*selector) % Codec::ALL.len()];
    let max_out = usize::from(u16::from_be_bytes([*cap_hi, *cap_lo])) * 64;
    let Ok(out) = decompress(codec, input, max_out) else {
        return;
    };
    assert!(out.len() <= max_out, "{codec}: {} > cap {max_out}", out.len());
    let again = compress(codec, &out, None).expect("compressing into memory cannot fail");
    let back = decompress(codec, &again, out.len()).expect("our own output must decode");
    assert_eq!(back, out, "{codec} round trip");
});
