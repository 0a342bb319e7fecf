"""The admin HTTP listener: /metrics read by the Prometheus project's own Python parser while a
real client (confluent-kafka) produces and fetches, and the status endpoints."""

import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from conftest import Broker, free_port, sluice_bin
from datapath import TIMEOUT_S, ck_consume, create_topic


def http(url, method="GET"):
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Scrape:
    """One /metrics body, parsed by prometheus_client."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.samples = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name, **labels):
        """The sample's value; 0 when the series does not exist (yet)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name):
        """The sum of every series of `name` (e.g. over shards)."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def series(self, name):
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def scrape(broker):
    status, headers, body = http(broker.admin_url + "/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    return Scrape(body.decode())


def check_histograms(s):
    """Every histogram series: cumulative buckets that never decrease, the +Inf bucket equal to
    the count."""
    histograms = [name for name, kind in s.types.items() if kind == "histogram"]
    assert "sluice_request_duration_seconds" in histograms
    assert "sluice_fsync_duration_seconds" in histograms
    assert "sluice_log_write_duration_seconds" in histograms
    for name in histograms:
        by_series = {}
        for labels, v in s.series(name + "_bucket").items():
            rest = tuple(kv for kv in labels if kv[0] != "le")
            le = dict(labels)["le"]
            by_series.setdefault(rest, []).append((float(le), v))
        assert by_series, name
        for rest, buckets in by_series.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), (name, rest, buckets)
            assert buckets[-1][0] == float("inf")
            assert buckets[-1][1] == s.value(name + "_count", **dict(rest)), (name, rest)


def test_counters_move_by_what_confluent_kafka_produced_and_fetched(broker):
    before = scrape(broker)
    create_topic(broker, "metered", partitions=2)
    created = scrape(broker)
    assert (
        created.value("sluice_requests_total", api="CreateTopics")
        - before.value("sluice_requests_total", api="CreateTopics")
        == 1
    )

    # One record per Produce request: each is flushed before the next is produced.
    values = [b"value-%03d-" % i + b"x" * i for i in range(7)]
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0}
    )
    errors = []
    for v in values:
        producer.produce(
            "metered", value=v, partition=1, on_delivery=lambda e, _m: e and errors.append(e)
        )
        assert producer.flush(TIMEOUT_S) == 0
    assert not errors, errors
    produced = scrape(broker)

    def moved(after, earlier, name, **labels):
        return after.value(name, **labels) - earlier.value(name, **labels)

    def moved_total(after, earlier, name):
        return after.total(name) - earlier.total(name)

    assert moved(produced, created, "sluice_requests_total", api="Produce") == len(values)
    assert moved(
        produced, created, "sluice_request_duration_seconds_count", api="Produce"
    ) == len(values)
    assert moved(produced, created, "sluice_request_duration_seconds_sum", api="Produce") > 0
    part1 = {"topic": "metered", "partition": "1"}
    part0 = {"topic": "metered", "partition": "0"}
    assert produced.value("sluice_partition_produced_records_total", **part1) == len(values)
    produced_bytes = produced.value("sluice_partition_produced_bytes_total", **part1)
    # Each record is its own batch: a 61-byte header, the value, and a few bytes of framing.
    assert sum(map(len, values)) + 61 * len(values) < produced_bytes
    assert produced_bytes < sum(map(len, values)) + 100 * len(values)
    assert produced.value("sluice_partition_produced_records_total", **part0) == 0
    assert produced.total("sluice_request_errors_total") == 0
    # acks=all waited for group-committed fdatasyncs, which were timed.
    assert produced.total("sluice_fsync_duration_seconds_count") >= 1
    assert produced.total("sluice_flush_rounds_total") >= 1
    # Each record was flushed before the next was sent, so each needed at least one segment
    # write of its own, and every write was timed.
    assert moved_total(produced, created, "sluice_log_write_duration_seconds_count") >= len(values)
    assert moved_total(produced, created, "sluice_log_write_duration_seconds_sum") > 0

    messages = ck_consume(broker, "metered", len(values), partitions=(1,))
    assert [m.value() for m in messages] == values
    fetched = scrape(broker)
    assert fetched.value("sluice_partition_fetched_records_total", **part1) == len(values)
    # The same batches go out as came in.
    assert fetched.value("sluice_partition_fetched_bytes_total", **part1) == produced_bytes
    assert fetched.value("sluice_partition_fetched_records_total", **part0) == 0
    assert moved(fetched, produced, "sluice_requests_total", api="Fetch") >= 1
    # Freshly appended batches are read from the batch cache.
    hits = fetched.total("sluice_batch_cache_hits_total")
    assert hits - produced.total("sluice_batch_cache_hits_total") >= 1

    # Connections and cores.
    shards = int(fetched.value("sluice_shards"))
    assert shards >= 1
    assert fetched.total("sluice_connections_accepted_total") >= 2
    for s in range(shards):
        assert fetched.value("sluice_shard_busy_seconds_total", shard=str(s)) > 0
        assert fetched.value("sluice_shard_tasks_total", shard=str(s)) > 0
    # The topic's two partitions came on top of the internal ones (__consumer_offsets).
    assert fetched.total("sluice_shard_partitions") - before.total("sluice_shard_partitions") == 2
    # Counters never go down between scrapes.
    for (name, labels), v in fetched.samples.items():
        if name.endswith("_total") and fetched.types.get(name[: -len("_total")]) == "counter":
            assert v >= created.samples.get((name, labels), 0), (name, labels)
    check_histograms(fetched)

    # The process collector's figures, under the names Prometheus client libraries use, checked
    # against what /proc says of the broker process right after the scrape.
    pid = broker.proc.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss = int(status["VmRSS"].split()[0]) * 1024
    assert fetched.types.get("process_cpu_seconds") == "counter"
    assert fetched.value("process_cpu_seconds_total") > 0
    open_fds = fetched.value("process_open_fds")
    assert abs(open_fds - fds) <= 8, (open_fds, fds)
    assert fetched.value("process_max_fds") >= fds
    resident = fetched.value("process_resident_memory_bytes")
    assert 0.5 * rss < resident < 2 * rss, (resident, rss)
    assert resident >= fetched.total("sluice_batch_cache_bytes")
    assert fetched.value("process_virtual_memory_bytes") >= resident
    assert time.time() - 3600 < fetched.value("process_start_time_seconds") <= time.time()


def test_a_long_poll_is_parked_and_answered_at_shutdown(broker):
    create_topic(broker, "quiet")
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "parked",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 30000,
        }
    )
    try:
        consumer.assign([TopicPartition("quiet", 0, 0)])
        deadline = time.time() + TIMEOUT_S
        parked = 0
        while time.time() < deadline and parked < 1:
            consumer.poll(0.2)
            parked = scrape(broker).value("sluice_fetches_parked")
        assert parked >= 1, "an idle consumer's fetch should be parked"
        assert scrape(broker).value("sluice_requests_in_flight", api="Fetch") >= 1
        # At shutdown the parked fetch answers at once instead of holding the broker for its
        # 30 s wait or the 5 s shutdown grace period.
        stopping = time.monotonic()
        os.kill(broker.proc.pid, signal.SIGTERM)
        code = broker.proc.wait(TIMEOUT_S)
        took = time.monotonic() - stopping
        assert code == 0, broker.log()
        assert took < 3.0, f"shutdown took {took:.1f} s with a parked fetch"
    finally:
        consumer.close()


def test_ready_turns_503_while_a_shutdown_waits_for_a_slow_reader(broker):
    from test_hostile_input import frame, string

    create_topic(broker, "big")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for _ in range(100):
        producer.produce("big", value=os.urandom(100_000), partition=0)
    assert producer.flush(TIMEOUT_S) == 0
    status, _, body = http(broker.admin_url + "/v1/status/ready")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    # A client that asks for 10 MB and reads none of it: the broker's send fills the socket
    # buffers and waits, so the connection is still answering when the shutdown starts, and
    # holds the shutdown in its grace period.
    limit = 64 * 1024 * 1024
    fetch_v4 = frame(1, 4, 1, (
        struct.pack(">iiiib", -1, 500, 1, limit, 0)  # replica, wait, min, max, isolation
        + struct.pack(">i", 1) + string("big")
        + struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, limit)  # partition, offset, max
    ))
    host, port = broker.bootstrap.split(":")
    with socket.socket() as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect((host, int(port)))
        reader.sendall(fetch_v4)
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline and not scrape(broker).value("sluice_requests_total",
                                                                  api="Fetch"):
            time.sleep(0.05)
        os.kill(broker.proc.pid, signal.SIGTERM)
        seen = []
        while broker.proc.poll() is None and time.time() < deadline:
            try:
                status, _, body = http(broker.admin_url + "/v1/status/ready")
            except (urllib.error.URLError, ConnectionError):
                break
            seen.append((status, json.loads(body)))
            if status == 503:
                break
            time.sleep(0.01)
        assert (503, {"status": "shutting down"}) in seen, seen
        assert broker.proc.wait(TIMEOUT_S) == 0, broker.log()


def test_status_endpoints_methods_and_unknown_paths(broker):
    status, headers, body = http(broker.admin_url + "/v1/status/ready")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    assert headers["Content-Type"] == "application/json"
    status, _, body = http(broker.admin_url + "/v1/status/live")
    assert (status, json.loads(body)) == (200, {"status": "live"})
    status, _, _ = http(broker.admin_url + "/no/such/path")
    assert status == 404
    status, headers, _ = http(broker.admin_url + "/metrics", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    status, _, body = http(broker.admin_url + "/metrics", method="HEAD")
    assert (status, body) == (200, b"")


def test_the_admin_listener_can_be_turned_off_and_a_taken_port_is_refused(broker, tmp_path):
    # A second broker asking for the first one's admin address refuses to start.
    host_port = broker.admin_url.removeprefix("http://")
    second = subprocess.run(
        [str(sluice_bin()), "start", "--data-dir", str(tmp_path / "second"),
         "--listen", f"127.0.0.1:{free_port()}", "--admin-listen", host_port],
        capture_output=True,
        timeout=30,
    )
    assert second.returncode != 0
    assert b"cannot listen for admin HTTP" in second.stderr, second.stderr
    assert b"in use" in second.stderr.lower(), second.stderr

    off = Broker(tmp_path / "off", free_port(), ["--admin-listen", "off"])
    off.start()
    try:
        assert off.admin_url is None
        create_topic(off, "still-works")
    finally:
        assert off.stop() == 0, off.log()


def test_an_out_of_range_fetch_is_counted_under_its_kafka_error_code(broker):
    create_topic(broker, "ranged")
    before = scrape(broker)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "ranged",
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
        }
    )
    try:
        consumer.assign([TopicPartition("ranged", 0, 1000)])
        deadline = time.time() + TIMEOUT_S
        error = None
        while error is None and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                error = msg.error()
        assert error is not None, "the consumer should have been told the offset is out of range"
    finally:
        consumer.close()
    after = scrape(broker)
    out_of_range = {"api": "Fetch", "code": "1"}  # OFFSET_OUT_OF_RANGE
    assert after.value("sluice_request_errors_total", **out_of_range) - before.value(
        "sluice_request_errors_total", **out_of_range
    ) >= 1
    assert after.value("sluice_partition_fetched_records_total", topic="ranged", partition="0") == 0


def test_group_lag_reports_committed_offsets_high_watermarks_and_record_times(broker):
    create_topic(broker, "lagging", partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    base_ts = 1_700_000_000_000
    for p in range(2):
        for i in range(10):
            producer.produce("lagging", value=f"{p}-{i}".encode(), partition=p,
                             timestamp=base_ts + p * 100_000 + i * 1000)
    assert producer.flush(TIMEOUT_S) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lag-g",
                         "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("lagging", 0, 4), TopicPartition("lagging", 1, 10)],
                    asynchronous=False)
    consumer.close()

    status, headers, body = http(f"{broker.admin_url}/v1/groups/lag-g/lag")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    report = json.loads(body)
    assert report["group"] == "lag-g"
    rows = {r["partition"]: r for r in report["partitions"]}
    assert {p: (r["committed_offset"], r["high_watermark"], r["lag"]) for p, r in rows.items()} \
        == {0: (4, 10, 6), 1: (10, 10, 0)}
    # The record the group reads next on partition 0 is record 4; partition 1 is caught up.
    assert rows[0]["committed_record_timestamp_ms"] == base_ts + 4000
    assert rows[1]["committed_record_timestamp_ms"] is None
    assert all(r["topic"] == "lagging" for r in rows.values())

    status, _, _ = http(f"{broker.admin_url}/v1/groups/nobody/lag")
    assert status == 404
