"""`sluice txn list|describe|producers` against transactions that real clients run.

The transactions are run by confluent-kafka (librdkafka) transactional producers, including
`send_offsets_to_transaction` for a group's offsets; what the CLI reports is checked against
what those clients did and against what consumers see (read_committed consumers and the
group's committed offsets), and every refusal must exit 1 with the Kafka error name or a clear
reason.
"""

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from test_cli import fails_with, sluice

TIMEOUT_S = 30
# The broker's default offsets.topic.num.partitions (the e2e broker does not change it).
OFFSETS_PARTITIONS = 50


def create_topic(broker, topic, partitions):
    sluice(broker, "topic", "create", topic, "--partitions", str(partitions))


def txn_producer(broker, txn_id):
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id, "linger.ms": 5}
    )
    producer.init_transactions(TIMEOUT_S)
    return producer


def rows(text, first_column):
    return [line.split() for line in text.splitlines() if line.split()[:1] == [first_column]]


def fields(text):
    """The `Key: value` lines of a describe report."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and " " not in key:
            out[key] = value
    return out


def describe(broker, txn_id):
    return fields(sluice(broker, "txn", "describe", txn_id).stdout.decode())


def await_state(broker, txn_id, state):
    """Waits until `txn describe` reports `state` (markers are written after EndTxn answers)."""
    deadline = time.time() + TIMEOUT_S
    while True:
        d = describe(broker, txn_id)
        if d["State"] == state:
            return d
        assert time.time() < deadline, f"{txn_id} stayed {d['State']}, not {state}"
        time.sleep(0.05)


def producers(broker, topic, partition):
    """`txn producers` rows by producer id: (epoch, last seq, last ts, coordinator epoch,
    transaction start offset)."""
    out = sluice(
        broker, "txn", "producers", "--topic", topic, "--partition", str(partition)
    ).stdout.decode()
    lines = out.splitlines()
    assert lines[0].split() == [
        "PRODUCER-ID", "EPOCH", "LAST-SEQUENCE", "LAST-TIMESTAMP", "COORDINATOR-EPOCH",
        "TXN-START-OFFSET",
    ], out
    return {int(r[0]): r[1:] for r in (line.split() for line in lines[1:])}


def java_hash(s):
    h = 0
    for c in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(c, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition(group):
    """The `__consumer_offsets` partition of a group, as Kafka (and Sluice) computes it."""
    h = java_hash(group)
    return 0 if h == -(1 << 31) else abs(h) % OFFSETS_PARTITIONS


def read_committed(broker, topic, partitions):
    """Every value a read_committed consumer reads from the start of `topic`."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"check-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values, eof = [], set()
    deadline = time.time() + TIMEOUT_S
    try:
        while len(eof) < partitions and time.time() < deadline:
            m = consumer.poll(0.2)
            if m is None:
                continue
            if m.error():
                eof.add(m.partition())
                continue
            values.append(m.value().decode())
    finally:
        consumer.close()
    return sorted(values)


