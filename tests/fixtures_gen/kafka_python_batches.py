#!/usr/bin/env python3
"""Generate the record-batch fixture corpus in engine/tests/fixtures/.

Batches come from kafka-python's own producer-side batch builder
(kafka.record.default_records.DefaultRecordBatchBuilder), used offline: no broker is needed.
Each record set is written once per codec exactly as kafka-python sends it. A few "variant"
batches then re-frame the same records in encodings other clients produce (raw snappy as
librdkafka writes it, LZ4 with block and content checksums, LZ4 linked blocks, several
concatenated zstd frames without a content size, multi-member gzip), so the decoder is tested
against every framing we claim to accept.

The expected records go to manifest.json (bytes as hex, null as JSON null). Run from anywhere:

    pip install -r tests/requirements.txt
    python3 tests/fixtures_gen/kafka_python_batches.py

The output is deterministic except for the codecs' own choices, and it is committed, so the
Rust tests never need Python.
"""

import gzip
import json
import pathlib
import struct

import lz4.frame
import snappy
import zstandard
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

OUT = pathlib.Path(__file__).resolve().parents[2] / "engine" / "tests" / "fixtures"

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

# Header field offsets of a v2 batch (see engine/src/builder.rs).
BATCH_LENGTH_AT = 8
CRC_AT = 17
ATTRIBUTES_AT = 21
HEADER_BYTES = 61

BASE_TS = 1_700_000_000_000

LOREM = (b"Sluice stores record batches exactly as clients send them. " * 40)


def record(offset, ts, key, value, headers=()):
    return {"offset": offset, "timestamp": ts, "key": key, "value": value,
            "headers": list(headers)}


def mixed_records():
    """Keys and values in every shape: null, empty, binary, text, large and compressible."""
    return [
        record(0, BASE_TS, b"key-0", b"value-0"),
        record(1, BASE_TS + 5, None, b"null key"),
        record(2, BASE_TS + 3, b"", b"empty key"),
        record(3, BASE_TS - 1_000, b"null-value", None),
        record(4, BASE_TS + 10, b"empty-value", b""),
        record(5, BASE_TS + 10, b"headers", b"with headers",
               [("h1", b"v1"), ("null-header", None), ("empty-header", b""), ("", b"empty key")]),
        record(6, BASE_TS + 20, bytes(range(256)), bytes(reversed(range(256)))),
        record(7, BASE_TS + 7, "ключ-🙂".encode(), "значение-🙂".encode()),
        record(8, BASE_TS + 2_000_000, b"big", LOREM),
        record(9, BASE_TS + 30, None, None, [("only", b"headers")]),
    ]


def many_records():
    """Enough data for several xerial snappy chunks (32 KiB) and LZ4 blocks (64 KiB)."""
    out = []
    for i in range(300):
        value = (b"%06d:" % i) + LOREM[: 200 + (i * 37) % 150]
        headers = [("seq", b"%d" % i)] if i % 3 == 0 else []
        out.append(record(i, BASE_TS + i, b"k%d" % (i % 17), value, headers))
    return out


def single_record():
    return [record(0, BASE_TS, b"only", LOREM[:500])]


RECORD_SETS = {
    "mixed": (mixed_records, {"producer_id": -1, "producer_epoch": -1, "base_sequence": -1,
                              "transactional": False}),
    "many": (many_records, {"producer_id": 4242, "producer_epoch": 3, "base_sequence": 17,
                            "transactional": False}),
    "txn": (single_record, {"producer_id": 99, "producer_epoch": 0, "base_sequence": 0,
                            "transactional": True}),
}


def build(records, codec, producer):
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=CODECS[codec], is_transactional=producer["transactional"],
        producer_id=producer["producer_id"], producer_epoch=producer["producer_epoch"],
        base_sequence=producer["base_sequence"], batch_size=16 * 1024 * 1024)
    for r in records:
        meta = builder.append(r["offset"], timestamp=r["timestamp"], key=r["key"],
                              value=r["value"], headers=r["headers"])
        assert meta is not None, "batch_size too small for the record set"
    return bytes(builder.build())


