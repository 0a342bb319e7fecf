"""Topic and broker configs with real admin clients: DescribeConfigs (sources, synonyms, broker
settings), AlterConfigs, IncrementalAlterConfigs (SET/DELETE/APPEND/SUBTRACT, validate_only),
their refusals, a change taking effect on the data path, and configs surviving kill -9.
"""

import pytest
import os
import tempfile
import time
from pathlib import Path

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)
from kafka import KafkaAdminClient
from conftest import Broker, free_port
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpConfigResourceType

TIMEOUT_S = 15


def consumer(broker):
    # Without a group coordinator in the broker, auto-commit would make close() wait for it.
    return Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def make_topic(a, name, partitions=1, config=None):
    fs = a.create_topics(
        [NewTopic(name, num_partitions=partitions, config=config or {})],
        request_timeout=TIMEOUT_S,
    )
    fs[name].result(timeout=TIMEOUT_S)


def describe(a, restype, name):
    """{config name: ConfigEntry}, or the KafkaError code of the resource."""
    [future] = a.describe_configs(
        [ConfigResource(restype, name)], request_timeout=TIMEOUT_S
    ).values()
    try:
        return future.result(timeout=TIMEOUT_S)
    except KafkaException as e:
        return e.args[0].code()


def source(entry):
    return ConfigSource(entry.source) if isinstance(entry.source, int) else entry.source


def incremental(a, name, ops, restype=ResourceType.TOPIC, **kwargs):
    """Runs IncrementalAlterConfigs with (key, op, value) triples; None or the error code."""
    entries = [ConfigEntry(k, v, incremental_operation=op) for k, op, v in ops]
    [future] = a.incremental_alter_configs(
        [ConfigResource(restype, name, incremental_configs=entries)],
        request_timeout=TIMEOUT_S,
        **kwargs,
    ).values()
    try:
        future.result(timeout=TIMEOUT_S)
        return None
    except KafkaException as e:
        return e.args[0].code()


SET, DELETE, APPEND, SUBTRACT = (
    AlterConfigOpType.SET,
    AlterConfigOpType.DELETE,
    AlterConfigOpType.APPEND,
    AlterConfigOpType.SUBTRACT,
)


