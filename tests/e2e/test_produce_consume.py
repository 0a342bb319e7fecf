"""Produce and consume round trips with real clients, compared byte for byte.

What a producer sends must come back exactly: keys, values, headers, timestamps, the
difference between a null and an empty value, records of a megabyte, every compression codec,
every acks level, and across client libraries (librdkafka through confluent-kafka and kcat,
and kafka-python), because each library frames batches differently.
"""

import json

import pytest
from confluent_kafka import Producer

from datapath import (
    ck_consume,
    ck_produce,
    ck_records,
    create_topic,
    kcat,
    kp_consume,
    kp_produce,
    kp_records,
    record,
)

BASE_TS = 1_700_000_000_000


def varied_records(n=40, partition=0):
    """Records covering the shapes that are easy to get wrong."""
    out = [
        record(b"tombstone", None, timestamp=BASE_TS, partition=partition),
        record(None, b"", timestamp=BASE_TS + 1, partition=partition),
        record(b"", b"value-with-empty-key", timestamp=BASE_TS + 2, partition=partition),
        record(b"k", b"\x00\xff" * 50, [("h1", b"v1"), ("h1", b"dup"), ("e", b"")], BASE_TS + 3,
               partition),
        record("ключ".encode(), "значение ✓".encode(), [("unicode-ü", "ü".encode())], BASE_TS + 4,
               partition),
    ]
    for i in range(n - len(out)):
        out.append(
            record(f"key-{i}".encode(), f"value-{i}".encode() * (i % 7 + 1),
                   [("i", str(i).encode())], BASE_TS + 10 + i, partition)
        )
    return out


def test_confluent_round_trip_is_byte_exact(broker):
    create_topic(broker, "rt-ck")
    sent = varied_records()
    ck_produce(broker, "rt-ck", sent)
    got = ck_consume(broker, "rt-ck", len(sent))
    assert ck_records(got) == sent
    assert [m.offset() for m in got] == list(range(len(sent)))


def test_kafka_python_round_trip_and_cross_client(broker):
    create_topic(broker, "rt-kp")
    create_topic(broker, "rt-cross")
    sent = varied_records()
    metas = kp_produce(broker, "rt-kp", sent)
    assert [m.offset for m in metas] == list(range(len(sent)))
    assert kp_records(kp_consume(broker, "rt-kp", len(sent))) == sent
    # Produced by kafka-python, consumed by librdkafka.
    assert ck_records(ck_consume(broker, "rt-kp", len(sent))) == sent
    # Produced by librdkafka, consumed by kafka-python.
    ck_produce(broker, "rt-cross", sent)
    assert kp_records(kp_consume(broker, "rt-cross", len(sent))) == sent


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_codec_from_every_client(broker, codec):
    create_topic(broker, f"c-{codec}")
    sent = varied_records(60)
    # librdkafka sends a batch uncompressed when compressing would make it larger, which a
    # batch of one or two of these small records can be: with a 50 ms linger a slow machine
    # split the records into such batches. A linger longer than the test keeps all 60 records
    # in one batch, and flush() sends it at once, since flush overrides linger.ms.
    ck_produce(broker, f"c-{codec}", sent, **{"compression.type": codec, "linger.ms": 60_000})
    from_kp = [dict(r, key=(r["key"] or b"") + b"-kp") for r in sent]
    # kafka-python does the same (it keeps a batch uncompressed unless compressing shrinks
    # it), and its flush() also sends lingering batches at once.
    kp_produce(broker, f"c-{codec}", from_kp, compression_type=codec, linger_ms=60_000)
    # Each library reads both libraries' compressed batches.
    assert ck_records(ck_consume(broker, f"c-{codec}", 120)) == sent + from_kp
    assert kp_records(kp_consume(broker, f"c-{codec}", 120)) == sent + from_kp
    # The batches really were compressed as asked (read from the partition's log on disk):
    # confluent-kafka's records are offsets 0-59, kafka-python's 60-119.
    ids = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
    stored = stored_codecs(broker, f"c-{codec}-0")
    assert {c for base, c in stored if base >= 60} == {ids[codec]}
    # librdkafka decides which codecs a broker supports from the APIs it advertises and
    # enables LZ4 only when FindCoordinator is served; the broker serves it, so librdkafka's
    # LZ4 batches arrive LZ4-compressed like every other codec.
    assert {c for base, c in stored if base < 60} == {ids[codec]}


def stored_codecs(broker, partition_dir):
    """(base offset, codec id) of every batch in the partition's first segment."""
    import struct

    raw = (broker.data_dir / partition_dir / "00000000000000000000.log").read_bytes()
    out, pos = [], 0
    while pos + 61 <= len(raw):
        base, length = struct.unpack(">qi", raw[pos : pos + 12])
        if length <= 0:
            break  # the zeroed tail of the active segment's last sector
        attributes = struct.unpack(">h", raw[pos + 21 : pos + 23])[0]
        out.append((base, attributes & 7))
        pos += 12 + length
    return out


