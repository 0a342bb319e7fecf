//! Criterion benchmark of record-batch validation (header checks + CRC-32C) for 16 KiB and
//! 1 MiB batches of 100-byte records.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_engine::batch::testing::{make_batch, TestBatch};
use sluice_engine::batch::BatchView;

fn validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_validate");
    for size in [16 * 1024usize, 1024 * 1024] {
        let b = make_batch(TestBatch {
            record_count: ((size - 61) / 100) as i32,
            payload_bytes: size - 61,
            ..TestBatch::default()
        });
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &b, |bench, b| {
            bench.iter(|| {
                let v = BatchView::parse(std::hint::black_box(b), 0).unwrap();
                v.validate(0, 2 << 20).unwrap();
                v.record_count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
