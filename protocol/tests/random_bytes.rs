//! Random bytes into every decoder: `decode_request`, every request body and every response
//! body at every version. None may panic (a panic fails the property); any result is fine.
//! Valid frames with random bytes overwritten reach deeper into the decoders than pure noise.
//! Whatever decodes must re-encode, decode again and re-encode to the same bytes.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use proptest::prelude::*;
use sluice_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use sluice_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_protocol::{
    decode_request, decode_response, encode_request, encode_response, ApiKey, Encoder, Request,
    Response,
};

fn api_and_version() -> impl Strategy<Value = (ApiKey, i16)> {
    (0..ApiKey::ALL.len()).prop_flat_map(|i| {
        let api = ApiKey::ALL[i];
        let info = api.info();
        (Just(api), info.min_version..=info.max_version)
    })
}

/// A request frame with a valid header for `api`/`version` followed by `body`.
fn with_header(api: ApiKey, version: i16, body: &[u8]) -> Bytes {
    let mut e = Encoder::new();
    e.i16(api as i16);
    e.i16(version);
    e.i32(1);
    e.nullable_string(Some("fuzz"), false).unwrap();
    if api.request_header_version(version) >= 2 {
        e.uvarint(0);
    }
    e.raw(body);
    e.finish_contiguous()
}

fn valid_frames() -> Vec<(Bytes, Option<(ApiKey, i16)>)> {
    let produce = ProduceRequest {
        transactional_id: Some("t".into()),
        acks: -1,
        timeout_ms: 100,
        topic_data: vec![TopicProduceData {
            name: "orders".into(),
            partition_data: (0..3)
                .map(|i| PartitionProduceData {
                    index: i,
                    records: Some(Bytes::from(vec![i as u8; 40])),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let fetch = FetchResponse {
        responses: vec![FetchableTopicResponse {
            topic: "orders".into(),
            partitions: (0..3)
                .map(|i| PartitionData {
                    partition_index: i,
                    records: Some(Bytes::from(vec![7; 30]).into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Vec::new();
    for v in [3, 9, 11] {
        let f = encode_request(1, v, Some("c"), &Request::Produce(produce.clone()))
            .unwrap()
            .to_contiguous();
        out.push((f.slice(4..), None));
    }
    for v in [4, 12, 16] {
        let f = encode_response(1, v, &Response::Fetch(fetch.clone()))
            .unwrap()
            .to_contiguous();
        out.push((f.slice(4..), Some((ApiKey::Fetch, v))));
    }
    out
}

/// A decoded request re-encodes; that encoding decodes and re-encodes to the same bytes.
fn request_reencodes_stably(frame: Bytes) {
    let Ok((header, body)) = decode_request(frame) else {
        return;
    };
    let encode = |body: &Request| {
        encode_request(
            header.correlation_id,
            header.request_api_version,
            header.client_id.as_deref(),
            body,
        )
        .unwrap_or_else(|e| panic!("a decoded request failed to re-encode: {e}"))
        .to_contiguous()
    };
    let first = encode(&body);
    let (_, again) =
        decode_request(first.slice(4..)).unwrap_or_else(|e| panic!("re-encoded request: {e}"));
    assert_eq!(encode(&again), first);
}

/// The same for responses.
fn response_reencodes_stably(api: ApiKey, version: i16, frame: Bytes) {
    let Ok((header, body)) = decode_response(api, version, frame) else {
        return;
    };
    let encode = |body: &Response| {
        encode_response(header.correlation_id, version, body)
            .unwrap_or_else(|e| panic!("a decoded response failed to re-encode: {e}"))
            .to_contiguous()
    };
    let first = encode(&body);
    let (_, again) = decode_response(api, version, first.slice(4..))
        .unwrap_or_else(|e| panic!("re-encoded response: {e}"));
    assert_eq!(encode(&again), first);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        request_reencodes_stably(Bytes::from(bytes));
    }

    #[test]
    fn request_bodies_never_panic((api, version) in api_and_version(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        request_reencodes_stably(with_header(api, version, &body));
    }

    #[test]
    fn response_bodies_never_panic((api, version) in api_and_version(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        response_reencodes_stably(api, version, Bytes::from(body));
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..6,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let frames = valid_frames();
        let (frame, response) = &frames[which];
        let mut bytes = frame.to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        match response {
            None => request_reencodes_stably(Bytes::from(bytes)),
            Some((api, v)) => response_reencodes_stably(*api, *v, Bytes::from(bytes)),
        }
    }
}
