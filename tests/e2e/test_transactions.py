"""Transactions with real clients: transactional producers of confluent-kafka (librdkafka) and
kafka-python commit and abort across partitions; read_committed consumers see exactly the
committed records and read_uncommitted ones see everything; the last stable offset stalls
behind an open transaction; a second producer with the same transactional.id fences the
first; the coordinator aborts a transaction left open past its timeout; a broker killed with
SIGKILL in the middle of transactions leaves each transaction whole or absent; and a
consume-transform-produce application killed at random points leaves every input record in
the output exactly once.

Values name their transaction and their place in it, so a partial transaction, a duplicate or
a record of an aborted transaction shows up in what a consumer reads back.
"""

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

from datapath import create_topic

TIMEOUT_S = 30


def txn_producer(broker, txn_id, **config):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 5,
    }
    conf.update(config)
    producer = Producer(conf)
    producer.init_transactions(TIMEOUT_S)
    return producer


def plain_producer(broker):
    return Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})


def consumer(broker, isolation, **config):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"reader-{time.monotonic_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "isolation.level": isolation,
    }
    conf.update(config)
    return Consumer(conf)


def drain(broker, topic, partitions, isolation):
    """Every record a consumer of `isolation` reads from the beginning up to the end it is
    allowed to see (the LSO for read_committed, the high watermark otherwise), per partition:
    {partition: [(offset, value), ...]}."""
    c = consumer(broker, isolation)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out = {p: [] for p in partitions}
    at_end = set()
    deadline = time.time() + TIMEOUT_S
    try:
        while len(at_end) < len(partitions) and time.time() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_end.add(msg.partition())
                continue
            out[msg.partition()].append((msg.offset(), msg.value().decode()))
    finally:
        c.close()
    assert len(at_end) == len(partitions), f"reached the end of {at_end} only"
    return out


def values(drained):
    return {p: [v for _, v in records] for p, records in drained.items()}


def watermarks(broker, topic, partition, isolation):
    """(low, high) from ListOffsets at the consumer's isolation level: for read_committed the
    high end is the last stable offset."""
    c = consumer(broker, isolation)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def markers_written(broker, topic, partitions):
    """Waits until each partition's last stable offset has reached its high watermark. EndTxn
    is answered once the outcome is decided; the markers are written after it, as in Kafka, so
    a consumer right after commit_transaction() can still find the LSO before the marker."""
    deadline = time.time() + TIMEOUT_S
    while True:
        behind = [p for p in partitions
                  if watermarks(broker, topic, p, "read_committed")
                  != watermarks(broker, topic, p, "read_uncommitted")]
        if not behind:
            return
        assert time.time() < deadline, f"markers of {topic} {behind} never written"
        time.sleep(0.1)


def test_librdkafka_commit_and_abort_across_partitions(broker):
    create_topic(broker, "tx", partitions=3)
    producer = txn_producer(broker, "tx-app")
    committed = {p: [] for p in range(3)}
    everything = {p: [] for p in range(3)}
    for txn, outcome in enumerate(["commit", "abort", "commit", "abort", "commit"]):
        producer.begin_transaction()
        for i in range(30):
            p = i % 3
            value = f"{txn}-{outcome}-{i}"
            producer.produce("tx", value=value.encode(), partition=p)
            everything[p].append(value)
            if outcome == "commit":
                committed[p].append(value)
        if outcome == "commit":
            producer.commit_transaction(TIMEOUT_S)
        else:
            # Sent first, so the aborted records are in the log (abort_transaction purges
            # what is still queued) and read_uncommitted consumers see them.
            assert producer.flush(TIMEOUT_S) == 0
            producer.abort_transaction(TIMEOUT_S)

    markers_written(broker, "tx", range(3))
    read_committed = drain(broker, "tx", range(3), "read_committed")
    assert values(read_committed) == committed
    assert values(drain(broker, "tx", range(3), "read_uncommitted")) == everything
    # Each transaction ended with a marker, which takes an offset and is never delivered:
    # five markers per partition beyond the 50 data records.
    for p in range(3):
        offsets = [o for o, _ in read_committed[p]]
        assert offsets == sorted(offsets)
        low, high = watermarks(broker, "tx", p, "read_committed")
        assert (low, high) == (0, 55), (p, low, high)

    # An independent client agrees: kafka-python's read_committed consumer.
    kp = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                       enable_auto_commit=False, auto_offset_reset="earliest")
    tps = [KTopicPartition("tx", p) for p in range(3)]
    kp.assign(tps)
    kp.seek_to_beginning(*tps)
    got = {p: [] for p in range(3)}
    deadline = time.time() + TIMEOUT_S
    while sum(map(len, got.values())) < sum(map(len, committed.values())) \
            and time.time() < deadline:
        for tp, msgs in kp.poll(timeout_ms=500).items():
            got[tp.partition].extend(m.value.decode() for m in msgs)
    assert kp.end_offsets(tps) == {tp: 55 for tp in tps}
    kp.close()
    assert got == committed


