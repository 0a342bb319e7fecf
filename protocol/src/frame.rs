//! Whole frames: the 4-byte size prefix, request/response headers and typed bodies.
//!
//! This is the API the server uses: [`check_frame_len`] before reading a frame body,
//! [`decode_request`] on the body, [`encode_response`] for the answer. A request decode error
//! keeps whatever header it managed to read (always the api key, version and correlation id
//! once 8 bytes are present), so the server can answer an unsupported ApiVersions version in
//! the v0 format (KIP-511) and log which API failed. Runs on the connection's core.
//!
//! ```text
//! frame          = size:i32 (bytes that follow) | header | body
//! request header = api_key:i16 api_version:i16 correlation_id:i32
//!                  [v1+ client_id: nullable i16 string, never compact] [v2+ tagged fields]
//! response header= correlation_id:i32 [v1+ tagged fields]
//! ```

use bytes::Bytes;
use thiserror::Error;

use crate::api::{ApiKey, Request, Response};
use crate::codec::{Decoder, EncodedFrame, Encoder};
use crate::error::{DecodeError, EncodeError};
pub use crate::messages::request_header::RequestHeader;
pub use crate::messages::response_header::ResponseHeader;

/// Largest request frame accepted by default (Kafka's `socket.request.max.bytes`).
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// `records` values at least this large are sent as their own chunk by [`encode_response`]
/// instead of being copied into the response skeleton.
pub const VECTORED_RECORDS_MIN_BYTES: usize = 4096;

/// A frame's size prefix is unacceptable; the connection must be closed without reading on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("negative frame size {len}")]
    Negative { len: i32 },
    #[error("frame size {len} exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Validates a frame's size prefix before its body is read; returns the body length.
pub fn check_frame_len(len: i32, max: usize) -> Result<usize, FrameError> {
    let n = usize::try_from(len).map_err(|_| FrameError::Negative { len })?;
    if n > max {
        return Err(FrameError::TooLarge { len: n, max });
    }
    Ok(n)
}

/// The fixed first 8 bytes of every request header, readable before anything can go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// A request frame could not be decoded; carries as much of the header as was read.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RequestDecodeError {
    #[error("frame of {len} bytes is too short for a request header")]
    TooShort { len: usize },
    #[error("unknown api key {} (correlation id {})", prefix.api_key, prefix.correlation_id)]
    UnknownApiKey { prefix: HeaderPrefix },
    #[error("{api:?} version {} is not supported (correlation id {})", prefix.api_version, prefix.correlation_id)]
    UnsupportedVersion { api: ApiKey, prefix: HeaderPrefix },
    #[error("{api:?} v{} request header (correlation id {}): {source}", prefix.api_version, prefix.correlation_id)]
    Header {
        api: ApiKey,
        prefix: HeaderPrefix,
        #[source]
        source: DecodeError,
    },
    #[error("{api:?} v{} request body (correlation id {}): {source}", header.request_api_version, header.correlation_id)]
    Body {
        api: ApiKey,
        header: RequestHeader,
        #[source]
        source: DecodeError,
    },
}

impl RequestDecodeError {
    /// The header's fixed prefix, when the frame had at least 8 bytes.
    pub fn prefix(&self) -> Option<HeaderPrefix> {
        match self {
            RequestDecodeError::TooShort { .. } => None,
            RequestDecodeError::UnknownApiKey { prefix }
            | RequestDecodeError::UnsupportedVersion { prefix, .. }
            | RequestDecodeError::Header { prefix, .. } => Some(*prefix),
            RequestDecodeError::Body { header, .. } => Some(HeaderPrefix {
                api_key: header.request_api_key,
                api_version: header.request_api_version,
                correlation_id: header.correlation_id,
            }),
        }
    }

    /// The correlation id to answer with, when known.
    pub fn correlation_id(&self) -> Option<i32> {
        self.prefix().map(|p| p.correlation_id)
    }

    /// The API, when the key is one we know.
    pub fn api(&self) -> Option<ApiKey> {
        match self {
            RequestDecodeError::TooShort { .. } | RequestDecodeError::UnknownApiKey { .. } => None,
            RequestDecodeError::UnsupportedVersion { api, .. }
            | RequestDecodeError::Header { api, .. }
            | RequestDecodeError::Body { api, .. } => Some(*api),
        }
    }
}

