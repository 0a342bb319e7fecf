"""Data-path answers that client libraries hide or refuse to ask for, checked on the wire:
OffsetForLeaderEpoch (librdkafka only sends it after a leader change, which a single node
never has), invalid acks, and produce to a partition that does not exist. Requests are encoded
by hand in the plain (non-flexible) versions, following Kafka's published message specs."""

import socket
import struct

from datapath import ck_produce, create_topic, record


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def call(broker, api_key, version, body, correlation_id=7):
    header = struct.pack(">hhi", api_key, version, correlation_id) + string("wire-test")
    frame = header + body
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        data = recv_exact(s, size)
    assert struct.unpack(">i", data[:4])[0] == correlation_id
    return data[4:]


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


class Reader:
    def __init__(self, data):
        self.data = data
        self.at = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        (v,) = struct.unpack(fmt, self.data[self.at:self.at + size])
        self.at += size
        return v

    def string(self):
        n = self.take(">h")
        s = self.data[self.at:self.at + n].decode()
        self.at += n
        return s


def offset_for_leader_epoch_v3(broker, topic, parts):
    """parts: [(partition, current_leader_epoch, leader_epoch)] → [(error, partition, epoch, end)]"""
    body = struct.pack(">i", -1) + struct.pack(">i", 1) + string(topic) + struct.pack(">i", len(parts))
    for p, current, wanted in parts:
        body += struct.pack(">iii", p, current, wanted)
    r = Reader(call(broker, 23, 3, body))
    r.take(">i")  # throttle
    assert r.take(">i") == 1
    assert r.string() == topic
    return [(r.take(">h"), r.take(">i"), r.take(">i"), r.take(">q")) for _ in range(r.take(">i"))]


def test_offset_for_leader_epoch_knows_only_epoch_zero(broker):
    create_topic(broker, "ofle")
    ck_produce(broker, "ofle", [record(None, f"{i}".encode()) for i in range(7)])
    got = offset_for_leader_epoch_v3(
        broker, "ofle", [(0, 0, 0), (0, -1, 0), (0, 0, 3), (0, 5, 0), (9, 0, 0)])
    assert got == [
        (0, 0, 0, 7),     # the only epoch ends at the log end
        (0, 0, 0, 7),     # current epoch -1: no fencing check
        (0, 0, -1, -1),   # an epoch the log never had
        (75, 0, -1, -1),  # UNKNOWN_LEADER_EPOCH: the client knows a newer leader than us
        (3, 9, -1, -1),   # UNKNOWN_TOPIC_OR_PARTITION
    ]


def produce_v3(broker, acks, topic, partition, records):
    body = struct.pack(">h", -1) + struct.pack(">hi", acks, 5000) + struct.pack(">i", 1)
    body += string(topic) + struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(records)) + records
    r = Reader(call(broker, 0, 3, body))
    assert r.take(">i") == 1
    assert r.string() == topic
    assert r.take(">i") == 1
    return r.take(">i"), r.take(">h"), r.take(">q"), r.take(">q")


def test_invalid_acks_and_unknown_partitions_are_refused(broker):
    create_topic(broker, "acks")
    # INVALID_REQUIRED_ACKS (21) whatever the records are.
    assert produce_v3(broker, 2, "acks", 0, b"x")[1] == 21
    # UNKNOWN_TOPIC_OR_PARTITION (3) for a partition the topic does not have, and for a topic
    # that does not exist (produce never creates topics; Metadata does).
    assert produce_v3(broker, 1, "acks", 5, b"x")[1] == 3
    assert produce_v3(broker, 1, "no-such-topic", 0, b"x")[1] == 3
    # CORRUPT_MESSAGE (2) for bytes that are not a record batch.
    assert produce_v3(broker, 1, "acks", 0, b"\x00" * 20)[1] == 2


def test_acks_all_needs_enough_in_sync_replicas(broker):
    create_topic(broker, "misr", config={"min.insync.replicas": "2"})
    # NOT_ENOUGH_REPLICAS (19) for acks=all; acks=1 is not affected, as in Kafka.
    assert produce_v3(broker, -1, "misr", 0, b"x")[1] == 19
    ck_produce(broker, "misr", [record(None, b"ok")], acks="1")


def message_v1(value):
    """A pre-v2 (magic 1) message set entry: offset, size, crc, magic, attributes, timestamp,
    null key, value. The CRC is left zero: the broker must refuse the format before anything."""
    body = struct.pack(">bbq", 1, 0, 1_600_000_000_000) + struct.pack(">i", -1)
    body += struct.pack(">i", len(value)) + value
    return struct.pack(">qi", 0, 4 + len(body)) + struct.pack(">I", 0) + body


def test_old_message_formats_are_refused(broker):
    create_topic(broker, "oldfmt")
    # UNSUPPORTED_FOR_MESSAGE_FORMAT (43), as Kafka 4 answers magic 0 and 1.
    assert produce_v3(broker, 1, "oldfmt", 0, message_v1(b"v" * 40))[1] == 43
    # Too short to be a v2 batch at all: CORRUPT_MESSAGE (2).
    assert produce_v3(broker, 1, "oldfmt", 0, message_v1(b"v"))[1] == 2


def test_list_offsets_v0_answers_old_style_offsets(broker):
    create_topic(broker, "lov0")
    ck_produce(broker, "lov0", [record(None, f"{i}".encode()) for i in range(4)])
    answers = {}
    for ts in (-1, -2):
        body = struct.pack(">i", -1) + struct.pack(">i", 1) + string("lov0")
        body += struct.pack(">i", 1) + struct.pack(">iqi", 0, ts, 1)
        r = Reader(call(broker, 2, 0, body))
        assert r.take(">i") == 1 and r.string() == "lov0" and r.take(">i") == 1
        partition, error = r.take(">i"), r.take(">h")
        answers[ts] = (partition, error, [r.take(">q") for _ in range(r.take(">i"))])
    assert answers == {-1: (0, 0, [4]), -2: (0, 0, [0])}


def test_old_client_protocol_versions_round_trip(broker):
    # kafka-python pinned to Kafka 0.11's protocol: Produce v3, Fetch v5, ListOffsets v2, the
    # oldest versions this broker serves.
    from datapath import kp_consume, kp_produce, kp_records

    create_topic(broker, "oldver")
    sent = [record(f"k{i}".encode(), f"v{i}".encode(), [("h", b"x")], 1_650_000_000_000 + i)
            for i in range(20)]
    kp_produce(broker, "oldver", sent, api_version=(0, 11))
    assert kp_records(kp_consume(broker, "oldver", 20, api_version=(0, 11))) == sent
