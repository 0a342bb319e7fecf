"""Log compaction seen by real clients: many versions of a set of keys are produced to a
`cleanup.policy=compact` topic with small segments; once the broker's cleaner has run, a
consumer from the beginning sees exactly one record per key, the latest (a deleted key as its
tombstone, which `delete.retention.ms` keeps), with increasing offsets. A second consumer reads
the whole topic over and over while the cleaner works: every complete read is consistent (the
latest value of every key, offsets increasing, no record that was never produced).

The broker runs its cleaner every 300 ms here (`--log-cleaner-backoff-ms`; Kafka's default is
15 s). The crash test kills the broker with SIGKILL again and again while the cleaner works on a
larger log: after every restart the log reads back consistent and no key's latest value is lost.
"""

import os
import random
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port

TOPIC = "compacted"
KEYS = 25
VERSIONS = 40
DELETED = {b"key-03", b"key-11"}


def _broker(tmp):
    b = Broker(Path(tmp) / "data", free_port(), ["--log-cleaner-backoff-ms", "300"])
    return b.start()


def _create(bootstrap, segment_bytes=16384):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = {
        "cleanup.policy": "compact",
        "segment.bytes": str(segment_bytes),
        "segment.ms": "500",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "86400000",
    }
    admin.create_topics([NewTopic(TOPIC, 1, 1, config=configs)])[TOPIC].result(timeout=10)


