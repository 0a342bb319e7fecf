//! Any bytes as a request header (v0-v2) and a response header (v0-v1).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::{Decoder, RequestHeader, ResponseHeader};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    for version in 0..=2 {
        let _ = RequestHeader::decode(&mut Decoder::new(frame.clone()), version);
    }
    for version in 0..=1 {
        let _ = ResponseHeader::decode(&mut Decoder::new(frame.clone()), version);
    }
});