def test_describe_shows_overrides_as_dynamic_and_the_rest_as_default(broker):
    a = admin(broker)
    make_topic(a, "described", config={"retention.ms": "3600000", "cleanup.policy": "compact"})
    configs = describe(a, ResourceType.TOPIC, "described")
    assert configs["retention.ms"].value == "3600000"
    assert source(configs["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "compact"
    assert configs["segment.bytes"].value == "1073741824"
    assert source(configs["segment.bytes"]) == ConfigSource.DEFAULT_CONFIG
    assert configs["max.message.bytes"].value == "1048588"
    assert configs["compression.type"].value == "producer"
    assert not configs["segment.bytes"].is_read_only
    assert not any(e.is_sensitive for e in configs.values())
    # The default comes from the broker-level synonym, as in Kafka.
    synonyms = configs["retention.ms"].synonyms
    assert "log.retention.ms" in synonyms
    assert source(synonyms["log.retention.ms"]) == ConfigSource.DEFAULT_CONFIG
    assert describe(a, ResourceType.TOPIC, "nosuch") == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_filters_keys_and_sees_types_and_docs(broker):
    a = admin(broker)
    make_topic(a, "typed", config={"retention.bytes": "1000000"})
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        modified = kp.describe_configs([KpConfigResource(KpConfigResourceType.TOPIC, "typed")])
        everything = kp.describe_configs(
            [KpConfigResource(KpConfigResourceType.TOPIC, "typed")],
            include_synonyms=True,
            config_filter="all",
        )
    finally:
        kp.close()
    assert set(modified["topic"]["typed"]) == {"retention.bytes"}
    assert modified["topic"]["typed"]["retention.bytes"]["value"] == "1000000"
    all_keys = everything["topic"]["typed"]
    assert {"retention.ms", "segment.bytes", "cleanup.policy", "min.insync.replicas"} <= set(
        all_keys
    )


def test_broker_resource_lists_the_brokers_settings(broker):
    a = admin(broker)
    configs = describe(a, ResourceType.BROKER, "1")
    assert configs["num.partitions"].value == "1"
    assert configs["auto.create.topics.enable"].value == "true"
    assert configs["socket.request.max.bytes"].value == str(100 * 1024 * 1024)
    assert configs["log.retention.ms"].value == "604800000"
    assert configs["message.max.bytes"].value == "1048588"
    assert configs["broker.id"].value == "1"
    assert source(configs["broker.id"]) == ConfigSource.STATIC_BROKER_CONFIG
    assert all(e.is_read_only for e in configs.values())
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        described = kp.describe_configs(
            [KpConfigResource(KpConfigResourceType.BROKER, "1")], config_filter="all"
        )
    finally:
        kp.close()
    broker_configs = described["broker"]["1"]
    assert broker_configs["num.partitions"]["value"] == "1"
    assert broker_configs["log.dirs"]["value"] == os.path.realpath(broker.data_dir)


def test_incremental_set_delete_append_subtract(broker):
    a = admin(broker)
    make_topic(a, "tuned", config={"retention.ms": "3600000"})
    changes = [("segment.bytes", SET, "1048576"), ("retention.ms", DELETE, None)]
    assert incremental(a, "tuned", changes) is None
    configs = describe(a, ResourceType.TOPIC, "tuned")
    assert configs["segment.bytes"].value == "1048576"
    assert source(configs["segment.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert configs["retention.ms"].value == "604800000"
    assert source(configs["retention.ms"]) == ConfigSource.DEFAULT_CONFIG

    assert incremental(a, "tuned", [("cleanup.policy", APPEND, "compact")]) is None
    assert describe(a, ResourceType.TOPIC, "tuned")["cleanup.policy"].value == "delete,compact"
    assert incremental(a, "tuned", [("cleanup.policy", SUBTRACT, "delete")]) is None
    assert describe(a, ResourceType.TOPIC, "tuned")["cleanup.policy"].value == "compact"


def test_incremental_refusals_and_validate_only_change_nothing(broker):
    a = admin(broker)
    make_topic(a, "guarded", config={"retention.ms": "3600000"})
    assert incremental(a, "guarded", [("retention.ms", SET, "soon")]) == KafkaError.INVALID_CONFIG
    assert incremental(a, "guarded", [("no.such", SET, "1")]) == KafkaError.INVALID_CONFIG
    assert incremental(a, "guarded", [("retention.ms", APPEND, "5")]) == KafkaError.INVALID_CONFIG
    assert incremental(a, "guarded", [("segment.bytes", SET, "1")]) == KafkaError.INVALID_CONFIG
    unknown = incremental(a, "nosuch", [("retention.ms", SET, "5")])
    assert unknown == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert incremental(a, "guarded", [("retention.ms", SET, "5")], validate_only=True) is None
    assert describe(a, ResourceType.TOPIC, "guarded")["retention.ms"].value == "3600000"
    # Dynamic broker configs are not supported; the refusal says so.
    assert (
        incremental(a, "1", [("num.partitions", SET, "3")], restype=ResourceType.BROKER)
        == KafkaError.INVALID_REQUEST
    )


def test_alter_configs_replaces_every_override(broker):
    a = admin(broker)
    make_topic(a, "replaced", config={"retention.ms": "3600000", "segment.bytes": "1048576"})
    [future] = a.alter_configs(
        [ConfigResource(ResourceType.TOPIC, "replaced", set_config={"max.message.bytes": "4096"})],
        request_timeout=TIMEOUT_S,
    ).values()
    future.result(timeout=TIMEOUT_S)
    configs = describe(a, ResourceType.TOPIC, "replaced")
    assert configs["max.message.bytes"].value == "4096"
    assert source(configs["retention.ms"]) == ConfigSource.DEFAULT_CONFIG
    assert source(configs["segment.bytes"]) == ConfigSource.DEFAULT_CONFIG

    [future] = a.alter_configs(
        [ConfigResource(ResourceType.TOPIC, "replaced", set_config={"flush.ms": "-3"})],
        request_timeout=TIMEOUT_S,
    ).values()
    with pytest.raises(KafkaException) as refused:
        future.result(timeout=TIMEOUT_S)
    assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert "flush.ms" in refused.value.args[0].str()
    assert describe(a, ResourceType.TOPIC, "replaced")["max.message.bytes"].value == "4096"


def test_lowered_max_message_bytes_refuses_larger_records(broker):
    a = admin(broker)
    make_topic(a, "limited")
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "retries": 0})
    outcomes = []

    def send(value):
        p.produce("limited", value, partition=0, on_delivery=lambda e, m: outcomes.append(e))
        assert p.flush(TIMEOUT_S) == 0
        return outcomes.pop()

    assert send(b"x" * 5000) is None
    assert incremental(a, "limited", [("max.message.bytes", SET, "2000")]) is None
    refused = send(b"x" * 5000)
    assert refused is not None and refused.code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert send(b"small") is None
    assert incremental(a, "limited", [("max.message.bytes", DELETE, None)]) is None
    assert send(b"x" * 5000) is None


def test_timestamp_type_change_reaches_the_partitions_on_every_shard(broker):
    # LogAppendTime is stamped by the storage engine itself, so this proves the open partitions
    # (one per shard with two partitions) took the new settings, not just the topic metadata.
    a = admin(broker)
    make_topic(a, "stamped", partitions=2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})

    def send_both(timestamp_ms):
        for partition in (0, 1):
            p.produce("stamped", b"v", partition=partition, timestamp=timestamp_ms)
        assert p.flush(TIMEOUT_S) == 0

    send_both(1000)
    assert incremental(a, "stamped", [("message.timestamp.type", SET, "LogAppendTime")]) is None
    before = int(time.time() * 1000)
    send_both(1000)
    c = consumer(broker)
    try:
        c.assign([TopicPartition("stamped", part, 0) for part in (0, 1)])
        seen = {}
        deadline = time.time() + TIMEOUT_S
        while len(seen) < 4 and time.time() < deadline:
            m = c.poll(1)
            if m is not None and m.error() is None:
                seen[(m.partition(), m.offset())] = m.timestamp()
    finally:
        c.close()
    for partition in (0, 1):
        assert seen[(partition, 0)] == (TIMESTAMP_CREATE_TIME, 1000)
        kind, stamped = seen[(partition, 1)]
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert stamped >= before - 1000


def test_configs_survive_kill9_and_restart(broker):
    a = admin(broker)
    make_topic(a, "kept", config={"retention.ms": "3600000"})
    changes = [
        ("cleanup.policy", SET, "compact"),
        ("retention.ms", DELETE, None),
        ("max.message.bytes", SET, "65536"),
    ]
    assert incremental(a, "kept", changes) is None
    broker.kill9()
    broker.start()
    configs = describe(admin(broker), ResourceType.TOPIC, "kept")
    assert configs["cleanup.policy"].value == "compact"
    assert source(configs["cleanup.policy"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert configs["max.message.bytes"].value == "65536"
    assert source(configs["retention.ms"]) == ConfigSource.DEFAULT_CONFIG


def test_altered_segment_and_retention_settings_drive_the_engine():
    # The topic starts with Kafka's defaults (1 GiB segments, 7 days); only the altered
    # segment.bytes can make the log roll and only the altered retention.bytes can delete,
    # so a moving log start proves both reached the open partition.
    with tempfile.TemporaryDirectory(prefix="sluice-cfg-") as tmp:
        b = Broker(Path(tmp) / "data", free_port(), ["--log-retention-check-interval-ms", "200"])
        b.start()
        try:
            a = admin(b)
            make_topic(a, "rolling")

            def produce_kib(n):
                p = Producer(
                    {"bootstrap.servers": b.bootstrap, "linger.ms": 0, "batch.num.messages": 1}
                )
                for i in range(n):
                    p.produce("rolling", b"%08d" % i + b"x" * 1016, partition=0)
                    p.poll(0)
                assert p.flush(TIMEOUT_S) == 0

            def low_watermark():
                c = consumer(b)
                try:
                    return c.get_watermark_offsets(
                        TopicPartition("rolling", 0), timeout=TIMEOUT_S
                    )
                finally:
                    c.close()

            produce_kib(40)
            time.sleep(0.6)  # three retention checks under the defaults delete nothing
            assert low_watermark() == (0, 40)

            changes = [("segment.bytes", SET, "8192"), ("retention.bytes", SET, "16384")]
            assert incremental(a, "rolling", changes) is None
            produce_kib(60)
            deadline = time.time() + TIMEOUT_S
            low, high = low_watermark()
            while low < 40 and time.time() < deadline:
                time.sleep(0.2)
                low, high = low_watermark()
            assert high == 100
            assert 40 <= low < 100, (low, high)
        finally:
            b.stop()


def test_broker_resource_lists_the_log_cleaner_settings():
    # One cleaner per shard: threads is the shard count, the dedupe buffer the key maps of all
    # shards (an even share each, in whole 24-byte slots); the flags given show as static.
    with tempfile.TemporaryDirectory(prefix="sluice-cfg-") as tmp:
        b = Broker(
            Path(tmp) / "data",
            free_port(),
            [
                "--shards",
                "2",
                "--log-cleaner-backoff-ms",
                "1234",
                "--log-cleaner-io-max-bytes-per-second",
                "5000000",
                "--log-cleaner-dedupe-buffer-size",
                "4194304",
            ],
        )
        b.start()
        try:
            configs = describe(admin(b), ResourceType.BROKER, "1")
            expected = {
                "log.cleaner.enable": "true",
                "log.cleaner.backoff.ms": "1234",
                "log.cleaner.io.max.bytes.per.second": "5000000",
                "log.cleaner.threads": "2",
                "log.cleaner.dedupe.buffer.size": str(2 * (2 * 1024 * 1024 // 24) * 24),
                "log.cleaner.min.cleanable.ratio": "0.5",
                "log.cleaner.delete.retention.ms": "86400000",
                "log.cleaner.min.compaction.lag.ms": "0",
                "log.cleaner.max.compaction.lag.ms": "9223372036854775807",
            }
            got = {name: configs[name].value for name in expected}
            assert got == expected
            assert source(configs["log.cleaner.backoff.ms"]) == ConfigSource.STATIC_BROKER_CONFIG
            assert source(configs["log.cleaner.enable"]) == ConfigSource.DEFAULT_CONFIG
            assert all(configs[name].is_read_only for name in expected)
            # Not alterable at run time: the broker says so.
            [future] = admin(b).incremental_alter_configs(
                [
                    ConfigResource(
                        ResourceType.BROKER,
                        "1",
                        incremental_configs=[
                            ConfigEntry(
                                "log.cleaner.backoff.ms",
                                "10",
                                incremental_operation=AlterConfigOpType.SET,
                            )
                        ],
                    )
                ],
                request_timeout=TIMEOUT_S,
            ).values()
            with pytest.raises(KafkaException):
                future.result(timeout=TIMEOUT_S)
        finally:
            b.stop()
