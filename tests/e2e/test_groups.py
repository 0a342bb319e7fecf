"""Consumer groups driven by real clients: librdkafka (confluent-kafka) and kafka-python.

Every test runs its own broker (the `broker` fixture passes a 0 ms initial rebalance delay and
allows session timeouts down to 1 s, so rebalances take well under a second). Partition
ownership is read from the clients themselves (`assignment()`), consumed records are checked
by their values, and committed offsets through the clients' committed-offset calls.
"""

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KTopicPartition

TIMEOUT_S = 30
SESSION_MS = 2000


def create_topic(broker, topic, partitions):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(TIMEOUT_S)


def produce(broker, topic, values, partitions=None):
    """Produces `values` round robin over `partitions` (or by the default partitioner)."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i, v in enumerate(values):
        if partitions:
            p.produce(topic, value=v, partition=i % partitions)
        else:
            p.produce(topic, value=v)
    assert p.flush(TIMEOUT_S) == 0


def ck_consumer(broker, group, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 300,
    }
    conf.update(extra)
    return Consumer(conf)


def kp_consumer(broker, group, topic, **extra):
    return KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=300,
        **extra,
    )


def ck_parts(consumer):
    return {tp.partition for tp in consumer.assignment()}


def kp_parts(consumer):
    return {tp.partition for tp in consumer.assignment()}


def until(condition, what, pollers=(), timeout=TIMEOUT_S):
    """Polls every consumer in `pollers` until `condition()` holds."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        for poll in pollers:
            poll()


def ck_poll(consumer, sink=None):
    def poll():
        msg = consumer.poll(0.1)
        if msg is not None and not msg.error() and sink is not None:
            sink.append(msg.value())

    return poll


def kp_poll(consumer, sink=None):
    def poll():
        for records in consumer.poll(timeout_ms=100).values():
            if sink is not None:
                sink.extend(r.value for r in records)

    return poll


def test_two_consumers_split_the_partitions_and_one_takes_all_when_the_other_leaves(broker):
    create_topic(broker, "split", 4)
    a = ck_consumer(broker, "g-split")
    b = ck_consumer(broker, "g-split")
    a.subscribe(["split"])
    until(lambda: ck_parts(a) == {0, 1, 2, 3}, "a alone owns everything", [ck_poll(a)])
    b.subscribe(["split"])
    until(
        lambda: ck_parts(a) | ck_parts(b) == {0, 1, 2, 3}
        and not ck_parts(a) & ck_parts(b)
        and len(ck_parts(a)) == 2,
        "a and b split the partitions",
        [ck_poll(a), ck_poll(b)],
    )
    # b leaves the group (LeaveGroup): a gets every partition back.
    b.close()
    until(lambda: ck_parts(a) == {0, 1, 2, 3}, "a owns everything again", [ck_poll(a)])
    a.close()


CRASHING_MEMBER = textwrap.dedent(
    """
    import sys, time
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                  "session.timeout.ms": int(sys.argv[3]), "heartbeat.interval.ms": 300,
                  "auto.offset.reset": "earliest"})
    c.subscribe([sys.argv[4]])
    announced = False
    while True:
        c.poll(0.1)
        if c.assignment() and not announced:
            print("assigned", sorted(tp.partition for tp in c.assignment()), flush=True)
            announced = True
    """
)


def test_a_consumer_killed_without_leaving_is_expired_and_its_partitions_move(broker):
    create_topic(broker, "crash", 4)
    a = ck_consumer(broker, "g-crash")
    a.subscribe(["crash"])
    until(lambda: ck_parts(a) == {0, 1, 2, 3}, "a owns everything", [ck_poll(a)])
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_MEMBER, broker.bootstrap, "g-crash", str(SESSION_MS), "crash"],
        stdout=subprocess.PIPE,
    )
    try:
        until(lambda: len(ck_parts(a)) == 2, "the child takes half", [ck_poll(a)])
        # SIGKILL: no LeaveGroup is sent; only the session timeout can notice.
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        killed_at = time.time()
        until(lambda: ck_parts(a) == {0, 1, 2, 3}, "a gets the dead member's partitions", [ck_poll(a)])
        # It cannot have happened before the session timeout ran out. The timeout counts from
        # the child's last heartbeat, which a loaded machine can have delayed well before the
        # kill, hence half of it.
        assert time.time() - killed_at >= SESSION_MS / 1000 * 0.5
    finally:
        if child.poll() is None:
            child.kill()
        a.close()


