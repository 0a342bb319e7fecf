"""Hostile input on raw sockets never hurts anyone but the sender.

Random bytes, truncated frames, negative and huge sizes, a frame that announces 100 MiB and
then stalls, unknown API keys, unsupported versions, bodies with impossible array counts and
negative string lengths, and Produce requests whose records are garbage: each such connection
must be closed (or, where Kafka answers, answered with the precise error code), while a
confluent-kafka producer on its own connection keeps getting every record acknowledged, and
the broker stays alive with bounded memory.
"""

import random
import socket
import struct
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port

TIMEOUT_S = 30
# How long a hostile connection may stay open after its input before the test gives up.
CLOSE_WITHIN_S = 10


# ---- raw Kafka framing (only what the tests need) -----------------------------------------


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, correlation_id, body, client_id="hostile"):
    """A request with a v1 header (non-flexible versions only)."""
    header = struct.pack(">hhi", api_key, version, correlation_id) + string(client_id)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def flexible_frame(api_key, version, correlation_id, body):
    """A request with a v2 header (flexible versions): null client id, no tagged fields."""
    header = struct.pack(">hhih", api_key, version, correlation_id, -1) + b"\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def metadata_v1(correlation_id, topics=None):
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(string(t) for t in topics)
    return frame(3, 1, correlation_id, body)


def produce_v3(correlation_id, topic, partition, records, acks=1):
    body = (
        struct.pack(">h", -1)  # transactional id: null
        + struct.pack(">hi", acks, 10_000)
        + struct.pack(">i", 1) + string(topic)
        + struct.pack(">i", 1) + struct.pack(">i", partition)
        + struct.pack(">i", len(records)) + records
    )
    return frame(0, 3, correlation_id, body)


def connect(broker):
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=CLOSE_WITHIN_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def read_response(s):
    (size,) = struct.unpack(">i", read_exact(s, 4))
    return read_exact(s, size)


def closed_by_broker(s):
    """True when the broker closes the connection (EOF or reset) before CLOSE_WITHIN_S; any
    bytes it sends first are returned as the second value."""
    s.settimeout(CLOSE_WITHIN_S)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True, got
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return True, got
    except socket.timeout:
        return False, got


def send_and_expect_close(broker, data, half_close=False):
    s = connect(broker)
    try:
        try:
            s.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        if half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                # The broker already closed it, which is the outcome we want.
                return b""
        closed, got = closed_by_broker(s)
        assert closed, f"connection still open after {data[:16].hex()}..."
        return got
    finally:
        s.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ---- a well-behaved client running alongside ------------------------------------------------


class SteadyProducer:
    """Produces one record every few milliseconds on its own connection and counts
    acknowledgements and failures until stopped."""

    def __init__(self, broker, topic):
        self.producer = Producer({
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 0,
            "message.timeout.ms": 20000,
        })
        self.topic = topic
        self.sent = 0
        self.acked = []
        self.errors = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def report(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked.append(msg.value())

    def run(self):
        while not self.stop_flag.is_set():
            self.producer.produce(self.topic, value=f"steady-{self.sent}".encode(),
                                  partition=0, on_delivery=self.report)
            self.sent += 1
            self.producer.poll(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def acked_count(self):
        return len(self.acked)

    def wait_for_more(self, than, timeout=TIMEOUT_S):
        deadline = time.time() + timeout
        while self.acked_count() <= than and time.time() < deadline:
            time.sleep(0.05)
        assert self.acked_count() > than, "the steady producer stopped getting acknowledgements"

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(timeout=10)
        assert self.producer.flush(TIMEOUT_S) == 0


def create_topic(broker, name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                        operation_timeout=10)[name].result(timeout=TIMEOUT_S)


def consume_all(broker, topic, count):
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"hostile-{time.monotonic_ns()}",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out = []
    deadline = time.time() + TIMEOUT_S
    try:
        while len(out) < count and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                out.append(msg.value())
    finally:
        consumer.close()
    return out


# ---- the hostile inputs ---------------------------------------------------------------------


def random_garbage(broker, rng):
    for _ in range(40):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2048)))
        # Half-closing says "that is all": a frame the garbage claims to start can never end.
        send_and_expect_close(broker, data, half_close=True)