/// Decodes a request frame body (the bytes after the size prefix). Record data in the
/// result shares `frame`'s memory.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, Request), RequestDecodeError> {
    let len = frame.len();
    let prefix = match frame.get(..8) {
        Some(p) => HeaderPrefix {
            api_key: i16::from_be_bytes([p[0], p[1]]),
            api_version: i16::from_be_bytes([p[2], p[3]]),
            correlation_id: i32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        },
        None => return Err(RequestDecodeError::TooShort { len }),
    };
    let api =
        ApiKey::from_i16(prefix.api_key).ok_or(RequestDecodeError::UnknownApiKey { prefix })?;
    if !api.supports(prefix.api_version) {
        return Err(RequestDecodeError::UnsupportedVersion { api, prefix });
    }
    let mut d = Decoder::new(frame);
    let header = RequestHeader::decode(&mut d, api.request_header_version(prefix.api_version))
        .map_err(|source| RequestDecodeError::Header {
            api,
            prefix,
            source,
        })?;
    // Trailing bytes after a request body are ignored, as Kafka's broker ignores them: real
    // clients send them. librdkafka (2.x, at least through 2.16) reserves four bytes for a
    // compact array count and, for a Metadata v9+ request for all topics, leaves the unused
    // three bytes in the frame; a broker that insisted on an exact fit would refuse it.
    let body = Request::decode(api, &mut d, prefix.api_version);
    match body {
        Ok(body) => Ok((header, body)),
        Err(source) => Err(RequestDecodeError::Body {
            api,
            header,
            source,
        }),
    }
}

/// Encodes a request frame, size prefix included (for our load generator and CLI).
pub fn encode_request(
    correlation_id: i32,
    api_version: i16,
    client_id: Option<&str>,
    body: &Request,
) -> Result<EncodedFrame, EncodeError> {
    let api = body.api_key();
    let header = RequestHeader {
        request_api_key: api as i16,
        request_api_version: api_version,
        correlation_id,
        client_id: client_id.map(str::to_owned),
        unknown_tagged_fields: Vec::new(),
    };
    let mut e = Encoder::new();
    e.reserve(4 + 64 + body.encoded_size(api_version));
    e.i32(0);
    header.encode(&mut e, api.request_header_version(api_version))?;
    body.encode(&mut e, api_version)?;
    finish_frame(e, "RequestHeader")
}

/// Encodes a response frame, size prefix included. Large `records` values (Fetch) become
/// their own chunks, not copies; the size prefix counts every chunk.
pub fn encode_response(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
) -> Result<EncodedFrame, EncodeError> {
    encode_response_with(
        correlation_id,
        api_version,
        response,
        VECTORED_RECORDS_MIN_BYTES,
    )
}

/// [`encode_response`] with an explicit split threshold (`usize::MAX` = one contiguous chunk).
pub fn encode_response_with(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
    split_threshold: usize,
) -> Result<EncodedFrame, EncodeError> {
    let api = response.api_key();
    let header = ResponseHeader {
        correlation_id,
        unknown_tagged_fields: Vec::new(),
    };
    let mut e = Encoder::vectored(split_threshold);
    // The skeleton is small when records are split off; reserve for all of it otherwise.
    let estimate = if split_threshold == usize::MAX {
        response.encoded_size(api_version)
    } else {
        256
    };
    e.reserve(4 + 8 + estimate);
    e.i32(0);
    header.encode(&mut e, api.response_header_version(api_version))?;
    response.encode(&mut e, api_version)?;
    finish_frame(e, "ResponseHeader")
}

/// Decodes a response frame body (after the size prefix) for a request we sent.
pub fn decode_response(
    api: ApiKey,
    api_version: i16,
    frame: Bytes,
) -> Result<(ResponseHeader, Response), DecodeError> {
    let mut d = Decoder::new(frame);
    let header = ResponseHeader::decode(&mut d, api.response_header_version(api_version))?;
    let body = Response::decode(api, &mut d, api_version)?;
    d.finish().map_err(|e| e.at("Response"))?;
    Ok((header, body))
}

