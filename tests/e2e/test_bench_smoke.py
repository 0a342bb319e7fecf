"""sluice-bench in test mode: every mode runs for a fraction of a second against a real broker.

The load generator is only trustworthy if what it claims matches what the broker holds, so
each run's JSON report is checked for the fields scripts rely on and its record counts are
cross-checked with an independent client (confluent-kafka's watermark offsets) and with a
consume run. The binary is $SLUICE_BENCH_BIN, else target/debug/sluice-bench, built here with
`cargo build` when that variable is not set (a no-op when it is up to date).
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

REPO = Path(__file__).resolve().parents[2]
LATENCY_KEYS = {"p50", "p90", "p99", "p999", "p9999", "max"}


@pytest.fixture(scope="session")
def bench_bin() -> Path:
    explicit = os.environ.get("SLUICE_BENCH_BIN")
    if explicit:
        return Path(explicit)
    subprocess.run(
        ["cargo", "build", "-q", "-p", "sluice-bench", "--bin", "sluice-bench"],
        cwd=REPO,
        check=True,
        timeout=900,
    )
    return REPO / "target" / "debug" / "sluice-bench"


def bench(bench_bin, tmp_path, mode, *args, name=None):
    out = tmp_path / f"{name or mode}.json"
    proc = subprocess.run(
        [str(bench_bin), mode, *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"sluice-bench {mode} failed:\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(out.read_text())
    assert report["mode"] == mode
    assert report["errors"] == 0, report["first_error"]
    for key in ("records_per_sec", "bytes_per_sec", "git_revision", "machine", "parameters"):
        assert key in report, key
    assert LATENCY_KEYS <= set(report["latency_us"])
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["memory_bytes"] > 0
    return report, out


def watermark_total(bootstrap, topic, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-smoke-check"})
    try:
        total = 0
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_produce_then_consume_counts_match_the_broker(broker, bench_bin, tmp_path):
    common = ["--bootstrap", broker.bootstrap, "--topic", "smoke", "--partitions", "2"]
    produced, _ = bench(
        bench_bin, tmp_path, "produce", *common,
        "--record-size", "100", "--acks", "1", "--duration", "10", "--records", "20000",
        "--in-flight", "4",
    )
    assert produced["records"] == 20000
    assert produced["records_per_sec"] > 0
    assert produced["bytes_per_sec"] > 20000 * 100 / produced["seconds"] * 0.99
    assert produced["latency_us"]["p50"] > 0
    # One round-trip sample per acknowledged request, none longer than the slowest record's
    # latency (which also counts the wait for a request slot).
    round_trip = produced["produce"]["round_trip_us"]
    assert round_trip["count"] == produced["produce"]["requests"] > 0
    assert 0 < round_trip["p50"] <= round_trip["max"] <= produced["latency_us"]["max"]
    assert produced["broker"]["topic_created"] is True
    assert watermark_total(broker.bootstrap, "smoke", 2) == 20000

    consumed, _ = bench(
        bench_bin, tmp_path, "consume", *common, "--consumers", "2", "--duration", "10",
    )
    assert consumed["records"] == 20000
    assert consumed["consume"]["records"] == 20000
    assert consumed["mb_per_sec"] > 0


def test_documented_invocation_with_acks_all_and_zero(broker, bench_bin, tmp_path):
    # The flags scripts rely on, verbatim, with a short duration.
    report, _ = bench(
        bench_bin, tmp_path, "produce",
        "--bootstrap", broker.bootstrap, "--topic", "t", "--partitions", "1",
        "--record-size", "100", "--acks", "all", "--duration", "0.5", name="acks-all",
    )
    acked = report["records"]
    assert acked > 0
    assert report["parameters"]["acks_value"] == -1
    # acks=0 gets no responses; the broker still appends everything that was sent.
    report0, _ = bench(
        bench_bin, tmp_path, "produce",
        "--bootstrap", broker.bootstrap, "--topic", "t", "--partitions", "1",
        "--acks", "0", "--records", "5000", "--duration", "5", name="acks-0",
    )
    assert report0["records"] == 5000
    deadline = time.time() + 10
    while watermark_total(broker.bootstrap, "t", 1) < acked + 5000 and time.time() < deadline:
        time.sleep(0.2)
    assert watermark_total(broker.bootstrap, "t", 1) == acked + 5000


def test_e2e_fixed_rate_latency_is_measured_at_the_consumer(broker, bench_bin, tmp_path):
    report, path = bench(
        bench_bin, tmp_path, "e2e",
        "--bootstrap", broker.bootstrap, "--topic", "e2e", "--partitions", "2",
        "--consumers", "2", "--rate", "4000", "--duration", "1", "--record-size", "64",
        "--compression", "lz4",
    )
    assert report["latency_kind"] == "end_to_end"
    produced = report["produce"]["records"]
    # About a second at 4000 records/s; a slow machine may fall behind but not run ahead.
    assert 1000 <= produced <= 4400
    assert report["consume"]["records"] == produced
    assert report["e2e_latency_us"]["count"] == produced
    assert report["latency_us"]["max"] >= report["latency_us"]["p50"] > 0
    assert watermark_total(broker.bootstrap, "e2e", 2) == produced
    # Percentiles are there for plotting, and the plot renders.
    assert report["percentiles"][-1][0] == 100.0
    svg = tmp_path / "chart.svg"
    proc = subprocess.run(
        [str(bench_bin), "plot", str(path), "--out", str(svg)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert svg.read_text().startswith("<svg")


def test_mixed_moves_records_both_ways(broker, bench_bin, tmp_path):
    report, _ = bench(
        bench_bin, tmp_path, "mixed",
        "--bootstrap", broker.bootstrap, "--topic", "mixed", "--partitions", "1",
        "--producers", "2", "--duration", "0.7", "--batch-records", "50",
    )
    assert report["produce"]["records"] > 0
    assert report["consume"]["records"] == report["produce"]["records"]
    assert report["e2e_latency_us"]["count"] == report["produce"]["records"]
