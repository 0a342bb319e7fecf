"""A producer with many requests in flight on one connection gets its records stored in the
order it sent them: offset n holds the n-th record, for every acks level and both clients.

librdkafka pipelines up to max.in.flight requests per connection; a broker that handled them
concurrently could let a later request overtake an earlier one at the partition. One record per
request (batch.num.messages=1, linger 0) maximises the number of requests in flight, and tiny
segments make the partition roll every few records: a roll makes an append wait, which is
exactly when a concurrently handled later request could overtake it.
"""

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer

N = 1500


def _read_all(bootstrap, topic, n):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "order",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    misses = 0
    while len(got) < n and misses < 40:
        m = c.poll(0.5)
        if m is None:
            misses += 1
            continue
        assert m.error() is None, m.error()
        got.append((m.offset(), int(m.value())))
    c.close()
    return got


def _create(bootstrap, topic):
    # The admin client must outlive the future: destroying it cancels the request.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, 1, 1, config={"segment.bytes": "4096"})
    admin.create_topics([new])[topic].result(timeout=10)


@pytest.mark.parametrize("acks", ["1", "all"])
def test_confluent_kafka_pipelined_requests_keep_their_order(broker, acks):
    topic = f"order-{acks}"
    _create(broker.bootstrap, topic)
    p = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": acks,
            "linger.ms": 0,
            "batch.num.messages": 1,
            "max.in.flight.requests.per.connection": 5,
            "enable.idempotence": False,
        }
    )
    failures = []
    for i in range(N):
        p.produce(topic, value=str(i).encode(), on_delivery=lambda e, m: e and failures.append(e))
        p.poll(0)
    assert p.flush(60) == 0
    assert failures == []
    assert _read_all(broker.bootstrap, topic, N) == [(i, i) for i in range(N)]


def test_kafka_python_pipelined_requests_keep_their_order(broker):
    topic = "order-kp"
    _create(broker.bootstrap, topic)
    p = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        acks=1,
        linger_ms=0,
        batch_size=1,
        max_in_flight_requests_per_connection=5,
    )
    futures = [p.send(topic, value=str(i).encode(), partition=0) for i in range(N)]
    p.flush(60)
    offsets = [f.get(timeout=30).offset for f in futures]
    p.close()
    assert offsets == list(range(N))
    assert _read_all(broker.bootstrap, topic, N) == [(i, i) for i in range(N)]
