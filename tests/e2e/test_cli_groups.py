"""`sluice group list|describe|delete|reset-offsets` against groups that real clients run.

The groups are created and their offsets committed by librdkafka (confluent-kafka); every
effect of the CLI is checked through confluent-kafka or kafka-python (committed offsets, group
listings), and every refusal must exit 1 with the Kafka error name or a clear reason.
"""

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

from test_cli import fails_with, sluice

TIMEOUT_S = 30
# Record timestamps of the time-based reset: record i of partition 0 has BASE_TS_MS + i s.
BASE_TS_MS = 1_000_000_000_000  # 2001-09-09T01:46:40Z


def create_topic(broker, topic, partitions):
    sluice(broker, "topic", "create", topic, "--partitions", str(partitions))


def produce(broker, topic, per_partition, partitions, timestamps=False):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for p in range(partitions):
        for i in range(per_partition):
            kwargs = {"timestamp": BASE_TS_MS + i * 1000} if timestamps else {}
            producer.produce(topic, value=f"{p}-{i}".encode(), partition=p, **kwargs)
    assert producer.flush(TIMEOUT_S) == 0


def member(broker, group, topic, **extra):
    """A subscribed confluent-kafka consumer that has joined `group` and got an assignment."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            **extra,
        }
    )
    consumer.subscribe([topic])
    deadline = time.time() + TIMEOUT_S
    while not consumer.assignment():
        assert time.time() < deadline, "the consumer never got an assignment"
        consumer.poll(0.2)
    return consumer


def commit(consumer, topic, offsets):
    consumer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
        asynchronous=False,
    )


def committed(broker, group, topic, partitions):
    """The group's committed offsets as kafka-python reads them (None = nothing committed)."""
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        request_timeout_ms=20000,
    )
    try:
        return {p: consumer.committed(KTopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close()


def rows(text, first_column):
    return [line.split() for line in text.splitlines() if line.split()[:1] == [first_column]]


def test_list_and_describe_show_members_offsets_and_lag(broker):
    create_topic(broker, "orders", 2)
    produce(broker, "orders", per_partition=10, partitions=2)
    consumer = member(broker, "billing", "orders", **{"client.id": "billing-app"})
    try:
        commit(consumer, "orders", {0: 6, 1: 3})
        listed = sluice(broker, "group", "list").stdout.decode().split()
        assert "billing" in listed

        table = sluice(broker, "group", "list", "--long", "--state", "Stable").stdout.decode()
        assert rows(table, "billing") == [["billing", "Stable", "consumer"]]
        empty_only = sluice(broker, "group", "list", "--state", "Empty").stdout.decode()
        assert "billing" not in empty_only.split()

        text = sluice(broker, "group", "describe", "billing").stdout.decode()
        assert "State: Stable\n" in text, text
        assert "Members: 1\n" in text, text
        member_id = consumer.memberid()
        found = rows(text, "orders")
        # Columns: topic, partition, committed, log end, lag, member, host, client id.
        assert [r[:6] + r[7:] for r in found] == [
            ["orders", "0", "6", "10", "4", member_id, "billing-app"],
            ["orders", "1", "3", "10", "7", member_id, "billing-app"],
        ], text
        assert all("127.0.0.1" in r[6] for r in found), text
        assert "orders:0,1" in text, text
    finally:
        consumer.close()

    text = sluice(broker, "group", "describe", "billing").stdout.decode()
    assert "State: Empty\n" in text, text
    assert [r[:5] for r in rows(text, "orders")] == [
        ["orders", "0", "6", "10", "4"],
        ["orders", "1", "3", "10", "7"],
    ]
    err = sluice(broker, "group", "describe", "nobody-here", check=False)
    assert err.returncode == 1 and b"does not exist" in err.stderr, err.stderr


def test_reset_offsets_plans_then_commits_and_clamps(broker):
    create_topic(broker, "events", 2)
    produce(broker, "events", per_partition=10, partitions=2, timestamps=True)
    consumer = member(broker, "etl", "events")
    commit(consumer, "events", {0: 8, 1: 5})

    # An active group owns its offsets: no reset while it has a member.
    proc = sluice(
        broker, "group", "reset-offsets", "etl", "--topic", "events", "--to-earliest",
        "--execute", check=False,
    )
    assert proc.returncode == 1 and b"inactive" in proc.stderr, proc.stderr
    consumer.close()

    plan = sluice(broker, "group", "reset-offsets", "etl", "--all-topics", "--to-earliest")
    out = plan.stdout.decode()
    assert rows(out, "events") == [["events", "0", "8", "0"], ["events", "1", "5", "0"]]
    assert "dry run" in out
    assert committed(broker, "etl", "events", 2) == {0: 8, 1: 5}

    sluice(broker, "group", "reset-offsets", "etl", "--topic", "events", "--to-earliest",
           "--execute")
    assert committed(broker, "etl", "events", 2) == {0: 0, 1: 0}

    sluice(broker, "group", "reset-offsets", "etl", "--topic", "events:1", "--shift-by", "3",
           "--execute")
    assert committed(broker, "etl", "events", 2) == {0: 0, 1: 3}

    # Beyond the log end is clamped to it, as Kafka's tool does.
    out = sluice(broker, "group", "reset-offsets", "etl", "--topic", "events:0",
                 "--to-offset", "999", "--execute").stdout.decode()
    assert rows(out, "events") == [["events", "0", "0", "10"]]
    assert committed(broker, "etl", "events", 2) == {0: 10, 1: 3}

    # Record 4 of partition 0 was stamped BASE + 4 s = 2001-09-09T01:46:44Z.
    sluice(broker, "group", "reset-offsets", "etl", "--topic", "events:0",
           "--to-datetime", "2001-09-09T01:46:44Z", "--execute")
    assert committed(broker, "etl", "events", 2) == {0: 4, 1: 3}

    sluice(broker, "group", "reset-offsets", "etl", "--all-topics", "--to-latest", "--execute")
    assert committed(broker, "etl", "events", 2) == {0: 10, 1: 10}

    # A consumer of the group now starts where the reset put it.
    consumer = member(broker, "etl", "events")
    try:
        assert {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition("events", 0), TopicPartition("events", 1)], timeout=TIMEOUT_S)
        } == {0: 10, 1: 10}
    finally:
        consumer.close()

    proc = sluice(broker, "group", "reset-offsets", "etl", "--topic", "events:7",
                  "--to-earliest", check=False)
    assert proc.returncode == 1 and b"no partition 7" in proc.stderr, proc.stderr


def test_delete_refuses_active_groups_and_removes_inactive_ones(broker):
    create_topic(broker, "logs", 1)
    produce(broker, "logs", per_partition=3, partitions=1)
    consumer = member(broker, "archiver", "logs")
    try:
        commit(consumer, "logs", {0: 2})
        fails_with(broker, "NON_EMPTY_GROUP", "group", "delete", "archiver")
    finally:
        consumer.close()

    out = sluice(broker, "group", "delete", "archiver").stdout.decode()
    assert "deleted group 'archiver'" in out
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=TIMEOUT_S)
    assert "archiver" not in [g.group_id for g in listed.valid]
    assert committed(broker, "archiver", "logs", 1) == {0: None}
    fails_with(broker, "GROUP_ID_NOT_FOUND", "group", "delete", "archiver")
