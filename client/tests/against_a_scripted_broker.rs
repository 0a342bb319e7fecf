//! The client against a scripted broker on a loopback socket: version negotiation (including
//! the KIP-511 fallback), correlation ids, lying or truncated response frames, timeouts,
//! acks=0, and errors carrying the broker's code and message. The scripted broker runs on its
//! own thread and answers each request with whatever the test's closure returns.

// The scripted broker is test scaffolding: any failure in it should panic loudly.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{Acks, Client, ClientConfig, ClientError, NewTopic};
use sluice_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use sluice_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use sluice_protocol::messages::metadata_response::MetadataResponse;
use sluice_protocol::{
    decode_request, encode_response, ApiKey, Request, RequestDecodeError, RequestHeader, Response,
};

/// What the scripted broker does with one request.
enum Answer {
    Respond(Response),
    /// Raw bytes instead of a well-formed response.
    Raw(Vec<u8>),
    /// Raw bytes, then close the connection.
    RawThenHangup(Vec<u8>),
    /// Nothing; keep reading.
    Silence,
    /// Close the connection.
    Hangup,
}

type Seen = (i16, i16, i32, Option<String>);

/// Starts a broker that serves one connection; returns its address and a channel of the
/// (api key, version, correlation id, client id) of every request it decoded.
fn scripted<F>(mut script: F) -> (String, mpsc::Receiver<Seen>)
where
    F: FnMut(&Result<(RequestHeader, Request), RequestDecodeError>) -> Answer + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        loop {
            let mut size = [0u8; 4];
            if s.read_exact(&mut size).is_err() {
                return;
            }
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            if s.read_exact(&mut body).is_err() {
                return;
            }
            let decoded = decode_request(Bytes::from(body));
            let (cid, version) = match &decoded {
                Ok((h, _)) => {
                    let _ = tx.send((
                        h.request_api_key,
                        h.request_api_version,
                        h.correlation_id,
                        h.client_id.clone(),
                    ));
                    (h.correlation_id, h.request_api_version)
                }
                Err(e) => {
                    let p = e.prefix().unwrap();
                    let _ = tx.send((p.api_key, p.api_version, p.correlation_id, None));
                    (p.correlation_id, p.api_version)
                }
            };
            match script(&decoded) {
                Answer::Respond(r) => {
                    let frame = encode_response(cid, version, &r).unwrap();
                    s.write_all(&frame.to_contiguous()).unwrap();
                }
                Answer::Raw(bytes) => s.write_all(&bytes).unwrap(),
                Answer::RawThenHangup(bytes) => {
                    s.write_all(&bytes).unwrap();
                    return;
                }
                Answer::Silence => {}
                Answer::Hangup => return,
            }
        }
    });
    (addr, rx)
}

fn versions(ranges: &[(ApiKey, i16, i16)]) -> Response {
    Response::ApiVersions(ApiVersionsResponse {
        api_keys: ranges
            .iter()
            .map(|&(k, lo, hi)| ApiVersion {
                api_key: k as i16,
                min_version: lo,
                max_version: hi,
                ..ApiVersion::default()
            })
            .collect(),
        ..ApiVersionsResponse::default()
    })
}

fn usual_versions() -> Response {
    versions(&[
        (ApiKey::ApiVersions, 0, 4),
        (ApiKey::Metadata, 0, 5),
        (ApiKey::Produce, 3, 7),
        (ApiKey::Fetch, 4, 12),
        (ApiKey::CreateTopics, 0, 7),
    ])
}

fn config() -> ClientConfig {
    ClientConfig {
        client_id: "scripted-test".into(),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
    }
}

fn is_api(r: &Result<(RequestHeader, Request), RequestDecodeError>, api: ApiKey) -> bool {
    matches!(r, Ok((_, req)) if req.api_key() == api)
}

#[test]
fn negotiates_the_highest_version_both_sides_support() {
    let (addr, seen) = scripted(|r| {
        if is_api(r, ApiKey::ApiVersions) {
            Answer::Respond(usual_versions())
        } else {
            Answer::Respond(Response::Metadata(MetadataResponse::default()))
        }
    });
    let mut client = Client::connect(&addr, config()).unwrap();
    assert_eq!(client.version(ApiKey::Metadata).unwrap(), 5);
    assert_eq!(client.version(ApiKey::Produce).unwrap(), 7);
    assert_eq!(client.version(ApiKey::Fetch).unwrap(), 12);
    // Not offered by this broker: a precise error, before anything is sent.
    match client.version(ApiKey::DeleteTopics) {
        Err(ClientError::UnsupportedApi { broker, .. }) => assert_eq!(broker, "not offered"),
        other => panic!("{other:?}"),
    }
    let md = client.metadata(None).unwrap();
    assert!(md.topics.is_empty());
    let first = seen.recv().unwrap();
    assert_eq!((first.0, first.1), (ApiKey::ApiVersions as i16, 3));
    assert_eq!(first.3.as_deref(), Some("scripted-test"));
    let second = seen.recv().unwrap();
    assert_eq!((second.0, second.1), (ApiKey::Metadata as i16, 5));
    assert_ne!(first.2, second.2, "correlation ids must differ");
}

