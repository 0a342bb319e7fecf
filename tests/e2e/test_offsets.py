"""Offsets as clients see them: watermarks (ListOffsets earliest/latest), lookups by timestamp,
seeking, out-of-range handling with auto.offset.reset, DeleteRecords, long polling and fetch
sessions."""

import logging
import threading
import time

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP

from datapath import TIMEOUT_S, ck_consume, ck_produce, create_topic, kp_consume, record

BASE_TS = 1_600_000_000_000


def consumer(broker, **config):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"g-{time.monotonic_ns()}",
        "enable.auto.commit": False,
    }
    conf.update(config)
    return Consumer(conf)


def fill(broker, topic, n, partition=0, **config):
    """Produces n records with timestamps BASE_TS + 1000*i, several per batch."""
    ck_produce(
        broker,
        topic,
        [record(None, f"v{i}".encode(), timestamp=BASE_TS + 1000 * i, partition=partition)
         for i in range(n)],
        **config,
    )


def test_watermarks_and_timestamp_lookups(broker):
    create_topic(broker, "wm")
    c = consumer(broker)
    try:
        assert c.get_watermark_offsets(TopicPartition("wm", 0), timeout=10) == (0, 0)
        fill(broker, "wm", 50, **{"linger.ms": 100})
        assert c.get_watermark_offsets(TopicPartition("wm", 0), timeout=10) == (0, 50)
        # Exact records even though they sit inside multi-record batches.
        asked = [TopicPartition("wm", 0, BASE_TS + 1000 * i) for i in (0, 7, 23)]
        for i, tp in zip((0, 7, 23), asked):
            got = c.offsets_for_times([tp], timeout=10)[0]
            assert got.error is None and got.offset == i, (i, got)
        between = c.offsets_for_times([TopicPartition("wm", 0, BASE_TS + 7500)], timeout=10)[0]
        assert between.offset == 8
        after = c.offsets_for_times([TopicPartition("wm", 0, BASE_TS + 10**9)], timeout=10)[0]
        assert after.offset == OFFSET_END  # -1: no record that late
    finally:
        c.close()
    # kafka-python agrees, through its own ListOffsets versions.
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tp = KTP("wm", 0)
        assert kc.beginning_offsets([tp]) == {tp: 0}
        assert kc.end_offsets([tp]) == {tp: 50}
        found = kc.offsets_for_times({tp: BASE_TS + 12_000})[tp]
        assert (found.offset, found.timestamp) == (12, BASE_TS + 12_000)
    finally:
        kc.close()


def test_seek_reads_from_the_offset_asked(broker):
    create_topic(broker, "seek")
    fill(broker, "seek", 30)
    got = ck_consume(broker, "seek", 10, start=20)
    assert [m.offset() for m in got] == list(range(20, 30))
    assert [m.value() for m in got] == [f"v{i}".encode() for i in range(20, 30)]


def test_out_of_range_resets_to_earliest_or_latest(broker):
    create_topic(broker, "oor")
    fill(broker, "oor", 10)
    got = ck_consume(broker, "oor", 10, start=500, **{"auto.offset.reset": "earliest"})
    assert [m.offset() for m in got] == list(range(10))
    c = consumer(broker, **{"auto.offset.reset": "latest"})
    try:
        c.assign([TopicPartition("oor", 0, 500)])
        # Let the fetch at 500 fail and the reset to the end (10) happen; nothing is delivered.
        deadline = time.time() + 1.5
        while time.time() < deadline:
            assert c.poll(0.2) is None
        ck_produce(broker, "oor", [record(None, b"new")])
        msg = None
        deadline = time.time() + TIMEOUT_S
        while msg is None and time.time() < deadline:
            msg = c.poll(0.5)
        assert msg is not None and (msg.offset(), msg.value()) == (10, b"new")
    finally:
        c.close()


