"""The `sluice` command-line client against a running broker, cross-checked by real clients.

`sluice topic ...`, `sluice produce` and `sluice consume` speak the Kafka protocol through our
own client library; these tests prove they do what they say by checking every effect with
librdkafka (confluent-kafka, kcat) or kafka-python, and that each failure exits non-zero with
the Kafka error name on stderr.
"""

import json
import subprocess
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from kafka.partitioner.default import murmur2

from conftest import sluice_bin

TIMEOUT_S = 30


def sluice(broker, *args, stdin=None, check=True):
    """Runs `sluice ARGS --bootstrap <broker>`; returns the CompletedProcess (bytes output)."""
    proc = subprocess.run(
        [str(sluice_bin()), *args, "--bootstrap", broker.bootstrap],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    if check:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def fails_with(broker, name, *args, stdin=None):
    """Asserts that the command exits 1 and names the Kafka error on one stderr line."""
    proc = sluice(broker, *args, stdin=stdin, check=False)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, (proc.returncode, err)
    assert f"({name})" in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def ck_messages(broker, topic, count, partitions=(0,)):
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"cli-{topic}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out = []
    deadline = time.time() + TIMEOUT_S
    try:
        while len(out) < count and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append(msg)
    finally:
        consumer.close()
    assert len(out) == count, f"consumed {len(out)} of {count}"
    return out


def kp_messages(broker, topic, count, partitions=(0,)):
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=20000,
    )
    tps = [KTopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out = []
    deadline = time.time() + TIMEOUT_S
    try:
        while len(out) < count and time.time() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
    finally:
        consumer.close()
    assert len(out) == count, f"consumed {len(out)} of {count}"
    return out


def test_topic_lifecycle_is_seen_by_confluent_kafka(broker):
    out = sluice(broker, "topic", "create", "orders", "--partitions", "3",
                 "--config", "retention.ms=3600000", "--config", "cleanup.policy=compact,delete")
    assert out.stdout == b"created topic 'orders'\n"
    sluice(broker, "topic", "create", "audit", "--partitions", "1")

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=10)
    # The broker's internal offsets and transaction-state topics are listed too, as by Kafka.
    assert sorted(md.topics) == ["__consumer_offsets", "__transaction_state", "audit", "orders"]
    assert sorted(md.topics["orders"].partitions) == [0, 1, 2]
    configs = admin.describe_configs([ConfigResource("topic", "orders")])
    entries = list(configs.values())[0].result(timeout=TIMEOUT_S)
    assert entries["retention.ms"].value == "3600000"
    assert entries["cleanup.policy"].value == "compact,delete"

    assert sluice(broker, "topic", "list").stdout == (
        b"__consumer_offsets\n__transaction_state\naudit\norders\n")

    described = sluice(broker, "topic", "describe", "orders").stdout.decode()
    assert "Topic: orders\n" in described
    assert "Partitions: 3\n" in described
    assert "ReplicationFactor: 1\n" in described
    assert "  retention.ms=3600000  (topic)\n" in described
    assert "  cleanup.policy=compact,delete  (topic)\n" in described
    assert "  segment.bytes=" in described
    rows = [line.split() for line in described.splitlines() if line[:11].strip().isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"]

    sluice(broker, "topic", "add-partitions", "orders", "--partitions", "5")
    assert len(admin.list_topics(timeout=10).topics["orders"].partitions) == 5

    assert sluice(broker, "topic", "delete", "audit").stdout == b"deleted topic 'audit'\n"
    assert sorted(admin.list_topics(timeout=10).topics) == [
        "__consumer_offsets", "__transaction_state", "orders"]


def test_admin_failures_exit_non_zero_with_the_kafka_error_name(broker):
    sluice(broker, "topic", "create", "dup")
    err = fails_with(broker, "TOPIC_ALREADY_EXISTS", "topic", "create", "dup")
    assert "'dup'" in err
    fails_with(broker, "INVALID_TOPIC_EXCEPTION", "topic", "create", "bad/name")
    fails_with(broker, "INVALID_TOPIC_EXCEPTION", "topic", "create", "x" * 250)
    fails_with(broker, "INVALID_PARTITIONS", "topic", "create", "p0", "--partitions", "0")
    fails_with(broker, "INVALID_REPLICATION_FACTOR", "topic", "create", "rf3",
               "--replication-factor", "3")
    fails_with(broker, "INVALID_CONFIG", "topic", "create", "cfg", "--config", "retention.ms=soon")
    fails_with(broker, "INVALID_CONFIG", "topic", "create", "cfg", "--config", "no.such.config=1")
    fails_with(broker, "UNKNOWN_TOPIC_OR_PARTITION", "topic", "describe", "missing")
    fails_with(broker, "UNKNOWN_TOPIC_OR_PARTITION", "topic", "delete", "missing")
    fails_with(broker, "INVALID_PARTITIONS", "topic", "add-partitions", "dup", "--partitions", "1")
    fails_with(broker, "INVALID_CONFIG", "topic", "alter-config", "dup", "--set", "segment.bytes=x")
    fails_with(broker, "UNKNOWN_TOPIC_OR_PARTITION", "consume", "missing", "--timeout-ms", "100")
    # Nothing the failed commands tried was created.
    listed = sluice(broker, "topic", "list").stdout
    assert listed == b"__consumer_offsets\n__transaction_state\ndup\n"


def test_cannot_reach_a_broker_is_a_clear_error():
    proc = subprocess.run(
        [str(sluice_bin()), "topic", "list", "--bootstrap", "127.0.0.1:1"],
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("error: cannot talk to the broker at 127.0.0.1:1")


def test_alter_config_sets_and_deletes(broker):
    sluice(broker, "topic", "create", "tuned")
    sluice(broker, "topic", "alter-config", "tuned", "--set", "retention.ms=1234",
           "--set", "max.message.bytes=2000000")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def config():
        res = admin.describe_configs([ConfigResource("topic", "tuned")])
        return list(res.values())[0].result(timeout=TIMEOUT_S)

    assert config()["retention.ms"].value == "1234"
    assert config()["max.message.bytes"].value == "2000000"
    sluice(broker, "topic", "alter-config", "tuned", "--delete", "retention.ms")
    entries = config()
    assert entries["retention.ms"].value == "604800000"
    assert entries["retention.ms"].is_default
    assert entries["max.message.bytes"].value == "2000000"
    described = sluice(broker, "topic", "describe", "tuned").stdout.decode()
    assert "  retention.ms=604800000  (default)\n" in described
    assert "  max.message.bytes=2000000  (topic)\n" in described


def test_sluice_produce_is_read_back_by_kafka_python_and_kcat(broker):
    sluice(broker, "topic", "create", "lines", "--partitions", "4")
    keys = [f"user-{i}" for i in range(40)]
    lines = "".join(f"{k}:value {i}:with:colons\n" for i, k in enumerate(keys)).encode()
    sluice(broker, "produce", "lines", "--key-separator", ":", stdin=lines)

    got = kp_messages(broker, "lines", 40, partitions=range(4))
    by_key = {m.key.decode(): m for m in got}
    assert sorted(by_key) == sorted(keys)
    for i, k in enumerate(keys):
        m = by_key[k]
        assert m.value == f"value {i}:with:colons".encode()
        # The Java client's default partitioner: the same key lands in the same partition.
        assert m.partition == (murmur2(k.encode()) & 0x7FFFFFFF) % 4
    # Per partition, records keep the order of the input lines.
    for p in range(4):
        in_p = [m for m in got if m.partition == p]
        assert [m.offset for m in in_p] == list(range(len(in_p)))
        assert [keys.index(m.key.decode()) for m in in_p] == sorted(
            keys.index(m.key.decode()) for m in in_p)

    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-C", "-t", "lines", "-p", "0", "-o", "beginning",
         "-e", "-J"],
        capture_output=True, check=True, timeout=TIMEOUT_S,
    ).stdout
    from_kcat = [json.loads(line) for line in out.splitlines()]
    assert [(r["key"], r["payload"]) for r in from_kcat] == [
        (m.key.decode(), m.value.decode()) for m in got if m.partition == 0]