def truncated_frames(broker):
    whole = metadata_v1(7, ["steady"])
    for cut in [1, 3, 4, 5, 8, 12, len(whole) - 1]:
        got = send_and_expect_close(broker, whole[:cut], half_close=True)
        assert got == b"", f"answered a frame cut at {cut} bytes"


def bad_sizes(broker):
    for size in [-1, -(2**31), 2**31 - 1, 100 * 1024 * 1024 + 1, 0, 3, 7]:
        got = send_and_expect_close(broker, struct.pack(">i", size) + b"\x00" * 16)
        assert got == b"", f"answered a frame of size {size}"


def unknown_api_keys(broker):
    for key in [-1, 999, 32767, 10_000]:
        got = send_and_expect_close(broker, frame(key, 0, 1, b""))
        assert got == b"", f"answered api key {key}"


def unsupported_versions(broker):
    # Metadata v99 cannot be parsed, so there is nothing to answer: Kafka closes.
    got = send_and_expect_close(broker, frame(3, 99, 5, b""))
    assert got == b""
    # ApiVersions at an unknown version is answered in v0 with UNSUPPORTED_VERSION and the
    # broker's own range (KIP-511), so the client can retry; the connection stays usable.
    s = connect(broker)
    try:
        s.sendall(frame(18, 99, 42, b""))
        body = read_response(s)
        correlation_id, error_code, count = struct.unpack(">ihi", body[:10])
        assert (correlation_id, error_code) == (42, 35)
        keys = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", body[10 + 6 * i:16 + 6 * i])
            keys[key] = (lo, hi)
        assert keys[18][0] == 0 and keys[18][1] >= 3, keys
        assert 3 in keys and 0 in keys, keys
        s.sendall(metadata_v1(43, []))
        (cid,) = struct.unpack(">i", read_response(s)[:4])
        assert cid == 43
    finally:
        s.close()


def hostile_bodies(broker):
    cases = [
        # Metadata v1 claiming 2^31-1 topics in a 4-byte body.
        frame(3, 1, 9, struct.pack(">i", 2**31 - 1)),
        # Metadata v1 with one topic whose name length is negative (and not the null marker).
        frame(3, 1, 10, struct.pack(">ih", 1, -5) + b"abc"),
        # Metadata v1 with a topic name longer than the frame.
        frame(3, 1, 11, struct.pack(">ih", 1, 30_000) + b"abc"),
        # CreateTopics v0 claiming a billion topics.
        frame(19, 0, 12, struct.pack(">i", 1_000_000_000) + b"\x00" * 8),
        # Produce v3 whose records length is negative but not -1.
        frame(0, 3, 13, struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", 1) + string("t")
              + struct.pack(">ii", 1, 0) + struct.pack(">i", -77)),
        # A header whose client id length runs past the frame.
        struct.pack(">i", 10) + struct.pack(">hhih", 3, 1, 14, 5000),
        # Flexible versions: Metadata v12 with a compact array count of 2^32-2 (uvarint).
        flexible_frame(3, 12, 15, b"\xff\xff\xff\xff\x0f"),
        # ... with a varint that never ends.
        flexible_frame(3, 12, 16, b"\xff" * 12),
        # ... with a topic whose compact string length is far past the frame.
        flexible_frame(3, 12, 17, b"\x02" + b"\x00" * 16 + b"\xff\xff\x03abc"),
        # A v2 header claiming a million tagged fields.
        struct.pack(">i", 13) + struct.pack(">hhih", 3, 12, 18, -1) + b"\xc0\x84\x3d",
    ]
    for data in cases:
        got = send_and_expect_close(broker, data)
        assert got == b"", f"answered {data[:24].hex()}"


