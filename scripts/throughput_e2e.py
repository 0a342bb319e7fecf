#!/usr/bin/env python3
"""End-to-end throughput of a real client against a real broker, next to loopback bandwidth
measured in the same run.

Starts `sluice` (SLUICE_BIN, else target/release/sluice, else target/debug/sluice, relative to
this script) on a free loopback port with a temporary data directory, produces N records of
SIZE bytes with confluent-kafka (librdkafka), consumes them back, and prints records/s and MB/s
for each direction together with the loopback TCP bandwidth of a plain Python socket pair, so
the figure can be read as a ratio against a limit of the same machine at the same moment.

Usage: scripts/throughput_e2e.py [--records N] [--size BYTES] [--partitions P] [--acks A]
"""

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]


def sluice_bin():
    if os.environ.get("SLUICE_BIN"):
        return Path(os.environ["SLUICE_BIN"])
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "sluice"
        if p.exists():
            return p
    sys.exit("no sluice binary: run cargo build first")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_mb_s(total_bytes=1 << 30, chunk=1 << 20):
    """Bandwidth of one TCP connection over loopback, Python on both ends (MB/s)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    received = [0]

    def sink():
        conn, _ = server.accept()
        buf = bytearray(chunk)
        view = memoryview(buf)
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            received[0] += n
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    client = socket.create_connection(("127.0.0.1", port))
    data = b"\x00" * chunk
    start = time.perf_counter()
    sent = 0
    while sent < total_bytes:
        client.sendall(data)
        sent += chunk
    client.close()
    t.join()
    elapsed = time.perf_counter() - start
    server.close()
    return received[0] / elapsed / 1e6


def machine():
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1e6:.1f} GB"
    except (OSError, ValueError, IndexError):
        pass
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    return f"rev {rev}; {cpu}; {os.cpu_count()} cpus; {mem}; kernel {platform.release()}"


def kcat_round_trip(bootstrap, records, size):
    """Produces `records` lines of `size` bytes with kcat to a fresh 1-partition topic and
    consumes them back; returns (produce seconds, consume seconds)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("tput-kcat", num_partitions=1,
                                  replication_factor=1)])["tput-kcat"].result(30)
    with tempfile.NamedTemporaryFile(prefix="sluice-tput-", suffix=".txt") as f:
        f.write((b"x" * size + b"\n") * records)
        f.flush()
        start = time.perf_counter()
        subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", "tput-kcat", "-p", "0",
                        "-X", "linger.ms=5", "-X", "batch.size=1000000", "-l", f.name],
                       check=True)
        produce_s = time.perf_counter() - start
    start = time.perf_counter()
    out = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", "tput-kcat", "-p", "0",
                          "-o", "beginning", "-e", "-q", "-X", "fetch.max.bytes=52428800"],
                         check=True, capture_output=True).stdout
    consume_s = time.perf_counter() - start
    lines = out.count(b"\n")
    if lines != records:
        sys.exit(f"kcat consumed {lines} of {records}")
    return produce_s, consume_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--acks", default="1")
    args = ap.parse_args()

    binary = sluice_bin()
    print(f"machine: {machine()}")
    print(f"binary: {binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary}")
    lo = loopback_mb_s()
    print(f"loopback TCP (python socket pair, 1 GiB): {lo:.0f} MB/s")

    tmp = tempfile.mkdtemp(prefix="sluice-tput-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(binary), "start", "--data-dir", f"{tmp}/data", "--listen", bootstrap,
         "--admin-listen", "127.0.0.1:0", "--log-level", "warn"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()
        if b"ready" not in line:
            sys.exit(f"broker did not start: {line!r}")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("tput", num_partitions=args.partitions,
                                      replication_factor=1)])["tput"].result(30)

        value = b"x" * args.size
        producer = Producer({"bootstrap.servers": bootstrap, "acks": args.acks,
                             "linger.ms": 5, "batch.size": 1_000_000,
                             "queue.buffering.max.messages": 2_000_000,
                             "queue.buffering.max.kbytes": 1_048_576})
        failed = [0]

        def report(err, _msg):
            if err is not None:
                failed[0] += 1

        start = time.perf_counter()
        for i in range(args.records):
            while True:
                try:
                    producer.produce("tput", value, partition=i % args.partitions,
                                     on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 10_000 == 0:
                producer.poll(0)
        assert producer.flush(120) == 0
        produce_s = time.perf_counter() - start
        if failed[0]:
            sys.exit(f"{failed[0]} records failed")

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tput",
                             "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                             "max.partition.fetch.bytes": 10_485_760})
        consumer.assign([TopicPartition("tput", p, OFFSET_BEGINNING)
                         for p in range(args.partitions)])
        got = 0
        start = time.perf_counter()
        deadline = time.time() + 300
        while got < args.records and time.time() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=1.0):
                if m.error() is None:
                    got += 1
        consume_s = time.perf_counter() - start
        consumer.close()
        if got != args.records:
            sys.exit(f"consumed {got} of {args.records}")

        kcat_s = kcat_round_trip(bootstrap, args.records, args.size) if shutil.which("kcat") else None

        mb = args.records * args.size / 1e6
        print(f"params: {args.records} records x {args.size} B, {args.partitions} partitions, "
              f"acks={args.acks}, confluent-kafka {__import__('confluent_kafka').version()}")
        for name, secs in (("produce", produce_s), ("consume", consume_s)):
            print(f"{name}: {args.records / secs:,.0f} records/s, {mb / secs:.1f} MB/s of values "
                  f"({100 * mb / secs / lo:.1f}% of loopback) in {secs:.2f} s")
        if kcat_s:
            # kcat drives librdkafka from C: no Python call per record, so it shows how much of
            # the confluent-kafka figure is the Python loop rather than the broker.
            for name, secs in zip(("kcat produce", "kcat consume"), kcat_s):
                print(f"{name} (1 partition, process start included): "
                      f"{args.records / secs:,.0f} records/s, {mb / secs:.1f} MB/s "
                      f"({100 * mb / secs / lo:.1f}% of loopback) in {secs:.2f} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