def _read_all(bootstrap, group, topic=TOPIC, start=0):
    """Every record from `start` to the high watermark: [(offset, key, value)]."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, start)])
        out = []
        deadline = time.time() + 30
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                if c.position([TopicPartition(topic, 0)])[0].offset >= high:
                    break
                continue
            assert m.error() is None, m.error()
            out.append((m.offset(), m.key(), m.value()))
            if m.offset() >= high - 1:
                break
        return out
    finally:
        c.close()


def _internal_records(bootstrap, topic):
    """The keys of every record partition 0 of an internal topic holds now, and its high
    watermark (read from the start with a throwaway group)."""
    r = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "enable.auto.commit": False}
    )
    try:
        tp = TopicPartition(topic, 0, 0)
        _, high = r.get_watermark_offsets(tp, timeout=10)
        r.assign([tp])
        keys = []
        deadline = time.time() + 20
        while time.time() < deadline:
            m = r.poll(0.5)
            if m is None:
                if r.position([tp])[0].offset >= high:
                    break
                continue
            assert m.error() is None, m.error()
            keys.append(m.key())
            if m.offset() >= high - 1:
                break
        return keys, high
    finally:
        r.close()


def _check_consistent(records, latest):
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets not strictly increasing"
    last = {}
    for _, k, v in records:
        last[k] = v
    for k, v in latest.items():
        assert last.get(k, v) == v, f"{k}: last value {last.get(k)!r} is not the latest {v!r}"
    return last


def test_consumer_sees_latest_per_key_after_cleaning():
    with tempfile.TemporaryDirectory(prefix="sluice-e2e-") as tmp:
        broker = _broker(tmp)
        try:
            _latest_per_key_after_cleaning(broker)
            # The cleaner paced itself by its backlog (the default): a log this small is
            # cleaned at the floor of 8 MiB/s of I/O, not unpaced (0).
            rate = _metric_sum(broker, "sluice_cleaner_io_rate_bytes_per_second")
            assert rate >= 8 * 2**20, rate
        finally:
            broker.stop()


def _latest_per_key_after_cleaning(broker):
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


def _produce_versions(bootstrap, keys, first, count, latest, rng):
    """`count` versions of every key, rolling the segment after them; returns delivery errors."""
    errors = []

    def report(err, _msg):
        if err is not None:
            errors.append(err)

    # Batches stay well below segment.bytes (a larger one is refused, as by Kafka).
    p = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "batch.size": 16384}
    )
    for version in range(first, first + count):
        for k in range(keys):
            key = b"key-%02d" % k
            value = b"v%04d-" % version + bytes([65 + k % 26]) * rng.randrange(50, 400)
            p.produce(TOPIC, key=key, value=value, on_delivery=report)
            latest[key] = value
        p.poll(0)
    assert p.flush(30) == 0
    time.sleep(0.6)  # segment.ms: the next record rolls the segment
    p.produce(TOPIC, key=b"sentinel", value=b"%d" % first, on_delivery=report)
    latest[b"sentinel"] = b"%d" % first
    assert p.flush(10) == 0
    return errors


def _kill_when_cleaning(broker, topic_dir, timeout_s):
    """SIGKILLs the broker as soon as the cleaner's output file (`.cleaned`, or a committed
    `.swap`) appears in the partition directory, or after `timeout_s`. Returns whether the kill
    landed while cleaning."""
    deadline = time.time() + timeout_s
    hit = False
    while time.time() < deadline and not hit:
        try:
            hit = any(n.endswith((".cleaned", ".swap")) for n in os.listdir(topic_dir))
        except FileNotFoundError:
            pass
        if not hit:
            time.sleep(0.0005)
    broker.kill9()
    return hit


def test_kill9_while_cleaning_loses_nothing():
    """Each round produces more versions, so the broker has dirty data to clean, then kills it
    with SIGKILL the moment the cleaner's output file appears (mid-cleaning), and restarts it:
    the log must read back consistent with every key's latest value. The deterministic crash
    after each step of the segment swap is the engine test `compaction_matches_model`."""
    rng = random.Random(8)
    keys = 60
    with tempfile.TemporaryDirectory(prefix="sluice-e2e-") as tmp:
        broker = _broker(tmp)
        topic_dir = Path(tmp) / "data" / f"{TOPIC}-0"
        try:
            _create(broker.bootstrap, segment_bytes=65536)
            latest = {}
            produced = 0
            hits = 0
            for round_ in range(6):
                errors = _produce_versions(broker.bootstrap, keys, round_ * 40, 40, latest, rng)
                assert not errors, errors[:3]
                produced += keys * 40 + 1
                hits += _kill_when_cleaning(broker, topic_dir, 5.0)
                broker.start()
                records = _read_all(broker.bootstrap, "crash-%d" % round_)
                last = _check_consistent(records, latest)
                assert last == latest, "a key's latest value is missing after a crash"
                assert records[-1][0] == produced - 1
            assert hits >= 1, "no kill landed while the cleaner was writing"
            # The cleaner finishes after the crashes: one record per key, but the last sentinel
            # sits in the active segment, which is never cleaned, so the one before it stays.
            deadline = time.time() + 60
            size = None
            while time.time() < deadline and size != len(latest) + 1:
                time.sleep(1)
                records = _read_all(broker.bootstrap, "final-%d" % int(time.time()))
                size = len(records)
            keys_seen = [k for _, k, _ in records if k != b"sentinel"]
            assert sorted(keys_seen) == sorted(k for k in latest if k != b"sentinel")
            assert size == len(latest) + 1, size
            assert _check_consistent(records, latest) == latest
        finally:
            broker.stop()


def test_consumer_offsets_are_compacted_and_replay_after_restart():
    """`__consumer_offsets` is a compacted topic like any other: with small segments, hundreds
    of commits of one group shrink to about one record per key, and the group coordinator's
    replay of the cleaned log after a restart gives back the last committed offsets."""
    from confluent_kafka.admin import ConfigResource

    with tempfile.TemporaryDirectory(prefix="sluice-e2e-") as tmp:
        broker = Broker(
            Path(tmp) / "data",
            free_port(),
            ["--log-cleaner-backoff-ms", "300", "--offsets-topic-num-partitions", "1"],
        ).start()
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            admin.create_topics([NewTopic("data", 2, 1)])["data"].result(timeout=10)
            res = ConfigResource(
                "topic",
                "__consumer_offsets",
                set_config={
                    "cleanup.policy": "compact",
                    "segment.bytes": "4096",
                    "segment.ms": "200",
                    "min.cleanable.dirty.ratio": "0.01",
                },
            )
            for f in admin.alter_configs([res]).values():
                f.result(timeout=10)
            commits = 400
            for group in ("g1", "g2"):
                c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
                for i in range(commits):
                    c.commit(
                        offsets=[
                            TopicPartition("data", 0, i + 1),
                            TopicPartition("data", 1, 2 * i + 1),
                        ],
                        asynchronous=False,
                    )
                    if i % 100 == 99:
                        time.sleep(0.25)  # segment.ms rolls the offsets log
                c.close()
            time.sleep(0.3)
            # One more commit of another group rolls the segment holding the last commits.
            c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "roller"})
            c.commit(offsets=[TopicPartition("data", 0, 1)], asynchronous=False)
            c.close()

            def stored_records():
                return len(_internal_records(broker.bootstrap, "__consumer_offsets")[0])

            deadline = time.time() + 60
            n = stored_records()
            while time.time() < deadline and n > 50:
                time.sleep(1)
                n = stored_records()
            assert n <= 50, f"{n} records in __consumer_offsets after cleaning"
            broker.stop()
            broker.start()
            for group, want in (("g1", (commits, 2 * commits - 1)), ("g2", (commits, 2 * commits - 1))):
                c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
                got = None
                deadline = time.time() + 30
                while time.time() < deadline:
                    try:
                        got = c.committed(
                            [TopicPartition("data", 0), TopicPartition("data", 1)], timeout=5
                        )
                        break
                    except Exception:  # the coordinator may still be loading
                        time.sleep(0.5)
                c.close()
                assert got is not None
                assert (got[0].offset, got[1].offset) == want, (group, got)
        finally:
            broker.stop()


def test_transaction_state_is_compacted_and_replays_after_restart():
    """`__transaction_state` is cleaned too: with small segments
    (`--transaction-state-log-segment-bytes`), forty transactions of each of a few
    transactional ids shrink to one record per id (its latest state), and after a restart the
    coordinator's replay of the cleaned log lets a new producer with the same id initialise and
    commit; a read_committed consumer sees exactly the committed data."""
    from test_transactions import drain, markers_written, values

    ids = ["app-0", "app-1", "app-2"]
    rounds = 40
    with tempfile.TemporaryDirectory(prefix="sluice-e2e-") as tmp:
        broker = Broker(
            Path(tmp) / "data",
            free_port(),
            [
                "--log-cleaner-backoff-ms",
                "300",
                "--transaction-state-log-num-partitions",
                "1",
                "--transaction-state-log-segment-bytes",
                "4096",
            ],
        ).start()
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            admin.create_topics([NewTopic("txn-data", 2, 1)])["txn-data"].result(timeout=10)

            def producer(txn_id):
                p = Producer(
                    {"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id, "linger.ms": 0}
                )
                p.init_transactions(30)
                return p

            committed = {0: [], 1: []}
            producers = {i: producer(i) for i in ids}
            for n in range(rounds):
                for txn_id, p in producers.items():
                    p.begin_transaction()
                    for part in (0, 1):
                        p.produce("txn-data", f"{txn_id}-{n}-{part}".encode(), partition=part)
                    if n % 7 == 3:
                        # Delivered first, so that the abort has data and markers to write.
                        assert p.flush(10) == 0
                        p.abort_transaction(30)
                    else:
                        p.commit_transaction(30)
                        for part in (0, 1):
                            committed[part].append(f"{txn_id}-{n}-{part}")
            # Another id's transactions roll the segments holding the tracked ids' last states
            # (the cleaner never touches the active segment).
            filler = producer("filler")
            for n in range(30):
                filler.begin_transaction()
                filler.produce("txn-data", f"filler-{n}".encode(), partition=0)
                filler.commit_transaction(30)
                committed[0].append(f"filler-{n}")
            for p in [*producers.values(), filler]:
                p.flush(10)
            del producers, filler

            def records_per_id():
                """{transactional id: records in __transaction_state}, and its high watermark."""
                keys, high = _internal_records(broker.bootstrap, "__transaction_state")
                counts = {}
                for key in keys:
                    # TransactionLogKey: version int16, then the id as an int16-prefixed string.
                    txn_id = key[4 : 4 + int.from_bytes(key[2:4], "big")].decode()
                    counts[txn_id] = counts.get(txn_id, 0) + 1
                return counts, high

            deadline = time.time() + 60
            counts, high = records_per_id()
            while time.time() < deadline and any(counts.get(i) != 1 for i in ids):
                time.sleep(1)
                counts, high = records_per_id()
            # Each id wrote an Ongoing, a Prepare and a Complete record per transaction (the
            # consumer saw only what the cleaner left: the offsets tell what was written).
            assert high >= len(ids) * rounds * 3, high
            assert {i: counts.get(i) for i in ids} == {i: 1 for i in ids}, counts

            broker.stop()
            broker.start()
            again = producer("app-0")
            again.begin_transaction()
            for part in (0, 1):
                again.produce("txn-data", f"app-0-after-restart-{part}".encode(), partition=part)
            again.commit_transaction(30)
            for part in (0, 1):
                committed[part].append(f"app-0-after-restart-{part}")
            again.flush(10)
            del again
            markers_written(broker, "txn-data", [0, 1])
            seen = values(drain(broker, "txn-data", [0, 1], "read_committed"))
            assert {p: sorted(v) for p, v in seen.items()} == {
                p: sorted(v) for p, v in committed.items()
            }
            # The aborted transactions' records are in the log; only read_committed hides them.
            everything = values(drain(broker, "txn-data", [0, 1], "read_uncommitted"))
            assert "app-1-3-0" in everything[0] and "app-1-3-0" not in seen[0]
        finally:
            broker.stop()


def _metric_sum(broker, name):
    """The sum over shards of a /metrics family."""
    with urllib.request.urlopen(f"{broker.admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_a_corrupt_segment_makes_only_its_partition_uncleanable():
    """A batch damaged on disk (one flipped byte in a closed segment) stops the cleaning of its
    partition only: the broker logs it once, /metrics counts one uncleanable partition, the
    other compacted topic is cleaned, and the damaged partition still serves reads past the
    damage and takes new records; deleting the topic clears the count."""
    topics = ("broken", "healthy")
    with tempfile.TemporaryDirectory(prefix="sluice-e2e-") as tmp:
        data, port = Path(tmp) / "data", free_port()
        # No cleaning while the logs are written: the damage must meet a dirty log.
        broker = Broker(data, port, ["--log-cleaner-backoff-ms", "600000"]).start()
        latest = {t: {} for t in topics}
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            configs = {
                "cleanup.policy": "compact",
                "segment.bytes": "4096",
                "min.cleanable.dirty.ratio": "0.01",
                # An index entry per batch: start-up checks only a closed segment's batches from
                # its last index entry on, so the damage below stays for the cleaner to find.
                "index.interval.bytes": "1",
            }
            for f in admin.create_topics([NewTopic(t, 1, 1, config=configs) for t in topics]).values():
                f.result(timeout=10)
            p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
            for version in range(30):
                for t in topics:
                    for k in range(10):
                        key, value = b"key-%02d" % k, b"v%03d-" % version + b"x" * 80
                        p.produce(t, key=key, value=value)
                        latest[t][key] = value
                assert p.flush(10) == 0
        finally:
            broker.stop()
        produced = 30 * 10
        logs = sorted((data / "broken-0").glob("*.log"))
        assert len(logs) >= 3 and logs[0].stat().st_size > 3000, logs
        with open(logs[0], "r+b") as f:
            first_len = 12 + int.from_bytes(f.read(12)[8:12], "big")
            f.seek(first_len + 61 + 20)  # inside the second batch's records: its CRC fails
            byte = f.read(1)
            f.seek(first_len + 61 + 20)
            f.write(bytes([byte[0] ^ 0xFF]))
        second_base = int(logs[1].stem)

        broker = Broker(data, port, ["--log-cleaner-backoff-ms", "300"]).start()
        try:
            deadline = time.time() + 60
            healthy = []
            while time.time() < deadline:
                healthy = _read_all(broker.bootstrap, "check", "healthy")
                if (
                    _metric_sum(broker, "sluice_cleaner_uncleanable_partitions") == 1
                    and len(healthy) < produced
                ):
                    break
                time.sleep(0.5)
            assert _metric_sum(broker, "sluice_cleaner_uncleanable_partitions") == 1, broker.log()
            assert _metric_sum(broker, "sluice_cleaner_uncleanable_bytes") > 0
            assert len(healthy) < produced, "the healthy topic is cleaned"
            assert _check_consistent(healthy, latest["healthy"]) == latest["healthy"]
            time.sleep(1.5)  # several more rounds: the broken partition is not retried
            assert broker.log().count("marked uncleanable") == 1, broker.log()
            # Reads past the damage and appends go on; nothing there was removed.
            p = Producer({"bootstrap.servers": broker.bootstrap})
            p.produce("broken", key=b"key-00", value=b"after")
            assert p.flush(10) == 0
            records = _read_all(broker.bootstrap, "past", "broken", second_base)
            assert [o for o, _, _ in records] == list(range(second_base, produced + 1))
            assert records[-1][1:] == (b"key-00", b"after")
            # Deleting the topic takes the mark with it.
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            admin.delete_topics(["broken"])["broken"].result(timeout=10)
            deadline = time.time() + 20
            while time.time() < deadline:
                if _metric_sum(broker, "sluice_cleaner_uncleanable_partitions") == 0:
                    break
                time.sleep(0.3)
            assert _metric_sum(broker, "sluice_cleaner_uncleanable_partitions") == 0
            assert _metric_sum(broker, "sluice_cleaner_uncleanable_bytes") == 0
        finally:
            broker.stop()
