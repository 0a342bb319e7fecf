"""Retention by size and by time deletes whole closed segments and moves the log start offset.

The broker checks retention every 200 ms here (`--log-retention-check-interval-ms`), so the
test can watch the earliest offset advance instead of waiting Kafka's default five minutes.
"""

import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port


def _broker(tmp):
    b = Broker(Path(tmp) / "data", free_port(), ["--log-retention-check-interval-ms", "200"])
    return b.start()


def _create(bootstrap, name, configs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, 1, 1, config=configs)])
    futures[name].result(timeout=10)


def _produce(bootstrap, topic, n, size):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for i in range(n):
        p.produce(topic, value=(b"%08d" % i) + b"x" * (size - 8))
        p.poll(0)
    assert p.flush(30) == 0


def _watermarks(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def _wait_for_low(bootstrap, topic, predicate, timeout=15, settle=1.0):
    """The log start offset once it satisfies `predicate` and has stayed put for `settle`
    seconds (five retention checks): a check that ran while the producer was still appending
    can already satisfy the predicate, and the next check then deletes more."""
    deadline = time.time() + timeout
    low, high = _watermarks(bootstrap, topic)
    since = time.time()
    while time.time() < deadline:
        if predicate(low) and time.time() - since >= settle:
            break
        time.sleep(0.2)
        now_low, high = _watermarks(bootstrap, topic)
        if now_low != low:
            low, since = now_low, time.time()
    return low, high


def test_retention_bytes_deletes_old_segments_but_keeps_the_newest():
    with tempfile.TemporaryDirectory(prefix="sluice-ret-") as tmp:
        b = _broker(tmp)
        try:
            # 8 KiB segments, keep about 16 KiB: 200 records of ~1 KiB roll ~25 segments.
            _create(b.bootstrap, "sized", {"segment.bytes": "8192", "retention.bytes": "16384"})
            _produce(b.bootstrap, "sized", 200, 1000)
            low, high = _wait_for_low(b.bootstrap, "sized", lambda low: low > 150)
            assert high == 200
            assert 150 < low < 200, (low, high)
            # What is left is readable from the new log start, in order.
            c = Consumer(
                {
                    "bootstrap.servers": b.bootstrap,
                    "group.id": "r",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
            c.assign([TopicPartition("sized", 0, low)])
            got = []
            deadline = time.time() + 15
            while len(got) < high - low and time.time() < deadline:
                m = c.poll(0.5)
                if m is not None and m.error() is None:
                    got.append((m.offset(), int(m.value()[:8])))
            c.close()
            assert got == [(o, o) for o in range(low, high)]
        finally:
            b.stop()


def test_retention_ms_deletes_segments_older_than_the_limit():
    with tempfile.TemporaryDirectory(prefix="sluice-ret-") as tmp:
        b = _broker(tmp)
        try:
            _create(b.bootstrap, "timed", {"segment.bytes": "8192", "retention.ms": "1000"})
            _produce(b.bootstrap, "timed", 50, 1000)
            # Closed segments become older than a second; the active one is never deleted.
            low, high = _wait_for_low(b.bootstrap, "timed", lambda low: low > 0)
            assert high == 50
            assert 0 < low < 50, (low, high)
        finally:
            b.stop()