def consume_values(consumer, count, timeout=TIMEOUT_S):
    out = []
    until(lambda: len(out) >= count, f"{count} records", [ck_poll(consumer, out)], timeout)
    return out


def committed_total(consumer, topic, partitions):
    """The sum of the group's committed offsets (a partition without one counts 0)."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=TIMEOUT_S))


def test_committed_offsets_survive_a_consumer_restart_and_a_broker_kill9(broker):
    create_topic(broker, "resume", 2)
    values = [f"v{i}".encode() for i in range(90)]
    produce(broker, "resume", values, partitions=2)
    c = ck_consumer(broker, "g-resume")
    c.subscribe(["resume"])
    first = consume_values(c, 30)
    c.commit(asynchronous=False)
    assert committed_total(c, "resume", 2) == len(first)
    c.close()

    # A new consumer of the group continues where the first committed.
    c = ck_consumer(broker, "g-resume")
    c.subscribe(["resume"])
    second = consume_values(c, 30)
    assert not set(first) & set(second)
    c.commit(asynchronous=False)
    c.close()

    # The broker crashes; what was committed (acknowledged) must be there after the restart.
    broker.kill9()
    broker.start()
    c = ck_consumer(broker, "g-resume")
    c.subscribe(["resume"])
    third = consume_values(c, 30)
    assert sorted(first + second + third) == sorted(values)
    assert committed_total(c, "resume", 2) == 60
    c.close()
    # kafka-python reads the same committed offsets.
    k = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="g-resume", enable_auto_commit=False)
    assert sum(k.committed(KTopicPartition("resume", p)) or 0 for p in range(2)) == 60
    k.close()


def test_librdkafka_and_kafka_python_consumers_share_one_group(broker):
    create_topic(broker, "mixed", 4)
    values = [f"m{i}".encode() for i in range(200)]
    produce(broker, "mixed", values, partitions=4)
    got_ck, got_kp = [], []
    a = ck_consumer(broker, "g-mixed", **{"partition.assignment.strategy": "range"})
    a.subscribe(["mixed"])
    b = kp_consumer(broker, "g-mixed", "mixed")
    pollers = [ck_poll(a, got_ck), kp_poll(b, got_kp)]
    until(
        lambda: ck_parts(a) | kp_parts(b) == {0, 1, 2, 3} and ck_parts(a) and kp_parts(b) and not ck_parts(a) & kp_parts(b),
        "the two libraries split the partitions",
        pollers,
    )
    until(lambda: len(set(got_ck) | set(got_kp)) == len(values), "every record", pollers)
    assert set(got_ck) | set(got_kp) == set(values)
    b.close()
    a.close()


def test_independent_groups_each_read_everything(broker):
    create_topic(broker, "fanout", 3)
    values = [f"f{i}".encode() for i in range(150)]
    produce(broker, "fanout", values, partitions=3)
    consumers = [ck_consumer(broker, f"g-fan-{i}") for i in range(3)]
    sinks = [[] for _ in consumers]
    for c in consumers:
        c.subscribe(["fanout"])
    until(
        lambda: all(len(s) >= len(values) for s in sinks),
        "every group reads every record",
        [ck_poll(c, s) for c, s in zip(consumers, sinks)],
    )
    for s in sinks:
        assert sorted(s) == sorted(values)
    for c in consumers:
        c.close()


def test_cooperative_sticky_rebalances_lose_nothing(broker):
    create_topic(broker, "coop", 6)
    total = 3000
    produce(broker, "coop", [f"{i}".encode() for i in range(0, total // 2)], partitions=6)
    seen = []
    revoked = []

    def make(name):
        c = ck_consumer(broker, "g-coop", **{"partition.assignment.strategy": "cooperative-sticky"})

        def on_revoke(consumer, partitions):
            revoked.append((name, [p.partition for p in partitions]))
            # Commit what was processed of the partitions that go away: at-least-once with
            # nothing processed twice.
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as e:
                if e.args[0].code() != KafkaError._NO_OFFSET:
                    raise

        c.subscribe(["coop"], on_revoke=on_revoke)
        return c

    def batch_poll(c):
        def poll():
            msgs = c.consume(num_messages=50, timeout=0.1)
            got = [m for m in msgs if not m.error()]
            seen.extend(int(m.value()) for m in got)
            if got:
                try:
                    c.commit(asynchronous=False)
                except KafkaException as e:
                    # A commit that reaches the coordinator between a join and the leader's
                    # SyncGroup is refused (Kafka does the same); the offsets stay stored and
                    # the revocation commit above takes them before any partition moves.
                    if e.args[0].code() not in (
                        KafkaError.REBALANCE_IN_PROGRESS,
                        KafkaError.ILLEGAL_GENERATION,
                    ):
                        raise

        return poll

    a = make("a")
    until(lambda: len(seen) >= 300, "a reads some", [batch_poll(a)])
    b = make("b")
    # The second half is produced while the group rebalances around b.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(total // 2, total):
        producer.produce("coop", value=f"{i}".encode(), partition=i % 6)
    assert producer.flush(TIMEOUT_S) == 0
    until(
        lambda: len(set(seen)) == total and ck_parts(a) and ck_parts(b),
        "all records, both members owning partitions",
        [batch_poll(a), batch_poll(b)],
    )
    assert set(seen) == set(range(total)), "no record lost"
    duplicates = len(seen) - len(set(seen))
    # Offsets are committed after every batch and on revocation: nothing is read twice.
    assert duplicates == 0, f"{duplicates} records read twice"
    assert not ck_parts(a) & ck_parts(b)
    assert ck_parts(a) | ck_parts(b) == set(range(6))
    # Cooperative: a gave up only what b took, incrementally (no full revocation of 6).
    assert all(len(parts) < 6 for who, parts in revoked if who == "a")
    b.close()
    a.close()


def test_groups_are_listed_described_and_deleted_with_both_admin_clients(broker):
    create_topic(broker, "adm", 2)
    produce(broker, "adm", [b"x"] * 10, partitions=2)
    active = ck_consumer(broker, "g-active", **{"client.id": "active-client"})
    active.subscribe(["adm"])
    until(lambda: ck_parts(active) == {0, 1}, "active owns both", [ck_poll(active)])
    # A group with committed offsets and no members (a standalone consumer's commit).
    idle = ck_consumer(broker, "g-idle")
    idle.commit(offsets=[TopicPartition("adm", 0, 4)], asynchronous=False)
    idle.close()

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups().result(TIMEOUT_S)
    states = {g.group_id: g.state.name for g in listed.valid}
    assert states["g-active"] == "STABLE"
    assert states["g-idle"] == "EMPTY"
    described = admin.describe_consumer_groups(["g-active"])["g-active"].result(TIMEOUT_S)
    assert described.state.name == "STABLE"
    assert described.partition_assignor == "range"
    (member,) = described.members
    assert member.client_id == "active-client"
    assert member.host == "/127.0.0.1"
    assert {tp.partition for tp in member.assignment.topic_partitions} == {0, 1}

    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    klisted = {g["group_id"]: g for g in kadmin.list_groups()}
    assert klisted["g-idle"]["group_state"] == "Empty"
    assert klisted["g-active"]["protocol_type"] == "consumer"
    assert [g["group_id"] for g in kadmin.list_groups(states_filter=["Stable"])] == ["g-active"]
    offsets = kadmin.list_group_offsets({"g-idle": None})["g-idle"]
    assert offsets[KTopicPartition("adm", 0)].offset == 4
    kdesc = kadmin.describe_groups(["g-active"])["g-active"]
    assert kdesc["group_state"] == "Stable" and len(kdesc["members"]) == 1
    assert kdesc["protocol_data"] == "range"
    # OffsetDelete: an active group keeps the offsets of topics it consumes; an empty one
    # loses them.
    from kafka.errors import GroupSubscribedToTopicError, NoError

    active.commit(offsets=[TopicPartition("adm", 1, 2)], asynchronous=False)
    result = kadmin.delete_group_offsets("g-active", [KTopicPartition("adm", 1)])
    assert result == {KTopicPartition("adm", 1): GroupSubscribedToTopicError}
    result = kadmin.delete_group_offsets("g-idle", [KTopicPartition("adm", 0)])
    assert result == {KTopicPartition("adm", 0): NoError}
    assert kadmin.list_group_offsets({"g-idle": None})["g-idle"] == {}
    idle = ck_consumer(broker, "g-idle")
    idle.commit(offsets=[TopicPartition("adm", 0, 4)], asynchronous=False)
    idle.close()

    # A group with members cannot be deleted; an empty one can, with its offsets.
    with pytest.raises(KafkaException) as err:
        admin.delete_consumer_groups(["g-active"])["g-active"].result(TIMEOUT_S)
    assert err.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    admin.delete_consumer_groups(["g-idle"])["g-idle"].result(TIMEOUT_S)
    assert "g-idle" not in {g.group_id for g in admin.list_consumer_groups().result(TIMEOUT_S).valid}
    assert kadmin.list_group_offsets({"g-idle": None})["g-idle"] == {}
    with pytest.raises(KafkaException) as err:
        admin.delete_consumer_groups(["g-idle"])["g-idle"].result(TIMEOUT_S)
    assert err.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND
    kadmin.close()

    # Closing a consumer with auto-commit sends its final commit and LeaveGroup right away:
    # the group is Empty as soon as close() returns.
    auto = ck_consumer(broker, "g-auto", **{"enable.auto.commit": True})
    auto.subscribe(["adm"])
    until(lambda: ck_parts(auto) == {0, 1}, "auto owns both", [ck_poll(auto)])
    active.close()
    auto.close()
    listed = admin.list_consumer_groups().result(TIMEOUT_S)
    states = {g.group_id: g.state.name for g in listed.valid}
    assert states["g-auto"] == "EMPTY"
    assert states["g-active"] == "EMPTY"


def test_consumer_offsets_is_internal_undeletable_and_in_kafka_format(broker):
    create_topic(broker, "fmt", 1)
    c = ck_consumer(broker, "g-fmt")
    c.commit(offsets=[TopicPartition("fmt", 0, 7, metadata="hello")], asynchronous=False)
    c.close()
    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    (meta,) = kadmin.describe_topics(["__consumer_offsets"])
    assert meta["is_internal"] is True
    assert len(meta["partitions"]) == 50
    kadmin.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with pytest.raises(KafkaException) as err:
        admin.delete_topics(["__consumer_offsets"])["__consumer_offsets"].result(TIMEOUT_S)
    assert err.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as err:
        admin.create_partitions([NewPartitions("__consumer_offsets", 60)])["__consumer_offsets"].result(TIMEOUT_S)
    assert err.value.args[0].code() == KafkaError.INVALID_REQUEST
    # Read the commit back from the topic itself and decode it as Kafka's formatter does.
    reader = KafkaConsumer(
        "__consumer_offsets",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        # Time without a record before the iteration ends: joining, resetting 50 partitions
        # and the first fetches take a while on a loaded machine. The loop below stops at
        # the record it looks for.
        consumer_timeout_ms=15000,
    )
    found = []
    for record in reader:
        version, = struct.unpack(">h", record.key[:2])
        if version != 1:
            continue
        glen, = struct.unpack(">h", record.key[2:4])
        group = record.key[4 : 4 + glen].decode()
        tlen, = struct.unpack(">h", record.key[4 + glen : 6 + glen])
        topic = record.key[6 + glen : 6 + glen + tlen].decode()
        partition, = struct.unpack(">i", record.key[6 + glen + tlen :])
        vversion, offset, epoch, mlen = struct.unpack(">hqih", record.value[:16])
        # librdkafka sends the metadata string with its C terminator; the broker keeps the
        # bytes as given.
        metadata = record.value[16 : 16 + mlen].decode().rstrip("\x00")
        found.append((group, topic, partition, vversion, offset, metadata))
        if found[-1] == ("g-fmt", "fmt", 0, 3, 7, "hello"):
            break
    reader.close()
    assert ("g-fmt", "fmt", 0, 3, 7, "hello") in found


def test_a_restarted_static_member_gets_its_partitions_back_without_a_rebalance(broker):
    create_topic(broker, "static", 4)
    b = ck_consumer(broker, "g-static")
    b.subscribe(["static"])
    until(lambda: ck_parts(b) == {0, 1, 2, 3}, "b owns everything", [ck_poll(b)])
    a = ck_consumer(broker, "g-static", **{"group.instance.id": "inst-a", "session.timeout.ms": 6000})
    a.subscribe(["static"])
    until(
        lambda: len(ck_parts(a)) == 2 and len(ck_parts(b)) == 2,
        "a and b split",
        [ck_poll(a), ck_poll(b)],
    )
    a_parts, b_parts = ck_parts(a), ck_parts(b)
    # A static member leaves no LeaveGroup behind when it closes: its place is kept for the
    # session timeout, and a process with the same instance id takes it over.
    a.close()
    a2 = ck_consumer(broker, "g-static", **{"group.instance.id": "inst-a", "session.timeout.ms": 6000})
    a2.subscribe(["static"])
    b_seen = []

    def poll_b():
        ck_poll(b)()
        b_seen.append(ck_parts(b))

    until(lambda: ck_parts(a2) == a_parts, "the new a gets a's partitions", [ck_poll(a2), poll_b])
    for _ in range(10):
        ck_poll(a2)()
        poll_b()
    # b kept its partitions the whole time: an (eager) rebalance would have revoked them all.
    assert all(parts == b_parts for parts in b_seen)
    # The admin client must outlive its request: librdkafka cancels requests of a destroyed
    # handle.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_consumer_groups(["g-static"])["g-static"].result(TIMEOUT_S)
    assert described.state.name == "STABLE"
    assert sorted(m.group_instance_id or "" for m in described.members) == ["", "inst-a"]
    a2.close()
    b.close()


def test_deleting_a_topic_deletes_its_committed_offsets(broker):
    create_topic(broker, "gone", 2)
    create_topic(broker, "kept", 1)
    c = ck_consumer(broker, "g-gone")
    c.commit(
        offsets=[TopicPartition("gone", 0, 3), TopicPartition("gone", 1, 5), TopicPartition("kept", 0, 9)],
        asynchronous=False,
    )
    c.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics(["gone"])["gone"].result(TIMEOUT_S)
    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    offsets = kadmin.list_group_offsets({"g-gone": None})["g-gone"]
    assert {(tp.topic, tp.partition): o.offset for tp, o in offsets.items()} == {("kept", 0): 9}
    kadmin.close()
    # Also after a restart: the deletion was written to __consumer_offsets.
    broker.kill9()
    broker.start()
    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    # The broker loads its groups after it starts listening and answers OffsetFetch with
    # COORDINATOR_LOAD_IN_PROGRESS until then, a retriable error kafka-python's admin passes
    # on instead of retrying.
    from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError

    deadline = time.time() + TIMEOUT_S
    while True:
        try:
            offsets = kadmin.list_group_offsets({"g-gone": None})["g-gone"]
            break
        except (CoordinatorLoadInProgressError, CoordinatorNotAvailableError):
            assert time.time() < deadline, "the coordinator never finished loading"
            time.sleep(0.2)
    assert {(tp.topic, tp.partition): o.offset for tp, o in offsets.items()} == {("kept", 0): 9}
    kadmin.close()


def test_group_membership_survives_a_broker_kill9(broker):
    create_topic(broker, "keep", 2)
    c = ck_consumer(broker, "g-keep", **{"session.timeout.ms": 6000})
    c.subscribe(["keep"])
    until(lambda: ck_parts(c) == {0, 1}, "c owns both", [ck_poll(c)])
    member = c.memberid()
    # The group's metadata (generation, members, assignment) was written when it became
    # stable; the restarted broker rebuilds it, so the member's heartbeats are still valid and
    # it keeps its partitions without rejoining.
    broker.kill9()
    broker.start()
    seen = []

    def poll():
        ck_poll(c)()
        seen.append((ck_parts(c), c.memberid()))

    deadline = time.time() + 4
    until(lambda: time.time() > deadline, "a few heartbeats", [poll])
    assert all(parts == {0, 1} and m == member for parts, m in seen)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_consumer_groups(["g-keep"])["g-keep"].result(TIMEOUT_S)
    assert described.state.name == "STABLE"
    assert [m.member_id for m in described.members] == [member]
    c.close()
