//! Any bytes as a request frame body. Decoding must not panic; whatever decodes must
//! re-encode at the same version, decode again, and re-encode to the same bytes (bytes, not
//! values, are compared so that a NaN float cannot cause a false alarm).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::{decode_request, encode_request};

fuzz_target!(|data: &[u8]| {
    let Ok((header, body)) = decode_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encode = |body| match encode_request(header.correlation_id, header.request_api_version, header.client_id.as_deref(), body) {
        Ok(frame) => frame.to_contiguous(),
        Err(e) => panic!("a decoded request failed to re-encode: {e}"),
    };
    let first = encode(&body);
    let again = match decode_request(first.slice(4..)) {
        Ok((_, again)) => again,
        Err(e) => panic!("a re-encoded request failed to decode: {e}"),
    };
    assert_eq!(encode(&again), first, "re-encoding is not stable");
});