fn finish_frame(mut e: Encoder, what: &'static str) -> Result<EncodedFrame, EncodeError> {
    let body_len = e.len() - 4;
    let prefix = i32::try_from(body_len).map_err(|_| EncodeError::TooLong {
        field: what,
        len: body_len,
    })?;
    if !e.patch_prefix(prefix) {
        // Unreachable by construction: the prefix placeholder is written before anything
        // can split the buffer. Reported as an error rather than a panic all the same.
        return Err(EncodeError::TooLong {
            field: what,
            len: body_len,
        });
    }
    Ok(e.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::api_versions_request::ApiVersionsRequest;
    use crate::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
    use crate::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
    use crate::messages::produce_request::{
        PartitionProduceData, ProduceRequest, TopicProduceData,
    };
    use crate::records::{FileRange, Records, RecordsPiece};

    fn body(frame: &EncodedFrame) -> Bytes {
        let flat = frame.to_contiguous();
        let len = i32::from_be_bytes([flat[0], flat[1], flat[2], flat[3]]);
        assert_eq!(len as usize, flat.len() - 4);
        flat.slice(4..)
    }

    #[test]
    fn frame_length_limits() {
        assert_eq!(check_frame_len(10, MAX_FRAME_BYTES), Ok(10));
        assert_eq!(
            check_frame_len(-1, MAX_FRAME_BYTES),
            Err(FrameError::Negative { len: -1 })
        );
        assert_eq!(
            check_frame_len(i32::MAX, MAX_FRAME_BYTES),
            Err(FrameError::TooLarge {
                len: i32::MAX as usize,
                max: MAX_FRAME_BYTES
            })
        );
    }

    #[test]
    fn produce_request_round_trips_zero_copy() {
        let records = Bytes::from(vec![0xab; 1000]);
        let req = ProduceRequest {
            transactional_id: None,
            acks: -1,
            timeout_ms: 30_000,
            topic_data: vec![TopicProduceData {
                name: "events".into(),
                partition_data: vec![PartitionProduceData {
                    index: 3,
                    records: Some(records.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        for version in [3, 8, 9, 11] {
            let frame =
                encode_request(7, version, Some("client-1"), &Request::Produce(req.clone()))
                    .unwrap();
            let b = body(&frame);
            let (header, decoded) = decode_request(b.clone()).unwrap();
            assert_eq!(header.correlation_id, 7);
            assert_eq!(header.client_id.as_deref(), Some("client-1"));
            let Request::Produce(p) = decoded else {
                panic!("wrong variant")
            };
            assert_eq!(p, req);
            let got = p.topic_data[0].partition_data[0].records.as_ref().unwrap();
            // The records are a slice of the frame, not a copy.
            let start = b.as_ptr() as usize;
            assert!(got.as_ptr() as usize >= start && (got.as_ptr() as usize) < start + b.len());
        }
    }

    #[test]
    fn unsupported_api_versions_keeps_correlation_id() {
        // An ApiVersions v99 request from a future client: header v2 with tagged fields.
        let mut e = Encoder::new();
        e.i16(18);
        e.i16(99);
        e.i32(1234);
        e.nullable_string(Some("future"), false).unwrap();
        e.uvarint(0);
        let err = decode_request(e.finish_contiguous()).unwrap_err();
        assert_eq!(
            err,
            RequestDecodeError::UnsupportedVersion {
                api: ApiKey::ApiVersions,
                prefix: HeaderPrefix {
                    api_key: 18,
                    api_version: 99,
                    correlation_id: 1234
                }
            }
        );
        assert_eq!(err.correlation_id(), Some(1234));
    }

    #[test]
    fn api_versions_response_header_is_always_v0() {
        let resp = ApiVersionsResponse {
            error_code: 0,
            api_keys: vec![ApiVersion {
                api_key: 0,
                min_version: 0,
                max_version: 11,
                ..Default::default()
            }],
            ..Default::default()
        };
        let frame = encode_response(5, 3, &Response::ApiVersions(resp.clone())).unwrap();
        let b = body(&frame);
        // correlation id immediately followed by the v3 body (error code), no tagged-field byte.
        assert_eq!(&b[..6], &[0, 0, 0, 5, 0, 0]);
        let (h, r) = decode_response(ApiKey::ApiVersions, 3, b).unwrap();
        assert_eq!(h.correlation_id, 5);
        assert_eq!(r, Response::ApiVersions(resp));
    }

    #[test]
    fn api_versions_request_v3_uses_header_v2() {
        let req = ApiVersionsRequest {
            client_software_name: "x".into(),
            client_software_version: "1".into(),
            ..Default::default()
        };
        let frame = encode_request(9, 3, None, &Request::ApiVersions(req.clone())).unwrap();
        let b = body(&frame);
        // key, version, correlation id, null client id (classic i16 -1), empty tagged fields.
        assert_eq!(&b[..11], &[0, 18, 0, 3, 0, 0, 0, 9, 0xff, 0xff, 0]);
        let (_, decoded) = decode_request(b).unwrap();
        assert_eq!(decoded, Request::ApiVersions(req));
    }

    #[test]
    fn fetch_response_records_are_separate_chunks() {
        let blobs: Vec<Bytes> = (0..3).map(|i| Bytes::from(vec![i as u8; 8192])).collect();
        let resp = FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: "t".into(),
                partitions: blobs
                    .iter()
                    .enumerate()
                    .map(|(i, b)| PartitionData {
                        partition_index: i as i32,
                        records: Some(b.clone().into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        for version in [4, 11, 12, 16] {
            let frame = encode_response(1, version, &Response::Fetch(resp.clone())).unwrap();
            for b in &blobs {
                assert!(
                    frame
                        .chunks
                        .iter()
                        .any(|c| c.as_ptr() == b.as_ptr() && c.len() == b.len()),
                    "v{version}"
                );
            }
            let (_, decoded) = decode_response(ApiKey::Fetch, version, body(&frame)).unwrap();
            let Response::Fetch(f) = decoded else {
                panic!("wrong variant")
            };
            assert_eq!(f.responses[0].partitions.len(), 3);
            assert_eq!(
                f.responses[0].partitions[2].records.as_ref(),
                Some(&Records::from(blobs[2].clone()))
            );
            let contiguous =
                encode_response_with(1, version, &Response::Fetch(resp.clone()), usize::MAX)
                    .unwrap();
            assert_eq!(contiguous.chunks.len(), 1);
            assert_eq!(contiguous.to_contiguous(), frame.to_contiguous());
        }
    }

    #[test]
    fn fetch_response_file_ranges_are_referenced_in_order() {
        // The codec never reads the file; any open file will do.
        let file = std::sync::Arc::new(std::fs::File::open("Cargo.toml").unwrap());
        let range = FileRange {
            file,
            offset: 100,
            len: 5000,
        };
        let big = Bytes::from(vec![1u8; 8192]);
        let small = Bytes::from_static(b"tiny");
        let records = Records::from_pieces(vec![
            RecordsPiece::Bytes(small.clone()),
            RecordsPiece::File(range.clone()),
            RecordsPiece::Bytes(big.clone()),
        ]);
        let resp = FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: "t".into(),
                partitions: vec![PartitionData {
                    records: Some(records),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        for version in [4, 12, 16] {
            let frame = encode_response(1, version, &Response::Fetch(resp.clone())).unwrap();
            assert_eq!(frame.files.len(), 1);
            let (at, got) = &frame.files[0];
            assert_eq!(got, &range);
            // The skeleton (with the small piece copied in) precedes the range; the large
            // buffer follows it as its own chunk.
            assert!(frame.chunks[..*at].iter().any(|c| c.ends_with(b"tiny")));
            assert_eq!(frame.chunks[*at].as_ptr(), big.as_ptr());
            let prefix = i32::from_be_bytes(frame.chunks[0][..4].try_into().unwrap());
            assert_eq!(prefix as usize, frame.len() - 4);
            let without =
                encode_response(1, version, &Response::Fetch(FetchResponse::default())).unwrap();
            assert!(frame.len() > without.len() + 4 + 5000 + 8192);
        }
    }

    #[test]
    fn header_tables() {
        assert_eq!(ApiKey::Produce.request_header_version(8), 1);
        assert_eq!(ApiKey::Produce.request_header_version(9), 2);
        assert_eq!(ApiKey::Produce.response_header_version(9), 1);
        assert_eq!(ApiKey::ApiVersions.request_header_version(3), 2);
        assert_eq!(ApiKey::ApiVersions.response_header_version(3), 0);
        assert_eq!(ApiKey::from_i16(18), Some(ApiKey::ApiVersions));
        assert_eq!(ApiKey::from_i16(-5), None);
        for info in crate::API_TABLE {
            assert_eq!(info.key.info(), info);
            assert_eq!(ApiKey::from_i16(info.key as i16), Some(info.key));
        }
    }

    #[test]
    fn encoding_absent_non_ignorable_field_is_an_error() {
        // ProduceRequest.transactional_id exists from v3 and is not ignorable.
        let req = ProduceRequest {
            transactional_id: Some("tx".into()),
            ..Default::default()
        };
        let err = encode_request(1, 2, None, &Request::Produce(req)).unwrap_err();
        assert_eq!(
            err,
            EncodeError::FieldNotInVersion {
                field: "ProduceRequest.transactional_id",
                version: 2
            }
        );
    }
}
