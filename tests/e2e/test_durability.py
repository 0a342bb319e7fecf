"""Records acknowledged with acks=all survive kill -9 of the broker and a restart: none lost,
none duplicated, offsets dense."""

import threading
import time

from confluent_kafka import Producer

from datapath import ck_consume, ck_produce, create_topic, record


def test_acks_all_survives_kill9(broker):
    create_topic(broker, "durable", partitions=4)
    acked = {p: {} for p in range(4)}
    lock = threading.Lock()

    def on_delivery(err, msg):
        if err is None:
            with lock:
                acked[msg.partition()][msg.offset()] = msg.value()

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                         "linger.ms": 2, "retries": 0, "message.timeout.ms": 5000})
    # Keep producing while the broker is killed, so some requests are in flight at the kill.
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            try:
                producer.produce("durable", value=f"r{i}".encode(), partition=i % 4,
                                 on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            producer.poll(0.001)

    t = threading.Thread(target=produce)
    t.start()
    deadline = time.time() + 30
    while sum(len(v) for v in acked.values()) < 1000 and time.time() < deadline:
        time.sleep(0.05)
    broker.kill9()
    stop.set()
    t.join(10)
    producer.flush(10)  # delivery reports for what was in flight: all fail
    total = sum(len(v) for v in acked.values())
    assert total >= 1000, total

    broker.start()
    for p in range(4):
        if not acked[p]:
            continue
        last = max(acked[p])
        got = ck_consume(broker, "durable", last + 1, partitions=(p,))
        offsets = [m.offset() for m in got]
        assert offsets == list(range(last + 1)), "gaps or duplicates after restart"
        by_offset = {m.offset(): m.value() for m in got}
        for offset, value in acked[p].items():
            assert by_offset[offset] == value, (p, offset)
        # Values are unique: nothing acknowledged was written twice.
        values = [m.value() for m in got]
        assert len(values) == len(set(values))


def test_a_corrupt_partition_goes_offline_and_the_rest_keeps_working(broker):
    from test_datapath_wire import produce_v3

    create_topic(broker, "fragile", partitions=2, config={"segment.bytes": "8192"})
    for p in (0, 1):
        ck_produce(broker, "fragile",
                   [record(None, b"x" * 500, partition=p) for _ in range(60)],
                   **{"linger.ms": 0, "batch.num.messages": 1})
    broker.stop()
    segments = sorted((broker.data_dir / "fragile-0").glob("*.log"))
    assert len(segments) >= 3, segments
    # Flip a byte inside the last batch of the first (closed) segment: its CRC no longer
    # matches, which recovery must not repair.
    data = bytearray(segments[0].read_bytes())
    data[-100] ^= 0xFF
    segments[0].write_bytes(bytes(data))
    broker.start()
    # KAFKA_STORAGE_ERROR (56) for the damaged partition only.
    assert produce_v3(broker, 1, "fragile", 0, b"x")[1] == 56
    got = ck_consume(broker, "fragile", 60, partitions=(1,))
    assert [m.offset() for m in got] == list(range(60))
    ck_produce(broker, "fragile", [record(None, b"still", partition=1)])