def test_list_describe_and_producers_follow_a_transaction(broker):
    create_topic(broker, "pay", 2)
    producer = txn_producer(broker, "payments-1")

    listed = rows(sluice(broker, "txn", "list").stdout.decode(), "payments-1")
    assert len(listed) == 1 and listed[0][2] == "Empty", listed
    pid = int(listed[0][1])
    assert describe(broker, "payments-1")["ProducerId"] == str(pid)
    only = sluice(broker, "txn", "list", "--producer-id", str(pid)).stdout.decode()
    assert [r[0] for r in rows(only, "payments-1")] == ["payments-1"]
    other = sluice(broker, "txn", "list", "--producer-id", str(pid + 1)).stdout.decode()
    assert rows(other, "payments-1") == []

    producer.begin_transaction()
    for p in (0, 1):
        for i in range(3):
            producer.produce("pay", value=f"a-{p}-{i}".encode(), partition=p)
    assert producer.flush(TIMEOUT_S) == 0

    d = describe(broker, "payments-1")
    assert d["State"] == "Ongoing", d
    assert d["ProducerId"] == str(pid)
    assert d["Partitions"] == "2", d
    text = sluice(broker, "txn", "describe", "payments-1").stdout.decode()
    assert rows(text, "pay") == [["pay", "0"], ["pay", "1"]], text
    assert int(d["DurationMs"]) >= 0 and int(d["StartTimeMs"]) > 0, d
    ongoing = sluice(broker, "txn", "list", "--state", "Ongoing").stdout.decode()
    assert [r[0] for r in rows(ongoing, "payments-1")] == ["payments-1"]
    empty = sluice(broker, "txn", "list", "--state", "Empty").stdout.decode()
    assert rows(empty, "payments-1") == []

    # The open transaction holds each partition from its first record on.
    for p in (0, 1):
        row = producers(broker, "pay", p)[pid]
        assert row[0] == d["ProducerEpoch"], row
        assert row[1] == "2", row  # three records: sequences 0-2
        assert row[4] == "0", row
    assert read_committed(broker, "pay", 2) == []

    producer.commit_transaction(TIMEOUT_S)
    d = await_state(broker, "payments-1", "CompleteCommit")
    assert d["Partitions"] == "0", d
    for p in (0, 1):
        row = producers(broker, "pay", p)[pid]
        assert row[4] == "-", row
        assert row[3] != "-", row  # the commit marker's coordinator epoch
    assert read_committed(broker, "pay", 2) == [f"a-{p}-{i}" for p in (0, 1) for i in range(3)]

    # An aborted transaction leaves nothing readable and the partition free again.
    producer.begin_transaction()
    producer.produce("pay", value=b"never", partition=0)
    assert producer.flush(TIMEOUT_S) == 0
    assert producers(broker, "pay", 0)[pid][4] == "4", "after offsets 0-2 and the marker at 3"
    producer.abort_transaction(TIMEOUT_S)
    await_state(broker, "payments-1", "CompleteAbort")
    assert producers(broker, "pay", 0)[pid][4] == "-"
    assert "never" not in read_committed(broker, "pay", 2)

    fails_with(broker, "TRANSACTIONAL_ID_NOT_FOUND", "txn", "describe", "nobody")
    fails_with(broker, "UNKNOWN_TOPIC_OR_PARTITION", "txn", "producers", "--topic", "nope",
               "--partition", "0")
    fails_with(broker, "UNKNOWN_TOPIC_OR_PARTITION", "txn", "producers", "--topic", "pay",
               "--partition", "5")
    proc = sluice(broker, "txn", "list", "--state", "Sleeping", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Sleeping" in err and err.startswith("error: "), err


def test_offsets_sent_to_a_transaction_count_when_it_commits(broker):
    create_topic(broker, "src", 1)
    create_topic(broker, "dst", 1)
    feeder = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(5):
        feeder.produce("src", value=f"r{i}".encode(), partition=0)
    assert feeder.flush(TIMEOUT_S) == 0

    group = "copier"
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe(["src"])
    producer = txn_producer(broker, "copier-1")
    try:
        records = []
        deadline = time.time() + TIMEOUT_S
        while len(records) < 5:
            assert time.time() < deadline, "the consumer did not read the input"
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                records.append(m)
        producer.begin_transaction()
        for m in records:
            producer.produce("dst", value=m.value(), partition=0)
        producer.send_offsets_to_transaction(
            [TopicPartition("src", 0, records[-1].offset() + 1)],
            consumer.consumer_group_metadata(),
            TIMEOUT_S,
        )
        pid = int(describe(broker, "copier-1")["ProducerId"])
        text = sluice(broker, "txn", "describe", "copier-1").stdout.decode()
        assert ["__consumer_offsets", str(offsets_partition(group))] in rows(
            text, "__consumer_offsets"
        ), text

        # The offsets are in the group's partition inside the open transaction: it holds that
        # partition, and the group has no committed offset yet.
        row = producers(broker, "__consumer_offsets", offsets_partition(group))[pid]
        assert row[1] == "-", row  # the coordinator writes no sequences
        assert row[4] != "-", row
        out = sluice(broker, "group", "describe", group).stdout.decode()
        assert [r[:3] for r in rows(out, "src")] == [["src", "0", "-"]], out
        # A read_committed consumer asks for stable offsets (KIP-447): the broker answers
        # UNSTABLE_OFFSET_COMMIT while the transaction is open and librdkafka keeps asking.
        with pytest.raises(KafkaException) as unstable:
            consumer.committed([TopicPartition("src", 0)], timeout=2)
        assert unstable.value.args[0].code() == KafkaError._TIMED_OUT, unstable.value

        producer.commit_transaction(TIMEOUT_S)
        await_state(broker, "copier-1", "CompleteCommit")
        row = producers(broker, "__consumer_offsets", offsets_partition(group))[pid]
        assert row[4] == "-", row
        deadline = time.time() + TIMEOUT_S
        while True:
            committed = consumer.committed([TopicPartition("src", 0)], timeout=TIMEOUT_S)
            if committed[0].offset == 5:
                break
            assert time.time() < deadline, committed
            time.sleep(0.05)
        out = sluice(broker, "group", "describe", group).stdout.decode()
        assert [r[:3] for r in rows(out, "src")] == [["src", "0", "5"]], out
        assert read_committed(broker, "dst", 1) == [f"r{i}" for i in range(5)]
    finally:
        consumer.close()
