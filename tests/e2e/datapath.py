"""Helpers shared by the data-path end-to-end tests: topic creation, producing and consuming
with confluent-kafka (librdkafka), kafka-python and kcat, and a normalised record shape so
records from different clients can be compared byte for byte."""

import subprocess
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

TIMEOUT_S = 30


def create_topic(broker, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
    )
    futures[name].result(timeout=TIMEOUT_S)


def record(key, value, headers=(), timestamp=None, partition=0):
    """A record as tests compare it: bytes or None for key/value, headers as a tuple of
    (str, bytes) pairs."""
    return {
        "key": key,
        "value": value,
        "headers": tuple(headers),
        "timestamp": timestamp,
        "partition": partition,
    }


# ---- confluent-kafka ----------------------------------------------------------------------


def ck_produce(broker, topic, records, **config):
    conf = {"bootstrap.servers": broker.bootstrap, "linger.ms": 5}
    conf.update(config)
    producer = Producer(conf)
    errors = []

    def report(err, _msg):
        if err is not None:
            errors.append(err)

    for r in records:
        kwargs = {"key": r["key"], "value": r["value"], "partition": r["partition"]}
        if r["headers"]:
            kwargs["headers"] = list(r["headers"])
        if r["timestamp"] is not None:
            kwargs["timestamp"] = r["timestamp"]
        while True:
            try:
                producer.produce(topic, on_delivery=report, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not errors, errors


def ck_consume(broker, topic, count, partitions=(0,), start=OFFSET_BEGINNING, **config):
    """Consumes `count` messages from `partitions` starting at `start`; returns Message objects."""
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"g-{topic}-{time.monotonic_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(config)
    consumer = Consumer(conf)
    consumer.assign([TopicPartition(topic, p, start) for p in partitions])
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


def ck_records(messages):
    return [
        record(
            m.key(),
            m.value(),
            tuple((k, v) for k, v in (m.headers() or [])),
            m.timestamp()[1],
            m.partition(),
        )
        for m in messages
    ]


# ---- kafka-python -------------------------------------------------------------------------


def kp_produce(broker, topic, records, **config):
    # Plain (non-idempotent) produce unless a test asks otherwise: these helpers check the
    # data path itself; tests/e2e/test_idempotence.py covers idempotent producers.
    conf = {
        "bootstrap_servers": broker.bootstrap,
        "linger_ms": 5,
        "request_timeout_ms": 20000,
        "enable_idempotence": False,
    }
    conf.update(config)
    producer = KafkaProducer(**conf)
    try:
        futures = [
            producer.send(
                topic,
                key=r["key"],
                value=r["value"],
                headers=list(r["headers"]) or None,
                partition=r["partition"],
                timestamp_ms=r["timestamp"],
            )
            for r in records
        ]
        producer.flush(TIMEOUT_S)
        return [f.get(timeout=TIMEOUT_S) for f in futures]
    finally:
        producer.close(timeout=5)


def kp_consume(broker, topic, count, partitions=(0,), **config):
    conf = {
        "bootstrap_servers": broker.bootstrap,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": 20000,
    }
    conf.update(config)
    consumer = KafkaConsumer(**conf)
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


def kp_records(messages):
    return [
        record(m.key, m.value, tuple((k, v) for k, v in (m.headers or [])), m.timestamp, m.partition)
        for m in messages
    ]


# ---- kcat ---------------------------------------------------------------------------------


def kcat(broker, *args, stdin=None):
    return subprocess.run(
        ["kcat", "-b", broker.bootstrap, *args],
        input=stdin,
        capture_output=True,
        check=True,
        timeout=TIMEOUT_S,
    ).stdout
