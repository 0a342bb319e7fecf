"""Topic administration with real admin clients: CreateTopics, DeleteTopics, CreatePartitions,
DescribeCluster and DescribeLogDirs, each success path and each Kafka error code.

confluent-kafka (librdkafka) and kafka-python both drive the broker, because they pick different
request versions and read different response fields; an answer one of them mis-parses fails here.
"""

import os
import threading
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kafka import KafkaAdminClient

TIMEOUT_S = 15


def consumer(broker):
    # Without a group coordinator in the broker, auto-commit would make close() wait for it.
    return Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def kp_admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)


def create(a, topics, **kwargs):
    """Runs confluent create_topics; returns {name: None or KafkaError code}."""
    futures = a.create_topics(topics, request_timeout=TIMEOUT_S, **kwargs)
    return {name: error_code(f) for name, f in futures.items()}


def error_code(future):
    try:
        future.result(timeout=TIMEOUT_S)
        return None
    except KafkaException as e:
        return e.args[0].code()


def partitions_of(a, topic):
    md = a.list_topics(topic=topic, timeout=TIMEOUT_S)
    t = md.topics[topic]
    if t.error is not None:
        return None
    return sorted(t.partitions)


# The broker's own internal topics, present from start-up (consumer groups' offsets and the
# transaction coordinator's state).
OFFSETS_TOPIC = "__consumer_offsets"
INTERNAL_TOPICS = {OFFSETS_TOPIC, "__transaction_state"}


def topic_names(a):
    """The topics users made (the internal topics are always there)."""
    return set(a.list_topics(timeout=TIMEOUT_S).topics) - INTERNAL_TOPICS


def produce(broker, topic, values, partition=0):
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    errors = []
    for v in values:
        p.produce(topic, v, partition=partition, on_delivery=lambda e, m: errors.append(e))
    assert p.flush(TIMEOUT_S) == 0
    return errors


def test_create_describe_and_delete_with_confluent(broker):
    a = admin(broker)
    result = create(
        a, [NewTopic("orders", num_partitions=3, config={"retention.ms": "3600000"})]
    )
    assert result == {"orders": None}
    assert partitions_of(a, "orders") == [0, 1, 2]
    assert create(a, [NewTopic("defaults")]) == {"defaults": None}
    assert partitions_of(a, "defaults") == [0]  # num.partitions and replication default to 1

    assert error_code(a.delete_topics(["orders"], request_timeout=TIMEOUT_S)["orders"]) is None
    assert "orders" not in topic_names(a)
    assert "defaults" in topic_names(a)


def test_create_refusals_carry_kafkas_codes(broker):
    a = admin(broker)
    assert create(a, [NewTopic("taken", num_partitions=1)]) == {"taken": None}
    assert create(
        a,
        [
            NewTopic("taken", num_partitions=1),
            NewTopic("bad name!", num_partitions=1),
            NewTopic("x" * 250, num_partitions=1),
            NewTopic("replicated", num_partitions=1, replication_factor=3),
            NewTopic("badconfig", num_partitions=1, config={"retention.ms": "soon"}),
            NewTopic("unknownconfig", num_partitions=1, config={"no.such.config": "1"}),
            NewTopic("elsewhere", num_partitions=2, replica_assignment=[[1], [2]]),
            NewTopic("twice", num_partitions=1, replica_assignment=[[1, 1]]),
        ],
    ) == {
        "taken": KafkaError.TOPIC_ALREADY_EXISTS,
        "bad name!": KafkaError.TOPIC_EXCEPTION,
        "x" * 250: KafkaError.TOPIC_EXCEPTION,
        "replicated": KafkaError.INVALID_REPLICATION_FACTOR,
        "badconfig": KafkaError.INVALID_CONFIG,
        "unknownconfig": KafkaError.INVALID_CONFIG,
        "elsewhere": KafkaError.INVALID_REPLICA_ASSIGNMENT,
        "twice": KafkaError.INVALID_REPLICA_ASSIGNMENT,
    }
    # Names that differ only in '.' versus '_' collide, as in Kafka.
    assert create(a, [NewTopic("metrics.cpu", num_partitions=1)]) == {"metrics.cpu": None}
    assert create(a, [NewTopic("metrics_cpu", num_partitions=1)]) == {
        "metrics_cpu": KafkaError.TOPIC_EXCEPTION
    }
    # A manual assignment that puts every partition on this broker is fine.
    placed = NewTopic("placed", num_partitions=2, replica_assignment=[[1], [1]])
    assert create(a, [placed]) == {"placed": None}
    assert partitions_of(a, "placed") == [0, 1]
    assert topic_names(a) == {"taken", "metrics.cpu", "placed"}


