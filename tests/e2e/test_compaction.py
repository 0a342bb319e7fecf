"""Log compaction seen by real clients: many versions of a set of keys are produced to a
`cleanup.policy=compact` topic with small segments; once the broker's cleaner has run, a
consumer from the beginning sees exactly one record per key, the latest (a deleted key as its
tombstone, which `delete.retention.ms` keeps), with increasing offsets. A second consumer reads
the whole topic over and over while the cleaner works: every complete read is consistent (the
latest value of every key, offsets increasing, no record that was never produced).

The cleaner runs every 15 s (`log.cleaner.backoff.ms`), so the test waits up to a minute.
"""

import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "compacted"
KEYS = 25
VERSIONS = 40
DELETED = {b"key-03", b"key-11"}


def _create(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = {
        "cleanup.policy": "compact",
        "segment.bytes": "16384",
        "segment.ms": "500",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "86400000",
    }
    admin.create_topics([NewTopic(TOPIC, 1, 1, config=configs)])[TOPIC].result(timeout=10)


def _read_all(bootstrap, group):
    """Every record from the beginning to the high watermark: [(offset, key, value)]."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        _, high = c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
        c.assign([TopicPartition(TOPIC, 0, 0)])
        out = []
        deadline = time.time() + 30
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                if c.position([TopicPartition(TOPIC, 0)])[0].offset >= high:
                    break
                continue
            assert m.error() is None, m.error()
            out.append((m.offset(), m.key(), m.value()))
            if m.offset() >= high - 1:
                break
        return out
    finally:
        c.close()


def _check_consistent(records, latest):
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets not strictly increasing"
    last = {}
    for _, k, v in records:
        last[k] = v
    for k, v in latest.items():
        assert last.get(k, v) == v, f"{k}: last value {last.get(k)!r} is not the latest {v!r}"
    return last


def test_consumer_sees_latest_per_key_after_cleaning(broker):
    _create(broker.bootstrap)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    latest = {}
    for version in range(VERSIONS):
        for k in range(KEYS):
            key = b"key-%02d" % k
            value = b"v%03d-" % version + b"x" * 60
            if version == VERSIONS - 1 and key in DELETED:
                value = None
            p.produce(TOPIC, key=key, value=value)
            latest[key] = value
        p.flush(10)
        if version % 10 == 9:
            time.sleep(0.6)  # segment.ms: the next batch rolls the segment
    assert p.flush(30) == 0
    time.sleep(0.6)
    # A last record rolls the segment holding the final versions, so they become cleanable.
    p.produce(TOPIC, key=b"sentinel", value=b"end")
    assert p.flush(10) == 0
    latest[b"sentinel"] = b"end"
    produced = KEYS * VERSIONS + 1

    stop = threading.Event()
    failures = []
    passes = [0]

    def read_during_cleaning():
        while not stop.is_set():
            try:
                _check_consistent(_read_all(broker.bootstrap, "during"), latest)
                passes[0] += 1
            except Exception as e:  # reported by the main thread
                failures.append(e)
                return

    reader = threading.Thread(target=read_during_cleaning)
    reader.start()
    try:
        deadline = time.time() + 75
        records = []
        while time.time() < deadline:
            records = _read_all(broker.bootstrap, "after")
            if len(records) <= len(latest):
                break
            time.sleep(2)
    finally:
        stop.set()
        reader.join(60)
    assert not failures, failures
    assert passes[0] >= 1
    assert len(records) < produced, "the cleaner never ran"
    last = _check_consistent(records, latest)
    keys = [k for _, k, _ in records]
    assert sorted(keys) == sorted(latest), "one record per key after cleaning"
    assert last == latest
    for k in DELETED:
        assert last[k] is None, "a recent tombstone is kept"
    # Offsets keep their gaps: the sentinel is still the last offset produced.
    assert records[-1][0] == produced - 1