@pytest.mark.parametrize("codec,acks", [("none", "all"), ("gzip", "1"), ("snappy", "all"),
                                        ("lz4", "1"), ("zstd", "all"), ("none", "0")])
def test_produce_codecs_and_acks_round_trip_through_confluent_kafka(broker, codec, acks):
    topic = f"codec-{codec}-{acks}"
    sluice(broker, "topic", "create", topic, "--partitions", "1")
    values = [f"{codec}-{i}-" + "x" * (i % 50) for i in range(500)]
    sluice(broker, "produce", topic, "--compression", codec, "--acks", acks,
           stdin="".join(v + "\n" for v in values).encode())
    got = ck_messages(broker, topic, len(values))
    assert [m.value().decode() for m in got] == values
    assert all(m.key() is None for m in got)
    ours = sluice(broker, "consume", topic, "--from-beginning", "--max-messages", "500")
    assert ours.stdout.decode().splitlines() == values


def test_null_marker_and_empty_lines(broker):
    sluice(broker, "topic", "create", "nulls")
    sluice(broker, "produce", "nulls", "--key-separator", "=", "--null-marker", "NULL",
           stdin=b"k1=NULL\nNULL=v2\nk3=\r\n=v4\n")
    got = kp_messages(broker, "nulls", 4)
    assert [(m.key, m.value) for m in got] == [
        (b"k1", None), (None, b"v2"), (b"k3", b""), (b"", b"v4")]
    out = sluice(broker, "consume", "nulls", "--from-beginning", "--max-messages", "4",
                 "--print-key", "--key-separator", "|").stdout
    assert out == b"k1|null\nnull|v2\nk3|\n|v4\n"