def test_kafka_python_sees_codes_messages_and_v5_fields(broker):
    kp = kp_admin(broker)
    try:
        ok = kp.create_topics(
            {"kp": {"num_partitions": 2, "configs": {"cleanup.policy": "compact"}}}
        )
        [topic] = ok["topics"]
        assert (topic["name"], topic["error_code"], topic["error_message"]) == ("kp", 0, None)
        assert (topic["num_partitions"], topic["replication_factor"]) == (2, 1)
        configs = topic["configs"]
        assert configs["cleanup.policy"]["value"] == "compact"
        assert configs["cleanup.policy"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert configs["retention.ms"]["value"] == "604800000"
        assert configs["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
        assert uuid.UUID(topic["topic_id"]) != uuid.UUID(int=0)

        bad = kp.create_topics(
            {"zero": {"num_partitions": 0}, "rf": {"num_partitions": 1, "replication_factor": 2}},
            raise_errors=False,
        )
        by_name = {t["name"]: t for t in bad["topics"]}
        assert by_name["zero"]["error_code"] == 37  # INVALID_PARTITIONS
        assert "partitions" in by_name["zero"]["error_message"]
        assert by_name["rf"]["error_code"] == 38  # INVALID_REPLICATION_FACTOR
        assert "replication factor 2" in by_name["rf"]["error_message"]
    finally:
        kp.close()


def test_validate_only_creates_nothing(broker):
    a = admin(broker)
    assert create(a, [NewTopic("checked", num_partitions=4)], validate_only=True) == {
        "checked": None
    }
    assert create(
        a, [NewTopic("checked", num_partitions=1, config={"segment.bytes": "1"})],
        validate_only=True,
    ) == {"checked": KafkaError.INVALID_CONFIG}
    kp = kp_admin(broker)
    try:
        r = kp.create_topics({"checked2": {"num_partitions": 2}}, validate_only=True)
        assert r["topics"][0]["error_code"] == 0
    finally:
        kp.close()
    assert "checked" not in topic_names(a)
    assert "checked2" not in topic_names(a)
    assert not any(n.startswith("checked") for n in os.listdir(broker.data_dir))


def test_create_partitions_raises_the_count_and_refuses_the_rest(broker):
    a = admin(broker)
    assert create(a, [NewTopic("grow", num_partitions=1)]) == {"grow": None}

    def grow(count, **kwargs):
        fs = a.create_partitions(
            [NewPartitions("grow", count)], request_timeout=TIMEOUT_S, **kwargs
        )
        return error_code(fs["grow"])

    assert grow(4) is None
    assert partitions_of(a, "grow") == [0, 1, 2, 3]
    assert grow(4) == KafkaError.INVALID_PARTITIONS
    assert grow(2) == KafkaError.INVALID_PARTITIONS
    assert grow(8, validate_only=True) is None
    assert partitions_of(a, "grow") == [0, 1, 2, 3]
    fs = a.create_partitions(
        [NewPartitions("grow", 6, replica_assignment=[[1], [2]])], request_timeout=TIMEOUT_S
    )
    assert error_code(fs["grow"]) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    fs = a.create_partitions([NewPartitions("nosuch", 2)], request_timeout=TIMEOUT_S)
    assert error_code(fs["nosuch"]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # The new partitions take data.
    assert produce(broker, "grow", [b"into-three"], partition=3) == [None]


def test_deleted_data_is_gone_and_a_recreated_topic_starts_empty(broker):
    a = admin(broker)
    assert create(a, [NewTopic("phoenix", num_partitions=2)]) == {"phoenix": None}
    assert produce(broker, "phoenix", [b"old-%d" % i for i in range(20)]) == [None] * 20
    assert "phoenix-0" in os.listdir(broker.data_dir)

    assert error_code(a.delete_topics(["phoenix"], request_timeout=TIMEOUT_S)["phoenix"]) is None
    assert not any(n.startswith("phoenix-") for n in os.listdir(broker.data_dir))

    assert create(a, [NewTopic("phoenix", num_partitions=2)]) == {"phoenix": None}
    c = consumer(broker)
    try:
        low, high = c.get_watermark_offsets(TopicPartition("phoenix", 0), timeout=TIMEOUT_S)
        assert (low, high) == (0, 0)
    finally:
        c.close()
    assert produce(broker, "phoenix", [b"new"]) == [None]


def test_delete_by_name_and_by_id_and_their_unknowns(broker):
    a = admin(broker)
    assert create(a, [NewTopic("byname"), NewTopic("byid")]) == {"byname": None, "byid": None}
    fs = a.delete_topics(["byname", "neverwas"], request_timeout=TIMEOUT_S)
    assert error_code(fs["byname"]) is None
    assert error_code(fs["neverwas"]) == KafkaError.UNKNOWN_TOPIC_OR_PART

    kp = kp_admin(broker)
    try:
        created = kp.create_topics({"byid2": {"num_partitions": 1}})
        topic_id = uuid.UUID(created["topics"][0]["topic_id"])
        unknown = uuid.UUID(int=12345)
        result = kp.delete_topics([topic_id, unknown], raise_errors=False)
        # The response names the deleted topic, too; the unknown id has no name.
        outcome = {
            uuid.UUID(t["topic_id"]): (t["name"], t["error_code"]) for t in result["topics"]
        }
        assert outcome == {topic_id: ("byid2", 0), unknown: (None, 100)}  # UNKNOWN_TOPIC_ID
    finally:
        kp.close()
    assert topic_names(a) == {"byid"}


def test_topics_survive_kill9_and_restart(broker):
    a = admin(broker)
    assert create(
        a,
        [
            NewTopic("durable", num_partitions=3, config={"retention.ms": "123456"}),
            NewTopic("doomed", num_partitions=1),
        ],
    ) == {"durable": None, "doomed": None}
    fs = a.create_partitions([NewPartitions("durable", 5)], request_timeout=TIMEOUT_S)
    assert error_code(fs["durable"]) is None
    assert error_code(a.delete_topics(["doomed"], request_timeout=TIMEOUT_S)["doomed"]) is None

    broker.kill9()
    broker.start()

    a = admin(broker)
    md = a.list_topics(timeout=TIMEOUT_S)
    assert set(md.topics) == {"durable"} | INTERNAL_TOPICS
    assert sorted(md.topics["durable"].partitions) == [0, 1, 2, 3, 4]


def test_describe_cluster_with_both_clients(broker):
    a = admin(broker)
    # librdkafka answers describe_cluster from Metadata; kafka-python sends DescribeCluster.
    cluster = a.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(1, "127.0.0.1", broker.port)]
    assert cluster.controller.id == 1
    assert len(cluster.cluster_id) == 22
    kp = kp_admin(broker)
    try:
        described = kp.describe_cluster()
    finally:
        kp.close()
    assert described["cluster_id"] == cluster.cluster_id
    assert described["controller_id"] == 1
    assert described["brokers"] == [
        {"broker_id": 1, "host": "127.0.0.1", "port": broker.port, "rack": None}
    ]
    # Without authorization every cluster operation is allowed.
    assert set(described["authorized_operations"]) >= {"CREATE", "ALTER", "DESCRIBE"}


def test_describe_log_dirs_reports_partition_sizes_and_the_volume(broker):
    a = admin(broker)
    assert create(a, [NewTopic("sized", num_partitions=2), NewTopic("other")]) == {
        "sized": None,
        "other": None,
    }
    assert produce(broker, "sized", [b"x" * 1000 for _ in range(10)], partition=1) == [None] * 10
    kp = kp_admin(broker)
    try:
        everything = kp.describe_log_dirs()
        only_sized = kp.describe_log_dirs(topic_partitions={"sized": [0, 1]})
    finally:
        kp.close()
    [answer] = everything
    assert answer["broker"] == 1
    [log_dir] = answer["log_dirs"]
    assert log_dir["error_code"] == 0
    assert os.path.realpath(log_dir["log_dir"]) == os.path.realpath(broker.data_dir)
    sizes = {
        (t["name"], p["partition_index"]): p["partition_size"]
        for t in log_dir["topics"]
        for p in t["partitions"]
    }
    sizes = {k: v for k, v in sizes.items() if k[0] not in INTERNAL_TOPICS}
    assert set(sizes) == {("sized", 0), ("sized", 1), ("other", 0)}
    assert sizes[("sized", 0)] == 0
    assert sizes[("sized", 1)] > 10 * 1000
    assert log_dir["total_bytes"] > 0
    assert 0 <= log_dir["usable_bytes"] <= log_dir["total_bytes"]
    [only] = only_sized[0]["log_dirs"]
    assert {t["name"] for t in only["topics"]} == {"sized"}


def test_concurrent_create_and_delete_leave_a_consistent_broker(broker):
    # Changes from several connections are serialized on the control shard and published in
    # order, so a deletion racing a re-creation of the same name never leaves old data behind.
    failures = []

    def churn(name, rounds):
        a = admin(broker)
        try:
            for _ in range(rounds):
                created = create(a, [NewTopic(name, num_partitions=2)])
                if created != {name: None}:
                    failures.append(("create", name, created))
                if produce(broker, name, [b"x"], partition=1) != [None]:
                    failures.append(("produce", name))
                fs = a.delete_topics([name], request_timeout=TIMEOUT_S)
                if error_code(fs[name]) is not None:
                    failures.append(("delete", name))
        except Exception as e:  # noqa: BLE001 - reported below with the thread's topic
            failures.append(("exception", name, repr(e)))

    threads = [threading.Thread(target=churn, args=(f"churn{i}", 5)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []

    a = admin(broker)
    assert not any(n.startswith("churn") for n in topic_names(a))
    assert not any(n.startswith("churn") for n in os.listdir(broker.data_dir))
    assert create(a, [NewTopic("churn0", num_partitions=2)]) == {"churn0": None}
    c = consumer(broker)
    try:
        for partition in (0, 1):
            tp = TopicPartition("churn0", partition)
            assert c.get_watermark_offsets(tp, timeout=TIMEOUT_S) == (0, 0)
    finally:
        c.close()