def test_kafka_python_transactional_producer_commit_and_abort(broker):
    create_topic(broker, "kp-tx", partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="kp-tx-app",
                             linger_ms=5)
    producer.init_transactions()
    committed = {0: [], 1: []}
    everything = {0: [], 1: []}
    for txn, outcome in enumerate(["commit", "abort", "commit"]):
        producer.begin_transaction()
        for i in range(20):
            p = i % 2
            value = f"{txn}-{outcome}-{i}"
            producer.send("kp-tx", value=value.encode(), partition=p)
            everything[p].append(value)
            if outcome == "commit":
                committed[p].append(value)
        if outcome == "commit":
            producer.commit_transaction()
        else:
            producer.flush()
            producer.abort_transaction()
    producer.close(10)
    markers_written(broker, "kp-tx", range(2))
    assert values(drain(broker, "kp-tx", range(2), "read_committed")) == committed
    assert values(drain(broker, "kp-tx", range(2), "read_uncommitted")) == everything


def test_last_stable_offset_stalls_behind_an_open_transaction(broker):
    create_topic(broker, "lso")
    plain = plain_producer(broker)
    for i in range(5):
        plain.produce("lso", value=f"before-{i}".encode(), partition=0)
    assert plain.flush(TIMEOUT_S) == 0

    txn = txn_producer(broker, "lso-app")
    txn.begin_transaction()
    for i in range(5):
        txn.produce("lso", value=f"txn-{i}".encode(), partition=0)
    assert txn.flush(TIMEOUT_S) == 0
    for i in range(5):
        plain.produce("lso", value=f"after-{i}".encode(), partition=0)
    assert plain.flush(TIMEOUT_S) == 0

    # Offsets 0-4 before, 5-9 the open transaction, 10-14 after it.
    assert watermarks(broker, "lso", 0, "read_uncommitted") == (0, 15)
    assert watermarks(broker, "lso", 0, "read_committed") == (0, 5)
    assert values(drain(broker, "lso", [0], "read_committed")) == {
        0: [f"before-{i}" for i in range(5)]}

    txn.commit_transaction(TIMEOUT_S)
    markers_written(broker, "lso", [0])
    # The marker is offset 15; the LSO and the high watermark meet after it.
    assert watermarks(broker, "lso", 0, "read_committed") == (0, 16)
    assert watermarks(broker, "lso", 0, "read_uncommitted") == (0, 16)
    assert values(drain(broker, "lso", [0], "read_committed")) == {0: (
        [f"before-{i}" for i in range(5)] + [f"txn-{i}" for i in range(5)]
        + [f"after-{i}" for i in range(5)])}


def test_read_committed_consumer_waiting_at_the_lso_gets_records_when_the_transaction_commits(
        broker):
    create_topic(broker, "lso-wait")
    txn = txn_producer(broker, "lso-wait-app")
    txn.begin_transaction()
    for i in range(10):
        txn.produce("lso-wait", value=f"v-{i}".encode(), partition=0)
    assert txn.flush(TIMEOUT_S) == 0

    c = consumer(broker, "read_committed", **{"fetch.wait.max.ms": 25000})
    c.assign([TopicPartition("lso-wait", 0, OFFSET_BEGINNING)])
    try:
        seen = []
        deadline = time.time() + 2
        while time.time() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                seen.append(msg.value())
        assert seen == [], "records of an open transaction were delivered"
        committed_at = time.time()
        txn.commit_transaction(TIMEOUT_S)
        deadline = time.time() + TIMEOUT_S
        while len(seen) < 10 and time.time() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                seen.append(msg.value().decode())
        assert seen == [f"v-{i}" for i in range(10)]
        # The waiting fetch is woken by the marker, not by its own 25 s wait running out.
        assert time.time() - committed_at < 10
    finally:
        c.close()


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(broker):
    create_topic(broker, "fence", partitions=2)
    first = txn_producer(broker, "fenced-app")
    first.begin_transaction()
    for i in range(10):
        first.produce("fence", value=f"zombie-{i}".encode(), partition=i % 2)
    assert first.flush(TIMEOUT_S) == 0

    # The new instance's InitProducerId aborts the zombie's open transaction and bumps the
    # epoch; everything the zombie tries afterwards is refused.
    second = txn_producer(broker, "fenced-app")
    with pytest.raises(KafkaException) as fenced:
        first.produce("fence", value=b"zombie-late", partition=0)
        first.commit_transaction(TIMEOUT_S)
    assert fenced.value.args[0].fatal() or fenced.value.args[0].code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH), \
        fenced.value.args[0]

    second.begin_transaction()
    for i in range(10):
        second.produce("fence", value=f"live-{i}".encode(), partition=i % 2)
    second.commit_transaction(TIMEOUT_S)
    markers_written(broker, "fence", range(2))
    assert values(drain(broker, "fence", range(2), "read_committed")) == {
        p: [f"live-{i}" for i in range(p, 10, 2)] for p in range(2)}


