//! Batches produced by real clients decode byte-exact against their manifests, and survive
//! re-encoding with our builder and recompression into every codec:
//! - tests/fixtures/: kafka-python's batch builder, plus other clients' framings of the same
//!   records (tests/fixtures_gen/kafka_python_batches.py);
//! - tests/fixtures/librdkafka/: batches as confluent-kafka and kcat (two librdkafka versions)
//!   sent them to a Sluice broker, with the expected records as confluent-kafka's consumer
//!   decoded them (tests/fixtures_gen/librdkafka_batches.py).

// A test crate: a failed unwrap in a helper is a failed test, which is what we want.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::Value;
use sluice_engine::builder::{self, BatchBuilder, Rewrite};
use sluice_engine::compression::Codec;
use sluice_engine::records::{decode_records, validate_records, Header, RecordChecks};

const MAX_OUT: usize = 16 << 20;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn manifest() -> Value {
    read_manifest(&fixtures_dir())
}

fn read_manifest(dir: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every corpus: (directory, manifest).
fn corpora() -> Vec<(PathBuf, Value)> {
    [fixtures_dir(), fixtures_dir().join("librdkafka")]
        .into_iter()
        .map(|dir| {
            let m = read_manifest(&dir);
            (dir, m)
        })
        .collect()
}

fn hex(v: &Value) -> Option<Vec<u8>> {
    let s = v.as_str()?;
    Some(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect(),
    )
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// One expected record from the manifest, owned.
#[derive(Debug, PartialEq)]
struct Expected {
    offset_delta: i32,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn expected_records(manifest: &Value, set: &str) -> Vec<Expected> {
    manifest["record_sets"][set]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Expected {
            offset_delta: r["offset_delta"].as_i64().unwrap() as i32,
            timestamp: r["timestamp"].as_i64().unwrap(),
            key: hex(&r["key"]),
            value: hex(&r["value"]),
            headers: r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (hex(&h[0]).unwrap(), hex(&h[1])))
                .collect(),
        })
        .collect()
}

/// Decodes a batch with our code into owned records, checking the header against itself.
fn decode_batch(batch: &[u8]) -> Vec<Expected> {
    assert_eq!(be_i32(batch, 8) as usize, batch.len() - 12, "batchLength");
    assert_eq!(batch[16], 2, "magic");
    assert_eq!(
        builder::batch_crc(batch),
        Some(be_i32(batch, 17) as u32),
        "crc"
    );
    let attributes = be_i16(batch, 21);
    let base_timestamp = be_i64(batch, 27);
    let count = be_i32(batch, 57);
    let decoded = decode_records(attributes, &batch[61..], count, MAX_OUT).unwrap();
    let summary =
        validate_records(decoded.iter(), base_timestamp, &RecordChecks::default()).unwrap();
    assert_eq!(summary.count as i32, count);
    assert_eq!(
        summary.last_offset_delta,
        be_i32(batch, 23),
        "lastOffsetDelta"
    );
    assert_eq!(summary.max_timestamp, be_i64(batch, 35), "maxTimestamp");
    decoded
        .iter()
        .map(|r| {
            let r = r.unwrap();
            Expected {
                offset_delta: r.offset_delta,
                timestamp: r.timestamp(base_timestamp).unwrap(),
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

fn rebuild(records: &[Expected], codec: Codec, fixture: &Value) -> bytes::Bytes {
    let mut b = BatchBuilder::new(codec)
        .producer(
            fixture["producer_id"].as_i64().unwrap(),
            fixture["producer_epoch"].as_i64().unwrap() as i16,
            fixture["base_sequence"].as_i64().unwrap() as i32,
        )
        .partition_leader_epoch(0)
        .transactional(fixture["transactional"].as_bool().unwrap());
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

#[test]
fn every_fixture_decodes_byte_exact() {
    let corpora = corpora();
    let kafka_python = &corpora[0].1;
    assert!(
        kafka_python["fixtures"].as_array().unwrap().len() >= 20,
        "kafka-python corpus is incomplete"
    );
    let librdkafka = &corpora[1].1;
    let sources: std::collections::HashSet<&str> = librdkafka["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources.len(),
        2,
        "confluent-kafka and kcat batches expected"
    );
    for (dir, manifest) in &corpora {
        check_corpus(dir, manifest);
    }
}

fn check_corpus(dir: &std::path::Path, manifest: &Value) {
    let fixtures = manifest["fixtures"].as_array().unwrap();
    let mut codecs_seen = std::collections::HashSet::new();
    for fixture in fixtures {
        let file = fixture["file"].as_str().unwrap();
        let batch = std::fs::read(dir.join(file)).unwrap();
        let codec = Codec::from_name(fixture["codec"].as_str().unwrap()).unwrap();
        codecs_seen.insert(codec);
        let attributes = be_i16(&batch, 21);
        assert_eq!(Codec::from_attributes(attributes).unwrap(), codec, "{file}");
        assert_eq!(
            attributes & 0x10 != 0,
            fixture["transactional"].as_bool().unwrap(),
            "{file}"
        );
        assert_eq!(
            be_i64(&batch, 43),
            fixture["producer_id"].as_i64().unwrap(),
            "{file}"
        );
        assert_eq!(
            i64::from(be_i16(&batch, 51)),
            fixture["producer_epoch"].as_i64().unwrap()
        );
        assert_eq!(
            i64::from(be_i32(&batch, 53)),
            fixture["base_sequence"].as_i64().unwrap()
        );
        assert_eq!(
            be_i64(&batch, 27),
            fixture["base_timestamp"].as_i64().unwrap(),
            "{file}"
        );
        assert_eq!(
            be_i64(&batch, 35),
            fixture["max_timestamp"].as_i64().unwrap(),
            "{file}"
        );
        let expected = expected_records(manifest, fixture["record_set"].as_str().unwrap());
        assert_eq!(decode_batch(&batch), expected, "{file}");
    }
    if dir == fixtures_dir() {
        assert_eq!(codecs_seen.len(), Codec::ALL.len());
    }
}

#[test]
fn our_builder_reencodes_every_fixture() {
    for (dir, manifest) in corpora() {
        reencode_corpus(&dir, &manifest);
    }
}

fn reencode_corpus(dir: &std::path::Path, manifest: &Value) {
    for fixture in manifest["fixtures"].as_array().unwrap() {
        let file = fixture["file"].as_str().unwrap();
        let original = std::fs::read(dir.join(file)).unwrap();
        let expected = expected_records(manifest, fixture["record_set"].as_str().unwrap());
        for codec in Codec::ALL {
            let ours = rebuild(&expected, codec, fixture);
            assert_eq!(decode_batch(&ours), expected, "{file} rebuilt as {codec}");
            if codec == Codec::None && fixture["codec"] == "none" {
                // Uncompressed, the format leaves no freedom: we must match the client exactly.
                assert_eq!(&ours[..], &original[..], "{file}");
            }
        }
    }
}

#[test]
fn every_fixture_recompresses_into_every_codec() {
    for (dir, manifest) in corpora() {
        recompress_corpus(&dir, &manifest);
    }
}

fn recompress_corpus(dir: &std::path::Path, manifest: &Value) {
    for fixture in manifest["fixtures"].as_array().unwrap() {
        let file = fixture["file"].as_str().unwrap();
        let original = std::fs::read(dir.join(file)).unwrap();
        let expected = expected_records(manifest, fixture["record_set"].as_str().unwrap());
        for codec in Codec::ALL {
            let rewrite = Rewrite {
                codec,
                level: None,
                log_append_time_ms: None,
                max_out: MAX_OUT,
            };
            let out = builder::rewrite(&original, &rewrite).unwrap();
            assert_eq!(Codec::from_attributes(be_i16(&out, 21)).unwrap(), codec);
            assert_eq!(decode_batch(&out), expected, "{file} -> {codec}");
        }
    }
}

#[test]
fn log_append_time_keeps_records_and_fixes_crc() {
    let manifest = manifest();
    let fixture = &manifest["fixtures"][0];
    let mut batch = std::fs::read(fixtures_dir().join(fixture["file"].as_str().unwrap())).unwrap();
    builder::set_log_append_time(&mut batch, 1_800_000_000_000).unwrap();
    assert_eq!(be_i16(&batch, 21) & 0x08, 0x08);
    assert_eq!(be_i64(&batch, 35), 1_800_000_000_000);
    assert_eq!(builder::batch_crc(&batch), Some(be_i32(&batch, 17) as u32));
}
