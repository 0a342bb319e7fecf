//! Any bytes as a response body: the first two bytes pick the API and version, the rest is
//! the frame after the size prefix. Decoding must not panic; whatever decodes must
//! re-encode, decode again, and re-encode to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::{decode_response, encode_response, ApiKey};

fuzz_target!(|data: &[u8]| {
    let [pick, v, rest @ ..] = data else {
        return;
    };
    let api = ApiKey::ALL[usize::from(*pick) % ApiKey::ALL.len()];
    let info = api.info();
    let span = (info.max_version - info.min_version + 1) as u8;
    let version = info.min_version + i16::from(*v % span);
    let Ok((header, body)) = decode_response(api, version, Bytes::copy_from_slice(rest)) else {
        return;
    };
    let encode = |body| match encode_response(header.correlation_id, version, body) {
        Ok(frame) => frame.to_contiguous(),
        Err(e) => panic!("a decoded response failed to re-encode: {e}"),
    };
    let first = encode(&body);
    let again = match decode_response(api, version, first.slice(4..)) {
        Ok((_, again)) => again,
        Err(e) => panic!("a re-encoded response failed to decode: {e}"),
    };
    assert_eq!(encode(&again), first, "re-encoding is not stable");
});