def test_produce_rejects_a_line_without_the_key_separator(broker):
    sluice(broker, "topic", "create", "strict")
    proc = sluice(broker, "produce", "strict", "--key-separator", ":", stdin=b"a:1\nnokey\n",
                  check=False)
    assert proc.returncode == 1
    assert b"line 2" in proc.stderr and b"no key separator" in proc.stderr
    # The line before the bad one was still sent.
    assert [(m.key(), m.value()) for m in ck_messages(broker, "strict", 1)] == [(b"a", b"1")]


def test_sluice_consume_prints_what_confluent_kafka_produced(broker):
    sluice(broker, "topic", "create", "mixed", "--partitions", "3")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "lz4",
                         "linger.ms": 20})
    sent = {p: [] for p in range(3)}
    for i in range(300):
        p = i % 3
        key, value = f"k{i}".encode(), f"v{i} ü".encode()
        producer.produce("mixed", key=key, value=value, partition=p)
        sent[p].append((key, value))
    producer.produce("mixed", key=b"tomb", value=None, partition=0)
    sent[0].append((b"tomb", None))
    assert producer.flush(TIMEOUT_S) == 0

    out = sluice(broker, "consume", "mixed", "--from-beginning", "--print-key",
                 "--timeout-ms", "1500").stdout.decode()
    lines = out.splitlines()
    assert len(lines) == 301
    for p in range(3):
        expected = [f"{k.decode()}\t{v.decode() if v is not None else 'null'}"
                    for k, v in sent[p]]
        # Records of one partition appear in their offset order.
        assert [line for line in lines if line in set(expected)] == expected

    one = sluice(broker, "consume", "mixed", "--partition", "1", "--offset", "95",
                 "--max-messages", "3").stdout.decode().splitlines()
    assert one == [v.decode() for _, v in sent[1][95:98]]


def test_consume_waits_for_new_records_and_starts_at_the_end_by_default(broker):
    sluice(broker, "topic", "create", "live")
    sluice(broker, "produce", "live", stdin=b"old\n")
    consumer = subprocess.Popen(
        [str(sluice_bin()), "consume", "live", "--max-messages", "2",
         "--bootstrap", broker.bootstrap],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)
        sluice(broker, "produce", "live", stdin=b"new-1\nnew-2\n")
        out, err = consumer.communicate(timeout=TIMEOUT_S)
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert consumer.returncode == 0, err
    assert out == b"new-1\nnew-2\n"
    assert b"Processed a total of 2 messages" in err