def test_delete_records_moves_the_log_start(broker):
    create_topic(broker, "del", partitions=2)
    fill(broker, "del", 40, partition=0)
    fill(broker, "del", 5, partition=1)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.delete_records([TopicPartition("del", 0, 25), TopicPartition("del", 1, -1)])
    results = {tp.partition: f.result(timeout=TIMEOUT_S) for tp, f in futures.items()}
    assert results[0].low_watermark == 25
    assert results[1].low_watermark == 5
    c = consumer(broker)
    try:
        assert c.get_watermark_offsets(TopicPartition("del", 0), timeout=10) == (25, 40)
        assert c.get_watermark_offsets(TopicPartition("del", 1), timeout=10) == (5, 5)
    finally:
        c.close()
    # Reading from before the new start resets to it.
    got = ck_consume(broker, "del", 15, start=0, **{"auto.offset.reset": "earliest"})
    assert [m.offset() for m in got] == list(range(25, 40))
    # Beyond the high watermark is refused.
    bad = admin.delete_records([TopicPartition("del", 0, 41)])
    error = None
    try:
        next(iter(bad.values())).result(timeout=TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - the client raises KafkaException
        error = e
    assert error is not None and "OFFSET_OUT_OF_RANGE" in str(error)


def test_a_waiting_consumer_is_woken_by_a_produce(broker):
    create_topic(broker, "poll")
    c = consumer(broker, **{"fetch.wait.max.ms": 25000, "fetch.min.bytes": 1})
    c.assign([TopicPartition("poll", 0, 0)])
    received = {}

    def run():
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline:
            msg = c.poll(0.1)
            if msg is not None and msg.error() is None:
                received["at"] = time.monotonic()
                received["value"] = msg.value()
                return

    t = threading.Thread(target=run)
    t.start()
    # Let the consumer settle into a long poll on the empty partition first.
    time.sleep(1.5)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    producer.produce("poll", value=b"wake", partition=0)
    sent_at = time.monotonic()
    assert producer.flush(10) == 0
    t.join(TIMEOUT_S)
    c.close()
    assert received.get("value") == b"wake"
    # Woken by the append, not by fetch.wait.max.ms (25 s) running out. The bound leaves room
    # for the new producer's connection and metadata on a loaded machine.
    assert received["at"] - sent_at < 10.0, received["at"] - sent_at


def test_kafka_python_fetch_sessions_follow_a_growing_log(broker, caplog):
    # kafka-python uses incremental fetch sessions (KIP-227): after the first full fetch it
    # sends only partitions whose position changed and expects only changed ones back.
    caplog.set_level(logging.DEBUG, logger="kafka.consumer.fetcher")
    create_topic(broker, "sess", partitions=3)
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                       fetch_max_wait_ms=200)
    tps = [KTP("sess", p) for p in range(3)]
    kc.assign(tps)
    kc.seek_to_beginning(*tps)
    seen = {p: [] for p in range(3)}
    try:
        for round_ in range(4):
            for p in range(3):
                if (round_ + p) % 2 == 0:
                    ck_produce(broker, "sess",
                               [record(None, f"{round_}:{p}:{i}".encode(), partition=p)
                                for i in range(5)])
            deadline = time.time() + TIMEOUT_S
            want = sum(5 for r in range(round_ + 1) for p in range(3) if (r + p) % 2 == 0)
            while sum(map(len, seen.values())) < want and time.time() < deadline:
                for tp, msgs in kc.poll(timeout_ms=300).items():
                    seen[tp.partition].extend(m.offset for m in msgs)
            assert sum(map(len, seen.values())) == want
    finally:
        kc.close()
    for p, offsets in seen.items():
        assert offsets == list(range(len(offsets))), (p, offsets)
    log = caplog.text
    assert "created a new incremental fetch session" in log
    assert "sent an incremental fetch response for session" in log
    assert "invalid" not in log and "unable to process the fetch request" not in log


def test_kafka_python_reads_what_it_wrote_by_offset(broker):
    create_topic(broker, "kpo")
    fill(broker, "kpo", 12)
    got = kp_consume(broker, "kpo", 12)
    assert [m.offset for m in got] == list(range(12))
    assert [m.timestamp for m in got] == [BASE_TS + 1000 * i for i in range(12)]


def test_admin_list_offsets_max_timestamp_finds_the_exact_record(broker):
    from confluent_kafka.admin import OffsetSpec

    create_topic(broker, "maxts")
    # The newest timestamp sits in the middle of a batch, not at its end.
    stamps = [BASE_TS + d for d in (5, 1, 9_000, 3, 2)]
    ck_produce(broker, "maxts", [record(None, f"{i}".encode(), timestamp=t)
                                 for i, t in enumerate(stamps)], **{"linger.ms": 100})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition("maxts", 0)
    specs = {
        "max": OffsetSpec.max_timestamp(),
        "earliest": OffsetSpec.earliest(),
        "latest": OffsetSpec.latest(),
        "by_ts": OffsetSpec.for_timestamp(BASE_TS + 4),
    }
    got = {}
    for name, spec in specs.items():
        result = admin.list_offsets({tp: spec})[tp].result(timeout=TIMEOUT_S)
        got[name] = (result.offset, result.timestamp)
    assert got["max"] == (2, BASE_TS + 9_000)
    assert got["earliest"][0] == 0
    assert got["latest"][0] == 5
    # The first record at or after the time, in offset order: offset 0 (BASE_TS + 5).
    assert got["by_ts"] == (0, BASE_TS + 5)