@pytest.fixture
def fast_abort_broker(tmp_path):
    from conftest import Broker, free_port
    b = Broker(tmp_path / "data", free_port(),
               ["--transaction-abort-timed-out-transaction-cleanup-interval-ms", "200"])
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_a_transaction_left_open_past_its_timeout_is_aborted(fast_abort_broker):
    broker = fast_abort_broker
    create_topic(broker, "expire", partitions=2)
    # Long enough that the check of the open transaction below comes before the abort even
    # on a loaded machine.
    producer = txn_producer(broker, "slow-app", **{"transaction.timeout.ms": 5000})
    producer.begin_transaction()
    for i in range(10):
        producer.produce("expire", value=f"late-{i}".encode(), partition=i % 2)
    assert producer.flush(TIMEOUT_S) == 0
    assert watermarks(broker, "expire", 0, "read_committed") == (0, 0)

    # The coordinator aborts it: markers land and the LSO catches up with the high watermark.
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        if watermarks(broker, "expire", 0, "read_committed") == (0, 6):
            break
        time.sleep(0.2)
    assert watermarks(broker, "expire", 0, "read_committed") == (0, 6)
    assert values(drain(broker, "expire", range(2), "read_committed")) == {0: [], 1: []}
    assert len(drain(broker, "expire", range(2), "read_uncommitted")[0]) == 5

    # The producer learns it was aborted (its epoch was bumped) and cannot commit it.
    with pytest.raises(KafkaException):
        producer.commit_transaction(TIMEOUT_S)


TXN_LOOP = textwrap.dedent("""
    # A transactional producer committing numbered transactions until killed; prints each
    # transaction number once its commit returned.
    import sys
    from confluent_kafka import Producer
    bootstrap, topic, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    start = int(sys.argv[4])
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "restart-app",
                  "linger.ms": 2, "transaction.timeout.ms": 60000,
                  "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})
    p.init_transactions(60)
    n = start
    while True:
        p.begin_transaction()
        for i in range(size):
            p.produce(topic, value=f"{n}:{i}:{size}".encode(), partition=i % 3)
        try:
            p.commit_transaction(60)
        except Exception as e:
            if e.args[0].txn_requires_abort():
                p.abort_transaction(60)
                n += 1
                continue
            raise
        print(n, flush=True)
        n += 1
""")


class CommittedLines:
    """The transaction numbers a TXN_LOOP app prints, read from its stdout as they come."""

    def __init__(self, app):
        self.fd = app.stdout.fileno()
        self.buf = b""

    def next(self, timeout):
        """The next number, or None if none came within `timeout` s (or the app ended)."""
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.time()))
            chunk = os.read(self.fd, 4096) if ready else b""
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return int(line)

    def rest(self):
        """Every complete line left once the app has ended."""
        while chunk := os.read(self.fd, 4096):
            self.buf += chunk
        return [int(line) for line in self.buf.split(b"\n")[:-1]]