#[test]
fn falls_back_when_the_broker_does_not_know_api_versions_v3() {
    // Our codec knows ApiVersions v3, so the script decides to play a broker that does not:
    // KIP-511 says such a broker answers in v0 with UNSUPPORTED_VERSION and its own range.
    let (addr, seen) = scripted(|r| match r {
        Ok((h, _)) if h.request_api_version == 3 => {
            let body = Response::ApiVersions(ApiVersionsResponse {
                error_code: 35,
                api_keys: vec![ApiVersion {
                    api_key: ApiKey::ApiVersions as i16,
                    min_version: 0,
                    max_version: 2,
                    ..ApiVersion::default()
                }],
                ..ApiVersionsResponse::default()
            });
            let frame = encode_response(h.correlation_id, 0, &body).unwrap();
            Answer::Raw(frame.to_contiguous().to_vec())
        }
        Ok((h, _)) if h.request_api_version == 2 => Answer::Respond(versions(&[
            (ApiKey::ApiVersions, 0, 2),
            (ApiKey::Metadata, 1, 8),
        ])),
        _ => Answer::Hangup,
    });
    let client = Client::connect(&addr, config()).unwrap();
    assert_eq!(client.version(ApiKey::Metadata).unwrap(), 8);
    let versions_sent: Vec<i16> = seen.try_iter().map(|s| s.1).collect();
    assert_eq!(versions_sent, vec![3, 2]);
}

