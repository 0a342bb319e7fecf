//! Property tests: any records built into a batch with any codec iterate back identical, and
//! arbitrary or mangled bytes never make the records iterator or the decompressors panic or
//! return more than the cap.

// A test crate: a failed unwrap in a helper is a failed test, which is what we want.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use sluice_engine::builder::{self, BatchBuilder, Rewrite};
use sluice_engine::compression::{self, Codec};
use sluice_engine::records::{decode_records, validate_records, Header, RecordChecks, RecordIter};

const MAX_OUT: usize = 4 << 20;

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        // Wide enough for negative deltas and multi-byte varlongs, far from overflow.
        -(1i64 << 42)..(1i64 << 42),
        prop::option::of(bytes(40)),
        prop::option::of(prop_oneof![bytes(300), Just(vec![b'x'; 2000])]),
        prop::collection::vec((bytes(12), prop::option::of(bytes(20))), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| Rec {
            timestamp,
            key,
            value,
            headers,
        })
}

fn codec() -> impl Strategy<Value = Codec> {
    prop::sample::select(Codec::ALL.to_vec())
}

fn build(records: &[Rec], codec: Codec, producer: (i64, i16, i32)) -> bytes::Bytes {
    let mut b = BatchBuilder::new(codec).producer(producer.0, producer.1, producer.2);
    for r in records {
        let headers: Vec<Header<'_>> = r
            .headers
            .iter()
            .map(|(k, v)| Header {
                key: k,
                value: v.as_deref(),
            })
            .collect();
        b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers)
            .unwrap();
    }
    b.build().unwrap()
}

fn decode(batch: &[u8]) -> Vec<Rec> {
    assert_eq!(
        builder::batch_crc(batch),
        Some(u32::from_be_bytes(batch[17..21].try_into().unwrap()))
    );
    let attributes = i16::from_be_bytes(batch[21..23].try_into().unwrap());
    let base = i64::from_be_bytes(batch[27..35].try_into().unwrap());
    let max = i64::from_be_bytes(batch[35..43].try_into().unwrap());
    let count = i32::from_be_bytes(batch[57..61].try_into().unwrap());
    let decoded = decode_records(attributes, &batch[61..], count, MAX_OUT).unwrap();
    let summary = validate_records(decoded.iter(), base, &RecordChecks::default()).unwrap();
    assert_eq!(summary.max_timestamp, max);
    decoded
        .iter()
        .map(|r| {
            let r = r.unwrap();
            Rec {
                timestamp: r.timestamp(base).unwrap(),
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers: r
                    .headers()
                    .map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))
                    .collect(),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn built_batches_iterate_back_identical(
        records in prop::collection::vec(rec(), 1..40),
        codec in codec(),
        producer in (any::<i64>(), any::<i16>(), any::<i32>()),
    ) {
        let batch = build(&records, codec, producer);
        prop_assert_eq!(decode(&batch), records.clone());
        // Recompressing into any other codec keeps the records too.
        for target in Codec::ALL {
            let rw = Rewrite { codec: target, level: None, log_append_time_ms: None, max_out: MAX_OUT };
            let out = builder::rewrite(&batch, &rw).unwrap();
            prop_assert_eq!(decode(&out), records.clone());
        }
    }

    #[test]
    fn random_bytes_never_panic_the_iterator(data in bytes(600), count in any::<i32>()) {
        let mut yielded = 0usize;
        let mut errors = 0usize;
        for item in RecordIter::new(&data, count) {
            match item {
                Ok(r) => { yielded += 1; prop_assert!(r.encoded_len() >= 7); }
                Err(_) => errors += 1,
            }
        }
        prop_assert!(errors <= 1);
        prop_assert!(yielded <= data.len() / 7);
    }

    #[test]
    fn random_bytes_never_panic_the_decompressors(data in bytes(2000), codec in codec(), cap in 0usize..100_000) {
        if let Ok(out) = compression::decompress(codec, &data, cap) {
            prop_assert!(out.len() <= cap);
        }
    }

    #[test]
    fn mangled_batches_fail_cleanly(
        records in prop::collection::vec(rec(), 1..10),
        codec in codec(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let batch = build(&records, codec, (-1, -1, -1));
        let mut section = batch[61..].to_vec();
        for (at, byte) in flips {
            let i = at.index(section.len());
            section[i] ^= byte;
        }
        if truncate {
            section.truncate(cut.index(section.len()));
        }
        let attributes = i16::from(codec.id());
        let count = records.len() as i32;
        if let Ok(decoded) = decode_records(attributes, &section, count, 64 << 10) {
            prop_assert!(decoded.bytes().len() <= 64 << 10);
            let _ = validate_records(decoded.iter(), 0, &RecordChecks { require_keys: true, timestamp_range: Some((0, 1)) });
            for item in decoded.iter() { let _ = item; }
        }
    }

    #[test]
    fn compression_round_trips(data in prop_oneof![bytes(5000), bytes(50).prop_map(|b| b.repeat(3000))], codec in codec()) {
        let packed = compression::compress(codec, &data, None).unwrap();
        prop_assert!(packed.len() <= compression::compress_bound(codec, data.len()));
        prop_assert_eq!(compression::decompress(codec, &packed, data.len()).unwrap(), data);
    }
}
