//! Tagged fields as real clients need them: a field holding its default value is omitted
//! (librdkafka 2.0.2, linked by Debian's kcat, mis-parses defaults written out), present
//! fields are written in ascending tag order merged with preserved unknown ones, unknown
//! fields survive a decode/encode round trip, and ignorable fields are dropped silently in
//! versions that lack them while non-ignorable ones are refused.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use sluice_protocol::messages::api_versions_response::{ApiVersionsResponse, SupportedFeatureKey};
use sluice_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use sluice_protocol::{Decoder, EncodeError, Encoder, Uuid};

fn encode(m: &ApiVersionsResponse, version: i16) -> Bytes {
    let mut e = Encoder::new();
    m.encode(&mut e, version).unwrap();
    let b = e.finish_contiguous();
    assert_eq!(b.len(), m.encoded_size(version));
    b
}

#[test]
fn default_tagged_fields_are_omitted() {
    let m = ApiVersionsResponse::default();
    assert_eq!(m.finalized_features_epoch, -1, "spec default");
    let b = encode(&m, 3);
    // error code, empty compact array, throttle time, then a tagged section with no fields.
    assert_eq!(&b[..], &[0, 0, 1, 0, 0, 0, 0, 0]);
}

#[test]
fn present_tagged_fields_merge_with_unknown_ones_in_tag_order() {
    let m = ApiVersionsResponse {
        supported_features: vec![SupportedFeatureKey {
            name: "f".into(),
            min_version: 1,
            max_version: 2,
            ..Default::default()
        }],
        zk_migration_ready: true,
        unknown_tagged_fields: vec![
            (7, Bytes::from_static(b"z")),
            (2, Bytes::from_static(b"ab")),
        ],
        ..Default::default()
    };
    // Tag 2 belongs to FinalizedFeatures, which holds its default (empty) and is omitted; an
    // unknown field with that tag is used here only to check the encoder's ordering.
    let b = encode(&m, 3);
    let mut d = Decoder::new(b.slice(7..));
    assert_eq!(d.uvarint().unwrap(), 4, "two known + two unknown");
    let mut tags = Vec::new();
    for _ in 0..4 {
        let tag = d.uvarint().unwrap();
        let size = d.uvarint().unwrap() as usize;
        d.slice(size).unwrap();
        tags.push(tag);
    }
    assert_eq!(tags, [0, 2, 3, 7]);

    let m = ApiVersionsResponse {
        unknown_tagged_fields: vec![(9, Bytes::from_static(b"xyz"))],
        ..m
    };
    let b = encode(&m, 4);
    let decoded = ApiVersionsResponse::decode(&mut Decoder::new(b), 4).unwrap();
    assert_eq!(decoded, m, "unknown tagged fields are preserved");
}

#[test]
fn ignorable_fields_are_dropped_and_others_refused() {
    // ThrottleTimeMs (v1+) is ignorable: v0 simply leaves it out.
    let m = ApiVersionsResponse {
        throttle_time_ms: 100,
        ..Default::default()
    };
    assert_eq!(&encode(&m, 0)[..], &[0, 0, 0, 0, 0, 0]);
    // MetadataRequest topic ids (v10+) are ignorable; topic names are nullable only from v1.
    let req = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            topic_id: Uuid([1; 16]),
            name: Some("t".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut e = Encoder::new();
    req.encode(&mut e, 9).unwrap();
    let mut d = Decoder::new(e.finish_contiguous());
    let back = MetadataRequest::decode(&mut d, 9).unwrap();
    assert_eq!(back.topics.unwrap()[0].topic_id, Uuid::ZERO);
    let req = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            name: None,
            ..Default::default()
        }]),
        ..Default::default()
    };
    assert_eq!(
        req.encode(&mut Encoder::new(), 0).unwrap_err(),
        EncodeError::NullNotAllowed {
            field: "MetadataRequest.MetadataRequestTopic.name",
            version: 0
        }
    );
    // A null topic list means "all topics" only from v1.
    let all = MetadataRequest {
        topics: None,
        ..Default::default()
    };
    assert!(matches!(
        all.encode(&mut Encoder::new(), 0),
        Err(EncodeError::NullNotAllowed { .. })
    ));
    all.encode(&mut Encoder::new(), 1).unwrap();
}