def good_then_garbage(broker):
    """A valid request pipelined with garbage: the valid one is answered, in order, and then
    the connection is closed."""
    got = send_and_expect_close(broker, metadata_v1(31, []) + struct.pack(">i", -7) + b"junk")
    (size,) = struct.unpack(">i", got[:4])
    assert len(got) == 4 + size, "one whole response, nothing after it"
    assert struct.unpack(">i", got[4:8])[0] == 31


def produce_garbage_records(broker, rng):
    """The frame is well formed; its records are not. Kafka answers per partition with
    CORRUPT_MESSAGE and keeps the connection."""
    s = connect(broker)
    try:
        garbage = [
            bytes(rng.getrandbits(8) for _ in range(100)),
            b"\x00" * 61,  # a header of zeroes: batch length 0 is too small
            b"\x00" * 8 + struct.pack(">i", 2**31 - 1) + b"\x00" * 60,  # length past the end
        ]
        # A well-framed v2 batch whose CRC does not match.
        batch = bytearray(struct.pack(">qiib", 0, 49 + 7, -1, 2) + b"\x00" * 4
                          + struct.pack(">hiqqqhii", 0, 0, 1, 1, -1, -1, -1, 1)
                          + b"\x0e\x00\x00\x00\x01\x02\x00")
        garbage.append(bytes(batch))
        for i, records in enumerate(garbage):
            s.sendall(produce_v3(100 + i, "steady", 0, records))
            body = read_response(s)
            cid, topics = struct.unpack(">ii", body[:8])
            assert (cid, topics) == (100 + i, 1)
            name_len = struct.unpack(">h", body[8:10])[0]
            at = 10 + name_len
            parts, index, error_code = struct.unpack(">iih", body[at:at + 10])
            assert (parts, index) == (1, 0)
            assert error_code == 2, f"garbage {i}: error {error_code}, expected CORRUPT_MESSAGE"
        # The connection still serves a proper request afterwards.
        s.sendall(metadata_v1(200, []))
        assert struct.unpack(">i", read_response(s)[:4])[0] == 200
    finally:
        s.close()


def test_hostile_input_hurts_only_its_own_connection(broker):
    create_topic(broker, "steady")
    pid = broker.proc.pid
    rng = random.Random(0x51C3)
    with SteadyProducer(broker, "steady") as steady:
        steady.wait_for_more(5)
        rss_before = rss_kib(pid)
        for step in [
            lambda: random_garbage(broker, rng),
            lambda: truncated_frames(broker),
            lambda: bad_sizes(broker),
            lambda: unknown_api_keys(broker),
            lambda: unsupported_versions(broker),
            lambda: hostile_bodies(broker),
            lambda: good_then_garbage(broker),
            lambda: produce_garbage_records(broker, rng),
        ]:
            before = steady.acked_count()
            step()
            assert broker.proc.poll() is None, "the broker died"
            # The steady producer kept being served while (and after) this happened.
            steady.wait_for_more(before)
        rss_after = rss_kib(pid)
    assert not steady.errors, steady.errors[:3]
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)
    values = consume_all(broker, "steady", steady.acked_count())
    assert values == steady.acked
    assert values == [f"steady-{i}".encode() for i in range(len(values))]
    log = broker.log()
    # Each hostile connection was closed with a log line; nothing panicked.
    assert log.count("closed connection") >= 50, log[-2000:]
    assert "panicked" not in log


def test_stalled_100_mib_frames_cost_no_memory(broker):
    """Twenty connections each announce a 100 MiB request (the largest allowed), send a
    kilobyte of it and stall. The broker must not reserve 2 GiB for them, and must keep
    answering others meanwhile."""
    pid = broker.proc.pid
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.list_topics(timeout=10)
    rss_before = rss_kib(pid)
    stalled = []
    try:
        for i in range(20):
            s = connect(broker)
            s.sendall(struct.pack(">i", 100 * 1024 * 1024) + struct.pack(">hhi", 3, 1, i)
                      + b"\x00" * 1024)
            stalled.append(s)
        time.sleep(1.0)
        rss_during = rss_kib(pid)
        assert rss_during - rss_before < 100 * 1024, (rss_before, rss_during)
        # Others are served while those frames hang.
        assert admin.list_topics(timeout=10).brokers
        s = connect(broker)
        s.sendall(metadata_v1(77, []))
        assert struct.unpack(">i", read_response(s)[:4])[0] == 77
        s.close()
        for s in stalled:
            s.setblocking(False)
            try:
                closed = s.recv(1) == b""
            except BlockingIOError:
                closed = False
            assert not closed, "a slow sender inside the size limit must be waited for"
    finally:
        for s in stalled:
            s.close()
    assert broker.proc.poll() is None
    time.sleep(0.5)
    # Once they hang up, the broker lets go of them.
    assert admin.list_topics(timeout=10).brokers