#[test]
fn a_response_with_another_correlation_id_is_an_error() {
    let (addr, _seen) = scripted(|r| match r {
        Ok((h, Request::ApiVersions(_))) => {
            let frame = encode_response(h.correlation_id, 3, &usual_versions()).unwrap();
            Answer::Raw(frame.to_contiguous().to_vec())
        }
        Ok((h, _)) => {
            let frame = encode_response(
                h.correlation_id + 100,
                h.request_api_version,
                &Response::Metadata(MetadataResponse::default()),
            )
            .unwrap();
            Answer::Raw(frame.to_contiguous().to_vec())
        }
        Err(_) => Answer::Hangup,
    });
    let mut client = Client::connect(&addr, config()).unwrap();
    match client.metadata(None) {
        Err(ClientError::CorrelationMismatch { expected, got, .. }) => {
            assert_eq!(got, expected + 100)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lying_or_truncated_response_frames_are_refused() {
    for (raw, expect_size_error) in [
        (i32::to_be_bytes(-1).to_vec(), true),
        (i32::to_be_bytes(i32::MAX).to_vec(), true),
        // A frame that claims 1000 bytes and delivers 10 before the broker hangs up.
        ([&i32::to_be_bytes(1000)[..], &[0u8; 10]].concat(), false),
    ] {
        let mut raw = Some(raw);
        let (addr, _seen) = scripted(move |r| {
            if is_api(r, ApiKey::ApiVersions) {
                Answer::Respond(usual_versions())
            } else if let Some(bytes) = raw.take() {
                Answer::RawThenHangup(bytes)
            } else {
                Answer::Hangup
            }
        });
        let mut client = Client::connect(&addr, config()).unwrap();
        let err = client.metadata(None).unwrap_err();
        match err {
            ClientError::FrameSize { .. } => assert!(expect_size_error),
            ClientError::Closed { .. } => assert!(!expect_size_error),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_silent_broker_times_out() {
    let (addr, _seen) = scripted(|r| {
        if is_api(r, ApiKey::ApiVersions) {
            Answer::Respond(usual_versions())
        } else {
            Answer::Silence
        }
    });
    let mut cfg = config();
    cfg.request_timeout = Duration::from_millis(300);
    let mut client = Client::connect(&addr, cfg).unwrap();
    let started = Instant::now();
    match client.metadata(None) {
        Err(ClientError::Timeout { api, .. }) => assert_eq!(api, ApiKey::Metadata),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn acks_zero_does_not_wait_for_a_response() {
    let (addr, seen) = scripted(|r| {
        if is_api(r, ApiKey::ApiVersions) {
            Answer::Respond(usual_versions())
        } else {
            Answer::Silence
        }
    });
    let mut cfg = config();
    cfg.request_timeout = Duration::from_secs(30);
    let mut client = Client::connect(&addr, cfg).unwrap();
    let mut builder = sluice_client::BatchBuilder::new(sluice_client::Codec::None);
    builder.append(1, None, Some(b"v"), &[]).unwrap();
    let batch = builder.build().unwrap();
    let started = Instant::now();
    let placed = client
        .produce("t", vec![(0, batch)], Acks::None, 1000)
        .unwrap();
    assert!(placed.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = seen.recv().unwrap();
    let produce = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((produce.0, produce.1), (ApiKey::Produce as i16, 7));
}

#[test]
fn topic_errors_carry_the_code_and_the_brokers_message() {
    let (addr, _seen) = scripted(|r| match r {
        Ok((_, Request::ApiVersions(_))) => Answer::Respond(usual_versions()),
        Ok((_, Request::CreateTopics(req))) => {
            Answer::Respond(Response::CreateTopics(CreateTopicsResponse {
                topics: vec![CreatableTopicResult {
                    name: req.topics[0].name.clone(),
                    error_code: 36,
                    error_message: Some("Topic 'x' already exists.".into()),
                    ..CreatableTopicResult::default()
                }],
                ..CreateTopicsResponse::default()
            }))
        }
        _ => Answer::Hangup,
    });
    let mut client = Client::connect(&addr, config()).unwrap();
    let err = client.create_topic(&NewTopic::new("x")).unwrap_err();
    assert_eq!(err.kafka_code(), Some(36));
    assert_eq!(
        err.to_string(),
        "create topic 'x': Topic 'x' already exists. (TOPIC_ALREADY_EXISTS)"
    );
}

#[test]
fn an_unreachable_broker_is_a_connect_error() {
    // Bind and drop to find a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    match Client::connect(&format!("127.0.0.1:{port}"), config()) {
        Err(ClientError::Connect { addr, .. }) => assert!(addr.ends_with(&port.to_string())),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
    match Client::connect("no-such-host.invalid:9092", config()) {
        Err(ClientError::Resolve { .. }) => {}
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("resolved an invalid name"),
    }
}

#[test]
fn fetch_names_topics_by_id_when_it_can_and_by_name_otherwise() {
    use sluice_client::{FetchOptions, TopicRef};
    use sluice_protocol::messages::fetch_response::{
        FetchResponse, FetchableTopicResponse, PartitionData,
    };
    use sluice_protocol::Uuid;

    let mut builder = sluice_client::BatchBuilder::new(sluice_client::Codec::Lz4).base_offset(40);
    builder.append(7, Some(b"k"), Some(b"v40"), &[]).unwrap();
    builder.append(8, Some(b"k"), Some(b"v41"), &[]).unwrap();
    let batch = builder.build().unwrap();
    let (addr, seen) = scripted(move |r| match r {
        Ok((_, Request::ApiVersions(_))) => Answer::Respond(versions(&[
            (ApiKey::ApiVersions, 0, 4),
            (ApiKey::Fetch, 4, 17),
        ])),
        Ok((_, Request::Fetch(req))) => {
            let topic = &req.topics[0];
            // Echo how the topic was named, so the client must match on the same key.
            Answer::Respond(Response::Fetch(FetchResponse {
                responses: vec![FetchableTopicResponse {
                    topic: topic.topic.clone(),
                    topic_id: topic.topic_id,
                    partitions: vec![PartitionData {
                        partition_index: topic.partitions[0].partition,
                        high_watermark: 42,
                        log_start_offset: 0,
                        records: Some(batch.clone().into()),
                        ..PartitionData::default()
                    }],
                    ..FetchableTopicResponse::default()
                }],
                ..FetchResponse::default()
            }))
        }
        _ => Answer::Hangup,
    });
    let mut client = Client::connect(&addr, config()).unwrap();
    let options = FetchOptions {
        max_wait_ms: 0,
        ..FetchOptions::default()
    };
    let by_name = TopicRef {
        name: "t".into(),
        id: Uuid::ZERO,
    };
    let got = client.fetch(&by_name, &[(3, 41)], options).unwrap();
    assert_eq!(got[0].partition, 3);
    assert_eq!(got[0].high_watermark, 42);
    assert_eq!(got[0].next_offset, 42);
    let values: Vec<_> = got[0].records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, vec![Some(Bytes::from_static(b"v41"))]);

    let by_id = TopicRef {
        name: "t".into(),
        id: Uuid([7; 16]),
    };
    let got = client.fetch(&by_id, &[(3, 40)], options).unwrap();
    assert_eq!(got[0].records.len(), 2);
    let versions_sent: Vec<(i16, i16)> = seen.try_iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        versions_sent,
        vec![
            (18, 3),
            (ApiKey::Fetch as i16, 12),
            (ApiKey::Fetch as i16, 17)
        ]
    );
}
