//! Criterion benchmarks for the record layer: building a batch (encode + compress + CRC) and
//! decoding one (decompress + iterate every record), for each codec, with 100-byte values in
//! batches of about 16 KiB and 256 KiB — the sizes the append benchmark uses.
//!
//! `cargo bench -p sluice-engine --bench compression` measures; under `cargo test` (criterion's
//! test mode) each benchmark runs once, so the code never rots.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_engine::builder::BatchBuilder;
use sluice_engine::compression::Codec;
use sluice_engine::records::decode_records;

const VALUE_BYTES: usize = 100;

/// Values that compress like typical JSON-ish payloads: repetitive structure, varying digits.
fn value(i: usize) -> Vec<u8> {
    let mut v = format!(
        "{{\"id\":{i},\"user\":\"u{}\",\"event\":\"click\",\"ts\":{}}}",
        i % 97,
        1_700_000_000_000u64 + i as u64
    )
    .into_bytes();
    v.resize(VALUE_BYTES, b' ');
    v
}

fn build(codec: Codec, records: usize, values: &[Vec<u8>]) -> bytes::Bytes {
    let mut b = BatchBuilder::with_capacity(codec, records * (VALUE_BYTES + 16)).producer(1, 0, 0);
    for (i, v) in values.iter().take(records).enumerate() {
        b.append(1_700_000_000_000 + i as i64, None, Some(v), &[])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    b.build().unwrap_or_else(|e| panic!("{e}"))
}

fn benches(c: &mut Criterion) {
    let values: Vec<Vec<u8>> = (0..2048).map(value).collect();
    for (label, records) in [("16KiB", 150usize), ("256KiB", 2048)] {
        let raw_bytes = (records * VALUE_BYTES) as u64;
        let mut group = c.benchmark_group(format!("build_{label}"));
        group.throughput(Throughput::Bytes(raw_bytes));
        for codec in Codec::ALL {
            group.bench_with_input(BenchmarkId::from_parameter(codec), &codec, |b, &codec| {
                b.iter(|| build(codec, records, &values))
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("decode_{label}"));
        group.throughput(Throughput::Bytes(raw_bytes));
        // Baselines measured in the same run, so results can be read as ratios on a shared
        // machine: copying the uncompressed batch, and the CRC-32C every batch gets anyway.
        let plain = build(Codec::None, records, &values);
        group.bench_function("baseline_copy", |b| b.iter(|| plain.to_vec()));
        group.bench_function("baseline_crc32c", |b| {
            b.iter(|| crc32c::crc32c(&plain[21..]))
        });
        for codec in Codec::ALL {
            let batch = build(codec, records, &values);
            let attributes = i16::from_be_bytes([batch[21], batch[22]]);
            group.bench_with_input(BenchmarkId::from_parameter(codec), &batch, |b, batch| {
                b.iter(|| {
                    let decoded =
                        decode_records(attributes, &batch[61..], records as i32, 64 << 20)
                            .unwrap_or_else(|e| panic!("{e}"));
                    decoded
                        .iter()
                        .map(|r| r.map(|r| r.value.map_or(0, <[u8]>::len)).unwrap_or(0))
                        .sum::<usize>()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(compression, benches);
criterion_main!(compression);
