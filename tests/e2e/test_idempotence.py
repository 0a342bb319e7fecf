"""Idempotent producers of real clients: every record stored exactly once and in order, even
when requests time out and are retried while their first attempt is still on its way (a
stalled broker), and when the broker is killed with SIGKILL mid-stream.

Values carry per-partition sequence numbers, so a duplicate, a gap or a reordering shows up in
what a consumer reads back.
"""

import os
import signal
import time

from confluent_kafka import Producer
from kafka import KafkaProducer

from datapath import ck_consume, create_topic

PARTITIONS = 3


def check_exactly_once_in_order(broker, topic, sent):
    """Each partition holds exactly the values sent to it, once each, in send order."""
    for p in range(PARTITIONS):
        got = ck_consume(broker, topic, len(sent[p]), partitions=(p,))
        values = [m.value().decode() for m in got]
        assert values == sent[p], (p, len(values), len(sent[p]))
        assert [m.offset() for m in got] == list(range(len(sent[p])))


def test_librdkafka_idempotent_producer_survives_kill9_without_duplicates(broker):
    create_topic(broker, "exactly", partitions=PARTITIONS)
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "linger.ms": 2,
        # Long enough to ride out the broker's restart: nothing may be given up.
        "message.timeout.ms": 120000,
        "retry.backoff.ms": 50,
        # Reconnect to the restarted broker quickly.
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        # A stopped broker makes requests time out; librdkafka then retries them (or resets
        # its sequences with a new producer id), and nothing may be lost or reordered.
        "request.timeout.ms": 1000,
    })
    errors = []
    acked = [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[0] += 1

    sent = {p: [] for p in range(PARTITIONS)}
    total = 6000
    stalled = killed = False
    i = 0
    deadline = time.time() + 90
    while (i < total or not killed) and time.time() < deadline:
        if i < total:
            p = i % PARTITIONS
            value = f"{p}-{len(sent[p])}"
            try:
                producer.produce("exactly", value=value.encode(), partition=p,
                                 on_delivery=on_delivery)
                sent[p].append(value)
                i += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        # Stall the broker once a quarter is acknowledged (the producer times out and
        # retries what is in flight), kill it at half (what was in flight at the kill is
        # retried against the restarted broker).
        if not stalled and acked[0] >= total // 4:
            os.kill(broker.proc.pid, signal.SIGSTOP)
            time.sleep(2.5)
            os.kill(broker.proc.pid, signal.SIGCONT)
            stalled = True
        if not killed and acked[0] >= total // 2:
            broker.kill9()
            time.sleep(0.3)
            broker.start()
            killed = True
    assert stalled and killed and i == total, (stalled, killed, i)
    assert producer.flush(90) == 0, "records still undelivered"
    assert errors == [], errors[:5]
    check_exactly_once_in_order(broker, "exactly", sent)


def test_kafka_python_idempotent_retries_after_timeouts_are_stored_once(broker):
    create_topic(broker, "kp-exactly", partitions=PARTITIONS)
    # Short request timeout: while the broker is stopped, requests time out and kafka-python
    # retries them with the same sequence numbers, while the first attempts still wait in the
    # broker's sockets. After SIGCONT the broker sees both and must store each batch once.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True,
                             acks="all", linger_ms=5, request_timeout_ms=1000,
                             retry_backoff_ms=50, delivery_timeout_ms=60000)
    sent = {p: [] for p in range(PARTITIONS)}
    futures = []
    for i in range(3000):
        p = i % PARTITIONS
        value = f"{p}-{len(sent[p])}"
        sent[p].append(value)
        futures.append(producer.send("kp-exactly", value=value.encode(), partition=p))
        if i == 1000:
            os.kill(broker.proc.pid, signal.SIGSTOP)
        if i == 1500:
            time.sleep(2.5)
            os.kill(broker.proc.pid, signal.SIGCONT)
    producer.flush(60)
    for f in futures:
        f.get(timeout=30)
    producer.close(10)
    check_exactly_once_in_order(broker, "kp-exactly", sent)


def test_kafka_python_idempotent_producer_survives_kill9_without_duplicates(broker):
    create_topic(broker, "kp-kill", partitions=PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True,
                             acks="all", linger_ms=2, request_timeout_ms=2000,
                             retry_backoff_ms=50, reconnect_backoff_ms=50,
                             reconnect_backoff_max_ms=500, delivery_timeout_ms=90000)
    sent = {p: [] for p in range(PARTITIONS)}
    futures = []
    for i in range(4000):
        p = i % PARTITIONS
        value = f"{p}-{len(sent[p])}"
        sent[p].append(value)
        futures.append(producer.send("kp-kill", value=value.encode(), partition=p))
        if i == 2000:
            # Let some of the first half be acknowledged, then crash the broker with batches
            # in flight: they are retried against the restarted broker, which must recognise
            # those it already stored from its recovered producer state.
            time.sleep(0.05)
            broker.kill9()
            time.sleep(0.3)
            broker.start()
    producer.flush(90)
    for f in futures:
        f.get(timeout=30)
    producer.close(10)
    check_exactly_once_in_order(broker, "kp-kill", sent)