def test_consume_out_of_range_offset_is_an_error(broker):
    sluice(broker, "topic", "create", "short")
    sluice(broker, "produce", "short", stdin=b"a\nb\n")
    err = fails_with(broker, "OFFSET_OUT_OF_RANGE", "consume", "short", "--offset", "50",
                     "--timeout-ms", "2000")
    assert "0..2" in err


def test_a_one_megabyte_line_round_trips(broker):
    sluice(broker, "topic", "create", "big")
    big = bytes(ord("a") + i % 26 for i in range(1_000_000))
    sluice(broker, "produce", "big", "--compression", "none", stdin=b"small\n" + big + b"\nafter\n")
    got = ck_messages(broker, "big", 3)
    assert [m.value() for m in got] == [b"small", big, b"after"]
    out = sluice(broker, "consume", "big", "--from-beginning", "--max-messages", "3").stdout
    assert out == b"small\n" + big + b"\nafter\n"
    # Too large for the topic's max.message.bytes: the broker's error, by name.
    sluice(broker, "topic", "alter-config", "big", "--set", "max.message.bytes=100000")
    err = fails_with(broker, "MESSAGE_TOO_LARGE", "produce", "big", stdin=big + b"\n")
    assert "big-0" in err


def test_consume_prints_timestamps_partitions_offsets_and_headers(broker):
    sluice(broker, "topic", "create", "meta", "--partitions", "2")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("meta", key=b"k0", value=b"v0", partition=1, timestamp=1_700_000_000_123,
                     headers=[("trace", b"abc"), ("empty", b"")])
    producer.produce("meta", key=b"k1", value=b"v1", partition=1, timestamp=1_700_000_000_456)
    assert producer.flush(TIMEOUT_S) == 0
    out = sluice(broker, "consume", "meta", "--partition", "1", "--from-beginning",
                 "--max-messages", "2", "--print-timestamp", "--print-partition",
                 "--print-offset", "--print-headers", "--print-key",
                 "--key-separator", " | ").stdout.decode()
    assert out.splitlines() == [
        "CreateTime:1700000000123 | Partition:1 | Offset:0 | trace:abc,empty: | k0 | v0",
        "CreateTime:1700000000456 | Partition:1 | Offset:1 | NO_HEADERS | k1 | v1",
    ]


def test_sixty_four_partitions_through_the_cli(broker):
    sluice(broker, "topic", "create", "wide", "--partitions", "64")
    lines = [f"key-{i}\tvalue-{i}" for i in range(1280)]
    sluice(broker, "produce", "wide", "--key-separator", "\t", "--compression", "snappy",
           stdin="".join(line + "\n" for line in lines).encode())
    out = sluice(broker, "consume", "wide", "--from-beginning", "--print-key",
                 "--print-partition", "--max-messages", "1280").stdout.decode().splitlines()
    assert len(out) == 1280
    seen = {}
    for line in out:
        partition, key, value = line.split("\t")
        assert value == "value-" + key.split("-")[1]
        seen[key] = int(partition.split(":")[1])
    assert sorted(seen) == sorted(f"key-{i}" for i in range(1280))
    for key, partition in seen.items():
        assert partition == (murmur2(key.encode()) & 0x7FFFFFFF) % 64
    assert len(set(seen.values())) == 64
    described = sluice(broker, "topic", "describe", "wide").stdout.decode()
    rows = [line.split() for line in described.splitlines() if line[:11].strip().isdigit()]
    assert len(rows) == 64
    assert sum(int(r[5]) - int(r[4]) for r in rows) == 1280


def test_typed_lines_are_sent_as_they_arrive(broker):
    sluice(broker, "topic", "create", "typed")
    producer = subprocess.Popen(
        [str(sluice_bin()), "produce", "typed", "--bootstrap", broker.bootstrap],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        producer.stdin.write(b"first\n")
        producer.stdin.flush()
        # The producer is still running (stdin open), yet the line is already in the log.
        assert [m.value() for m in ck_messages(broker, "typed", 1)] == [b"first"]
        producer.stdin.write(b"second\n")
        producer.stdin.close()
        assert producer.wait(timeout=TIMEOUT_S) == 0, producer.stderr.read()
    finally:
        if producer.poll() is None:
            producer.kill()
    assert [m.value() for m in ck_messages(broker, "typed", 2)] == [b"first", b"second"]