def reframe(plain_batch, codec_id, compressed):
    """A copy of an uncompressed batch with its records replaced by `compressed`."""
    out = bytearray(plain_batch[:HEADER_BYTES] + compressed)
    struct.pack_into(">i", out, BATCH_LENGTH_AT, len(out) - 12)
    attributes = struct.unpack_from(">h", out, ATTRIBUTES_AT)[0]
    struct.pack_into(">h", out, ATTRIBUTES_AT, (attributes & ~0x07) | codec_id)
    struct.pack_into(">I", out, CRC_AT, calc_crc32c(memoryview(out)[ATTRIBUTES_AT:]))
    return bytes(out)


def variants(plain_batch):
    """Other clients' framings of the same records section."""
    records = plain_batch[HEADER_BYTES:]
    half = len(records) // 2
    zstd_no_size = zstandard.ZstdCompressor(write_content_size=False)
    return {
        # librdkafka writes one raw snappy block, no xerial framing.
        "snappy_raw": (2, snappy.compress(records)),
        # LZ4 frame with every optional checksum and the content size.
        "lz4_checksums": (3, lz4.frame.compress(records, block_linked=False, block_checksum=True,
                                                content_checksum=True, store_size=True,
                                                block_size=lz4.frame.BLOCKSIZE_MAX64KB)),
        # Linked blocks: Kafka clients never write them, but the frame format allows them.
        "lz4_linked": (3, lz4.frame.compress(records, block_linked=True, content_checksum=False,
                                             store_size=False,
                                             block_size=lz4.frame.BLOCKSIZE_MAX64KB)),
        # Two zstd frames back to back, neither stating its content size (streaming encoders).
        "zstd_two_frames": (4, zstd_no_size.compress(records[:half])
                            + zstd_no_size.compress(records[half:])),
        # Two gzip members back to back.
        "gzip_multi_member": (1, gzip.compress(records[:half], mtime=0)
                              + gzip.compress(records[half:], mtime=0)),
    }


def manifest_records(records):
    def hx(b):
        return None if b is None else b.hex()
    return [{
        "offset_delta": r["offset"],
        "timestamp": r["timestamp"],
        "key": hx(r["key"]),
        "value": hx(r["value"]),
        "headers": [[k.encode("utf-8").hex(), hx(v)] for k, v in r["headers"]],
    } for r in records]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    fixtures = []
    for set_name, (make, producer) in RECORD_SETS.items():
        records = make()
        expected = {
            "record_set": set_name,
            **producer,
            "base_timestamp": records[0]["timestamp"],
            "max_timestamp": max(r["timestamp"] for r in records),
        }
        plain = None
        for codec, codec_id in CODECS.items():
            batch = build(records, codec, producer)
            attributes = struct.unpack_from(">h", batch, ATTRIBUTES_AT)[0]
            # kafka-python silently falls back to no compression when it does not pay; every
            # record set here compresses, so each fixture really uses its codec.
            assert attributes & 0x07 == codec_id, (set_name, codec)
            if codec == "none":
                plain = batch
            name = f"kafka_python_{set_name}_{codec}.bin"
            (OUT / name).write_bytes(batch)
            fixtures.append({"file": name, "source": "kafka-python", "codec": codec, **expected})
        if set_name == "many":
            for variant, (codec_id, compressed) in variants(plain).items():
                name = f"variant_{set_name}_{variant}.bin"
                (OUT / name).write_bytes(reframe(plain, codec_id, compressed))
                codec = next(c for c, i in CODECS.items() if i == codec_id)
                fixtures.append({"file": name, "source": f"variant:{variant}", "codec": codec,
                                 **expected})
    manifest = {
        "generator": "tests/fixtures_gen/kafka_python_batches.py",
        "record_sets": {name: manifest_records(make()) for name, (make, _) in RECORD_SETS.items()},
        "fixtures": fixtures,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(fixtures)} fixtures to {OUT}")


if __name__ == "__main__":
    main()
