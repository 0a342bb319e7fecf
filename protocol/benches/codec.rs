//! Codec benchmarks: Produce request decode (1, 10 and 100 partitions of 16 KiB records)
//! and Fetch response skeleton encode (vectored: records are chunks, not copies), reported
//! per frame with byte and element throughput. `cargo test --benches` runs each once.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use sluice_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_protocol::{decode_request, encode_request, encode_response, Request, Response};

const RECORDS_BYTES: usize = 16 * 1024;
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;

fn produce_frame(partitions: usize) -> Bytes {
    let records = Bytes::from(vec![0x5a; RECORDS_BYTES]);
    let req = ProduceRequest {
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: "bench-topic".into(),
            partition_data: (0..partitions)
                .map(|i| PartitionProduceData {
                    index: i as i32,
                    records: Some(records.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    match encode_request(1, PRODUCE_VERSION, Some("bench"), &Request::Produce(req)) {
        Ok(frame) => frame.to_contiguous().slice(4..),
        Err(e) => panic!("encoding the bench request failed: {e}"),
    }
}

fn fetch_response(partitions: usize) -> Response {
    let records = Bytes::from(vec![0x5a; RECORDS_BYTES]);
    Response::Fetch(FetchResponse {
        responses: vec![FetchableTopicResponse {
            topic: "bench-topic".into(),
            partitions: (0..partitions)
                .map(|i| PartitionData {
                    partition_index: i as i32,
                    high_watermark: 1_000_000,
                    last_stable_offset: 1_000_000,
                    log_start_offset: 0,
                    records: Some(records.clone().into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn produce_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("produce_request_decode");
    for partitions in [1usize, 10, 100] {
        let frame = produce_frame(partitions);
        g.throughput(Throughput::Elements(partitions as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(partitions),
            &frame,
            |b, frame| {
                b.iter(|| match decode_request(black_box(frame.clone())) {
                    Ok(r) => r,
                    Err(e) => panic!("{e}"),
                })
            },
        );
    }
    g.finish();
}

fn fetch_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("fetch_response_skeleton_encode");
    for partitions in [1usize, 10, 100] {
        let resp = fetch_response(partitions);
        g.throughput(Throughput::Elements(partitions as u64));
        g.bench_with_input(BenchmarkId::from_parameter(partitions), &resp, |b, resp| {
            b.iter(
                || match encode_response(1, FETCH_VERSION, black_box(resp)) {
                    Ok(f) => f,
                    Err(e) => panic!("{e}"),
                },
            )
        });
    }
    g.finish();
}

criterion_group!(benches, produce_decode, fetch_encode);
criterion_main!(benches);
