//! Fuzzes the path a produced batch takes through the record layer: header fields read from
//! the input, the records section decompressed (capped) and iterated, validated, and then
//! rewritten (recompression, LogAppendTime).
//!
//! The CRC is deliberately not required to match, so the fuzzer reaches the record parser.
//! Properties: no panic, bounded output, and any section that validates re-encodes with our
//! builder into a batch whose records are identical.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::builder::{self, BatchBuilder, Rewrite, BATCH_HEADER_BYTES};
use sluice_engine::compression::Codec;
use sluice_engine::records::{decode_records, validate_records, Header, RecordChecks};

const MAX_OUT: usize = 1 << 20;

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < BATCH_HEADER_BYTES {
        return;
    }
    let attributes = be_i16(data, 21);
    let base_timestamp = be_i64(data, 27);
    let count = be_i32(data, 57);
    let section = &data[BATCH_HEADER_BYTES..];

    // Rewrites must reject or handle any bytes without panicking.
    let mut copy = data.to_vec();
    let _ = builder::set_log_append_time(&mut copy, 1);
    let _ = builder::rewrite(
        data,
        &Rewrite { codec: Codec::Zstd, level: None, log_append_time_ms: Some(1), max_out: MAX_OUT },
    );

    let Ok(decoded) = decode_records(attributes, section, count, MAX_OUT) else {
        return;
    };
    assert!(decoded.bytes().len() <= MAX_OUT.max(section.len()));
    let checks = RecordChecks { require_keys: false, timestamp_range: None };
    let Ok(summary) = validate_records(decoded.iter(), base_timestamp, &checks) else {
        return;
    };
    assert_eq!(i64::from(summary.count), i64::from(count));

    // Differential check: our builder re-encodes the same records identically.
    let mut builder = BatchBuilder::new(Codec::None);
    let mut original = Vec::new();
    for record in decoded.iter() {
        let record = record.expect("validated above");
        let Some(timestamp) = record.timestamp(base_timestamp) else { return };
        let headers: Vec<Header<'_>> = record.headers().collect();
        if builder.append(timestamp, record.key, record.value, &headers).is_err() {
            return;
        }
        original.push((timestamp, record.key, record.value, headers));
    }
    let Ok(rebuilt) = builder.build() else { return };
    let rebuilt_base = be_i64(&rebuilt, 27);
    let again = decode_records(0, &rebuilt[BATCH_HEADER_BYTES..], count, MAX_OUT)
        .expect("uncompressed sections always decode");
    for (record, (timestamp, key, value, headers)) in again.iter().zip(&original) {
        let record = record.expect("our own batch must parse");
        assert_eq!(record.timestamp(rebuilt_base), Some(*timestamp));
        assert_eq!((record.key, record.value), (*key, *value));
        assert!(record.headers().eq(headers.iter().copied()));
    }
});