def test_a_one_megabyte_record(broker):
    create_topic(broker, "big")
    value = bytes(range(256)) * (1_000_000 // 256) + b"tail"
    sent = [record(b"big", value, timestamp=BASE_TS), record(b"after", b"small", timestamp=BASE_TS)]
    ck_produce(broker, "big", sent, **{"message.max.bytes": 2_000_000})
    got = ck_consume(broker, "big", 2, **{"fetch.max.bytes": 1_000_000,
                                           "max.partition.fetch.bytes": 100_000})
    assert ck_records(got) == sent
    assert kp_records(kp_consume(broker, "big", 2, max_partition_fetch_bytes=100_000)) == sent


def test_64_partitions_keep_order_and_dense_offsets(broker):
    create_topic(broker, "wide", partitions=64)
    sent = []
    for p in range(64):
        sent.extend(record(f"{p}".encode(), f"{p}:{i}".encode(), timestamp=BASE_TS + i, partition=p)
                    for i in range(10))
    ck_produce(broker, "wide", sent)
    got = ck_consume(broker, "wide", len(sent), partitions=range(64))
    by_partition = {}
    for m in got:
        by_partition.setdefault(m.partition(), []).append(m)
    assert sorted(by_partition) == list(range(64))
    for p, msgs in by_partition.items():
        assert [m.offset() for m in msgs] == list(range(10))
        assert [m.value() for m in msgs] == [f"{p}:{i}".encode() for i in range(10)]


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_every_acks_level_delivers(broker, acks):
    create_topic(broker, f"acks-{acks}")
    sent = [record(None, f"v{i}".encode(), timestamp=BASE_TS + i) for i in range(200)]
    ck_produce(broker, f"acks-{acks}", sent, acks=acks)
    got = ck_consume(broker, f"acks-{acks}", len(sent))
    assert [m.value() for m in got] == [r["value"] for r in sent]
    assert [m.offset() for m in got] == list(range(len(sent)))


def test_kafka_python_acks_levels(broker):
    create_topic(broker, "kp-acks")
    for acks in (0, 1, "all"):
        kp_produce(broker, "kp-acks", [record(None, f"{acks}".encode(), timestamp=BASE_TS)], acks=acks)
    got = ck_consume(broker, "kp-acks", 3)
    assert [m.value() for m in got] == [b"0", b"1", b"all"]


def test_kcat_produces_and_consumes(broker):
    create_topic(broker, "kc")
    kcat(broker, "-P", "-t", "kc", "-p", "0", "-K", ":", "-H", "src=kcat",
         stdin=b"k1:one\nk2:two\n:three\n")
    got = ck_consume(broker, "kc", 3)
    assert [(m.key(), m.value(), m.headers()) for m in got] == [
        (b"k1", b"one", [("src", b"kcat")]),
        (b"k2", b"two", [("src", b"kcat")]),
        (b"", b"three", [("src", b"kcat")]),
    ]
    # And kcat reads what librdkafka through Python wrote, with keys and offsets.
    ck_produce(broker, "kc", [record(b"k4", b"four", timestamp=BASE_TS)])
    out = kcat(broker, "-C", "-t", "kc", "-p", "0", "-o", "beginning", "-e", "-J")
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert [(m["offset"], m["key"], m["payload"]) for m in lines] == [
        (0, "k1", "one"), (1, "k2", "two"), (2, "", "three"), (3, "k4", "four"),
    ]
    assert lines[3]["ts"] == BASE_TS


def test_log_append_time_topic_stamps_the_broker_time(broker):
    create_topic(broker, "lat", config={"message.timestamp.type": "LogAppendTime"})
    metas = kp_produce(broker, "lat", [record(None, b"x", timestamp=BASE_TS)])
    got = ck_consume(broker, "lat", 1)
    ts_type, ts = got[0].timestamp()
    assert ts_type == 2  # TIMESTAMP_LOG_APPEND_TIME
    assert ts > BASE_TS + 10**9
    assert metas[0].timestamp == ts
    # kafka-python checks batch CRCs: the rewritten batch carries a correct one.
    kp = kp_consume(broker, "lat", 1, check_crcs=True)
    assert (kp[0].timestamp_type, kp[0].timestamp) == (1, ts)


def test_topic_compression_type_recompresses(broker):
    create_topic(broker, "recomp", config={"compression.type": "zstd"})
    sent = varied_records(30)
    ck_produce(broker, "recomp", sent, **{"compression.type": "gzip"})
    assert ck_records(ck_consume(broker, "recomp", len(sent))) == sent
    # The stored batch is zstd (codec id 4 in the low bits of the attributes at byte 21).
    segments = sorted((broker.data_dir / "recomp-0").glob("*.log"))
    head = segments[0].read_bytes()[:23]
    assert int.from_bytes(head[21:23], "big") & 0x7 == 4


def test_compacted_topic_refuses_keyless_records(broker):
    create_topic(broker, "compacted", config={"cleanup.policy": "compact"})
    ck_produce(broker, "compacted", [record(b"k", b"v", timestamp=BASE_TS)])
    producer = Producer({"bootstrap.servers": broker.bootstrap, "retries": 0})
    errors = []
    producer.produce("compacted", value=b"no key", partition=0,
                     on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].name() == "INVALID_RECORD", errors[0]


def test_a_record_over_max_message_bytes_is_refused(broker):
    create_topic(broker, "small", config={"max.message.bytes": "2000"})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "retries": 0})
    errors = []
    producer.produce("small", value=b"x" * 5000, partition=0,
                     on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].name() == "MSG_SIZE_TOO_LARGE", errors[0]