def test_broker_killed_in_the_middle_of_transactions_leaves_each_whole_or_absent(broker, tmp_path):
    create_topic(broker, "restart", partitions=3)
    script = tmp_path / "txn_loop.py"
    script.write_text(TXN_LOOP)
    size = 12
    confirmed = set()
    start = 0
    for round_ in range(3):
        stderr = tmp_path / f"txn_loop-{round_}.err"
        with open(stderr, "w") as err:
            app = subprocess.Popen([sys.executable, str(script), broker.bootstrap, "restart",
                                    str(size), str(start)], stdout=subprocess.PIPE, stderr=err)
        lines = CommittedLines(app)
        try:
            # Killed while it commits: after its first commit (start-up and init_transactions
            # take a while on a loaded machine), at a random point of a later transaction.
            first = lines.next(TIMEOUT_S)
            assert first is not None, \
                f"round {round_}: no transaction committed; stderr:\n{stderr.read_text()}"
            done = [first]
            time.sleep(random.random())
            broker.kill9()
            time.sleep(0.2)
            broker.start()
            # The producer rides out the restart (or aborts and goes on), then is stopped; a
            # commit it makes within the wait is among those checked below.
            after = lines.next(10)
        finally:
            app.send_signal(signal.SIGKILL)
            app.wait(10)
        done += ([after] if after is not None else []) + lines.rest()
        app.stdout.close()
        confirmed.update(done)
        start = max(done) + 1000

    # Each transaction appears whole (all `size` records, once each) or not at all, and every
    # transaction whose commit returned is there.
    seen = {}
    for p, vals in values(drain(broker, "restart", range(3), "read_committed")).items():
        for v in vals:
            n, i, _ = map(int, v.split(":"))
            seen.setdefault(n, []).append(i)
    for n, records in seen.items():
        assert sorted(records) == list(range(size)), (n, sorted(records))
    assert confirmed <= set(seen), sorted(confirmed - set(seen))[:10]


CTP_APP = textwrap.dedent("""
    # Consume-transform-produce with exactly-once: reads `in`, writes value + "!" to `out`,
    # and commits the input offsets in the same transaction.
    import sys
    from confluent_kafka import Consumer, Producer, KafkaException
    bootstrap = sys.argv[1]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ctp",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed", "session.timeout.ms": 2000,
                  "heartbeat.interval.ms": 500})
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "ctp-app",
                  "linger.ms": 2, "transaction.timeout.ms": 10000})
    p.init_transactions(30)
    c.subscribe(["in"])
    while True:
        msgs = c.consume(20, 0.5)
        msgs = [m for m in msgs if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce("out", value=m.value() + b"!", partition=m.partition())
        p.send_offsets_to_transaction(c.position(c.assignment()),
                                      c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
""")


def committed_offsets(broker, group, topic, partitions):
    # read_uncommitted: librdkafka's default read_committed asks for stable offsets (KIP-447),
    # which the broker withholds (UNSTABLE_OFFSET_COMMIT) while a killed instance's transaction
    # is still open; the committed offsets themselves are what is checked here.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "isolation.level": "read_uncommitted"})
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def test_consume_transform_produce_survives_random_application_crashes(broker, tmp_path):
    create_topic(broker, "in", partitions=3)
    create_topic(broker, "out", partitions=3)
    total = 3000
    plain = plain_producer(broker)
    for i in range(total):
        plain.produce("in", value=f"r{i}".encode(), partition=i % 3)
    assert plain.flush(TIMEOUT_S) == 0

    script = tmp_path / "ctp.py"
    script.write_text(CTP_APP)
    rng = random.Random(7)
    target = {p: total // 3 for p in range(3)}

    def progress():
        return sum(o for o in committed_offsets(broker, "ctp", "in", range(3)).values() if o > 0)

    def run_app():
        return subprocess.Popen([sys.executable, str(script), broker.bootstrap],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # Each instance is killed at a random moment after it has committed at least one
    # transaction, while input remains: mid-transaction, mid-commit or between transactions.
    done = 0
    for kill in range(4):
        app = run_app()
        deadline = time.time() + 60
        while progress() == done and time.time() < deadline:
            assert app.poll() is None, app.stderr.read()
            time.sleep(0.1)
        time.sleep(rng.random() * 0.5)
        app.send_signal(signal.SIGKILL)
        app.wait(10)
        now = progress()
        assert done < now < total, (kill, done, now)
        done = now

    # The last instance runs until every input offset is committed.
    app = run_app()
    deadline = time.time() + 120
    try:
        while time.time() < deadline and committed_offsets(broker, "ctp", "in", range(3)) != target:
            assert app.poll() is None, app.stderr.read()
            time.sleep(0.5)
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait(10)
    assert committed_offsets(broker, "ctp", "in", range(3)) == target

    markers_written(broker, "out", range(3))
    out = values(drain(broker, "out", range(3), "read_committed"))
    for p in range(3):
        expected = [f"r{i}!" for i in range(p, total, 3)]
        assert out[p] == expected, (p, len(out[p]), len(expected))
