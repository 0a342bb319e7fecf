//! Every API at every version through the frame layer: a request body goes through
//! `encode_request`/`decode_request` and a response through `encode_response`/
//! `decode_response` (header versions included, ApiVersions' v0 response header too), and
//! comes back equal. The bodies are minimal ones, so this checks the frame plumbing and the
//! `Request`/`Response` enums for all APIs; field-level coverage is the oracle test's job.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use sluice_protocol::{
    decode_request, decode_response, encode_request, encode_response, ApiKey, Decoder, EncodeError,
    Request, Response,
};

/// Minimal bodies of `api` at `version`, or None if the filler search below finds none.
fn default_bodies(api: ApiKey, version: i16) -> Option<(Request, Response)> {
    let req = Request::decode(
        api,
        &mut Decoder::new(min_encoding(api, version, true)?),
        version,
    )
    .ok()?;
    let resp = Response::decode(
        api,
        &mut Decoder::new(min_encoding(api, version, false)?),
        version,
    )
    .ok()?;
    Some((req, resp))
}

/// The shortest run of filler bytes that decodes exactly as a body: zeros make numbers zero
/// and classic strings and arrays empty; in flexible versions the filler is 1, so compact
/// lengths mean "empty" rather than "null" and tagged sections are short. (The enums have no
/// `Default`, and this also exercises `Request::decode`/`Response::decode` for every API.)
fn min_encoding(api: ApiKey, version: i16, request: bool) -> Option<Bytes> {
    let filler = if api.is_flexible(version) { 1u8 } else { 0u8 };
    for len in 0..512 {
        let body = Bytes::from(vec![filler; len]);
        let mut d = Decoder::new(body.clone());
        let ok = if request {
            Request::decode(api, &mut d, version).is_ok()
        } else {
            Response::decode(api, &mut d, version).is_ok()
        };
        if ok && d.remaining() == 0 {
            return Some(body);
        }
    }
    None
}

#[test]
fn every_api_and_version_round_trips_through_frames() {
    let (mut checked, mut skipped) = (0, Vec::new());
    for &api in ApiKey::ALL {
        let info = api.info();
        for version in info.min_version..=info.max_version {
            let Some((req, resp)) = default_bodies(api, version) else {
                skipped.push(format!("{api:?} v{version}"));
                continue;
            };
            let frame = match encode_request(42, version, Some("every-api"), &req) {
                Ok(f) => f.to_contiguous(),
                Err(EncodeError::NullNotAllowed { .. }) => {
                    skipped.push(format!("{api:?} v{version}"));
                    continue;
                }
                Err(e) => panic!("{api:?} v{version}: {e}"),
            };
            let (header, back) = decode_request(frame.slice(4..))
                .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
            assert_eq!(header.correlation_id, 42);
            assert_eq!(header.request_api_key, api as i16);
            assert_eq!(back, req, "{api:?} v{version}");

            let frame = encode_response(43, version, &resp)
                .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"))
                .to_contiguous();
            let (header, back) = decode_response(api, version, frame.slice(4..))
                .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
            assert_eq!(header.correlation_id, 43);
            assert_eq!(back, resp, "{api:?} v{version}");
            checked += 1;
        }
    }
    println!("{checked} api versions round-tripped through frames; skipped: {skipped:?}");
    assert!(
        skipped.len() * 20 < checked,
        "too many skipped: {skipped:?}"
    );
}
