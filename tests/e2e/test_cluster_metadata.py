"""Real clients discover the broker: ApiVersions, Metadata, the cluster id and the controller.

Each client library negotiates versions with ApiVersions first, then asks for Metadata, so a
mistake in either (a version we advertise but cannot serve, a tagged field written with its
default value, a header version off by one) fails here before any data is involved.
"""

import json
import socket
import struct
import subprocess

from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient


def test_confluent_kafka_sees_the_broker_and_cluster(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=10)
    assert list(md.brokers) == [1]
    assert md.brokers[1].host == "127.0.0.1"
    assert md.brokers[1].port == broker.port
    assert md.controller_id == 1
    assert len(md.cluster_id) == 22


def test_kafka_python_sees_the_same_cluster_id(broker):
    confluent = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    assert cluster["cluster_id"] == confluent.cluster_id
    assert cluster["controller_id"] == 1
    assert [(b["broker_id"], b["port"]) for b in cluster["brokers"]] == [(1, broker.port)]


def test_kcat_lists_the_broker(broker):
    # Debian's kcat links an older librdkafka, which mis-parses tagged fields written with
    # their default value; this proves we omit them as Kafka does.
    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-L", "-J"],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    md = json.loads(out)
    assert md["controllerid"] == 1
    assert [(b["id"], b["name"]) for b in md["brokers"]] == [(1, f"127.0.0.1:{broker.port}")]


def test_the_cluster_id_survives_a_restart(broker):
    before = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).cluster_id
    broker.stop()
    broker.start()
    after = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).cluster_id
    assert before == after


def _api_versions_raw(port: int, version: int) -> tuple[int, int, bytes]:
    """Sends a bare ApiVersions request header of `version`; returns (correlation id, error
    code, rest) of the response, which a broker must answer in the v0 format when it does not
    know the version (KIP-511)."""
    body = struct.pack(">hhih", 18, version, 4242, -1)  # key, version, correlation, null client
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read_exact(s, 4))[0]
        frame = _read_exact(s, size)
    correlation, error = struct.unpack(">ih", frame[:6])
    return correlation, error, frame[6:]


def _read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "broker closed the connection"
        buf += chunk
    return buf


def test_an_unknown_api_versions_version_gets_the_v0_fallback(broker):
    correlation, error, rest = _api_versions_raw(broker.port, 99)
    assert correlation == 4242
    assert error == 35  # UNSUPPORTED_VERSION
    count = struct.unpack(">i", rest[:4])[0]
    entries = [struct.unpack(">hhh", rest[4 + 6 * i : 10 + 6 * i]) for i in range(count)]
    keys = {k for k, _, _ in entries}
    assert {3, 18} <= keys  # Metadata and ApiVersions are served
    assert all(lo <= hi for _, lo, hi in entries)


def test_a_second_broker_cannot_take_the_same_port(broker, tmp_path):
    # The listeners share their port across shards with SO_REUSEPORT; a second broker must not
    # be able to join them and take part of the connections. (A restart after kill -9 must
    # still work: test_durability covers that.)
    from conftest import sluice_bin

    second = subprocess.run(
        [str(sluice_bin()), "start", "--data-dir", str(tmp_path / "other"), "--listen",
         broker.bootstrap],
        capture_output=True,
        timeout=30,
    )
    assert second.returncode != 0
    assert b"in use" in second.stderr.lower(), second.stderr
    # The first broker still answers, with its own cluster id on every connection.
    ids = {
        AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).cluster_id
        for _ in range(4)
    }
    assert len(ids) == 1


def test_cluster_authorized_operations_are_reported_when_asked(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    desc = admin.describe_cluster(include_authorized_operations=True).result(timeout=10)
    names = {op.name for op in desc.authorized_operations}
    assert {"DESCRIBE", "ALTER", "CREATE", "IDEMPOTENT_WRITE"} <= names