def wait_for_open_connections(broker, n, timeout_s=10.0):
    """Waits until the broker's /metrics counts `n` open client connections (all shards)."""
    deadline = time.time() + timeout_s
    while True:
        text = urllib.request.urlopen(broker.admin_url + "/metrics", timeout=5).read().decode()
        open_now = sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("sluice_connections_open")
        )
        if open_now == n:
            return
        assert time.time() < deadline, f"{open_now} connections open, waiting for {n}"
        time.sleep(0.05)


def test_configured_limits_close_stalled_oversized_and_excess_connections():
    """With a short idle timeout, a small request limit and few connections allowed:
    connections past the maximum are closed on arrival while a client that got in first is
    still served, a frame over the limit is refused at once, and a frame that stalls is dropped
    after the idle time (as is any idle connection)."""
    with tempfile.TemporaryDirectory(prefix="sluice-e2e-limits-") as tmp:
        config = Path(tmp) / "sluice.toml"
        config.write_text(
            "connections-max-idle-ms = 1500\n"
            "socket-request-max-bytes = 65536\n"
            "max-connections = 12\n"
        )
        broker = Broker(Path(tmp) / "data", free_port(), ["--config", str(config)])
        broker.start()
        try:
            good = connect(broker)
            good.sendall(metadata_v1(1, []))
            assert struct.unpack(">i", read_response(good)[:4])[0] == 1

            # Past max-connections: the extra connections are closed on arrival.
            extra = [connect(broker) for _ in range(20)]
            try:
                time.sleep(0.5)
                closed_now = 0
                for s in extra:
                    s.setblocking(False)
                    try:
                        if s.recv(1) == b"":
                            closed_now += 1
                    except BlockingIOError:
                        pass
                    except ConnectionResetError:
                        closed_now += 1
                # `good` holds one of the 12 places, so 11 of the 20 may stay open.
                assert closed_now == 9, closed_now
                good.sendall(metadata_v1(2, []))
                assert struct.unpack(">i", read_response(good)[:4])[0] == 2
            finally:
                for s in extra:
                    s.close()
            assert "too many connections" in broker.log()
            # The broker frees the places of closed connections as it sees them end; under
            # load that can lag behind the client's close, and a connection made meanwhile
            # would be refused as one too many (seen once in a CI run).
            wait_for_open_connections(broker, 1)

            # Over the configured request limit: closed without reading the body.
            got = send_and_expect_close(broker, struct.pack(">i", 65537) + b"\x00" * 64)
            assert got == b""

            # Stalled mid-frame: waited for, then dropped once the idle time has passed.
            stalled = connect(broker)
            stalled.sendall(struct.pack(">i", 60_000) + b"\x00" * 100)
            started = time.time()
            closed, _ = closed_by_broker(stalled)
            waited = time.time() - started
            stalled.close()
            assert closed and 1.0 <= waited < CLOSE_WITHIN_S, waited
            # The idle rule applies to the quiet well-behaved connection too; new ones work.
            assert closed_by_broker(good)[0]
            good.close()
            fresh = connect(broker)
            fresh.sendall(metadata_v1(3, []))
            assert struct.unpack(">i", read_response(fresh)[:4])[0] == 3
            fresh.close()
            assert broker.proc.poll() is None
        finally:
            broker.stop()
