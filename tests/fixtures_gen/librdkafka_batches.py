#!/usr/bin/env python3
"""Captures record batches exactly as librdkafka writes them, for the engine's batch corpus.

Two librdkafka front ends produce the same records with every codec to a running Sluice broker:
confluent-kafka (librdkafka 2.x from PyPI) and kcat (Debian's librdkafka). The broker stores
batches as clients sent them (only the base offset and partition leader epoch are assigned), so
the first batch of each topic's first segment is the client's batch. The expected records are
what the producer was given, with timestamps as confluent-kafka's consumer decodes them — an
independent decoder — so the Rust test checks our decoder against librdkafka's.

Usage (from the repository root, with a built broker):
    python3 tests/fixtures_gen/librdkafka_batches.py target/debug/sluice
Writes engine/tests/fixtures/librdkafka/{*.bin,manifest.json}.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "engine" / "tests" / "fixtures" / "librdkafka"
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BASE_TS = 1_700_000_000_000

# Records the producers are given: keys, null keys, empty and null values, headers (with a
# null header value), and values long enough to make compression worthwhile.
RECORDS = [
    (b"key-0", b"value-0", [("h1", b"v1")], BASE_TS),
    (None, b"no key", [], BASE_TS + 5),
    (b"key-2", b"", [("empty", b"")], BASE_TS + 7),
    (b"key-3", None, [("nullh", None), ("h2", b"x")], BASE_TS + 9),
    (b"key-4", b"abc" * 200, [], BASE_TS + 2_000),
    (b"", b"empty key " * 30, [("k", b"v" * 40)], BASE_TS + 1),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_batch(data_dir: Path, topic: str) -> bytes:
    log = data_dir / f"{topic}-0" / "00000000000000000000.log"
    raw = log.read_bytes()
    length = struct.unpack(">i", raw[8:12])[0]
    return raw[: 12 + length]


def consume_all(bootstrap, topic, n):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fx", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.time() + 20
    while len(out) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append(m)
    c.close()
    assert len(out) == n, f"{topic}: read {len(out)} of {n}"
    return out


def hexb(b):
    return None if b is None else b.hex()


def expected(messages):
    rows = []
    for i, m in enumerate(messages):
        rows.append(
            {
                "offset_delta": i,
                "timestamp": m.timestamp()[1],
                "key": hexb(m.key()),
                "value": hexb(m.value()),
                "headers": [[k.encode().hex(), hexb(v)] for k, v in (m.headers() or [])],
            }
        )
    return rows


def main():
    sluice = Path(sys.argv[1]).resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {"generator": "tests/fixtures_gen/librdkafka_batches.py", "record_sets": {}, "fixtures": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        proc = subprocess.Popen(
            [str(sluice), "start", "--data-dir", str(data), "--listen", bootstrap, "--dev",
             "--admin-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert b"ready" in proc.stdout.readline()
            admin = AdminClient({"bootstrap.servers": bootstrap})
            topics = [f"{src}-{codec}" for src in ("confluent", "kcat") for codec in CODECS]
            for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
                f.result(timeout=10)

            for codec in CODECS:
                topic = f"confluent-{codec}"
                p = Producer(
                    {
                        "bootstrap.servers": bootstrap,
                        "compression.type": codec,
                        "linger.ms": 500,
                        "enable.idempotence": False,
                        "batch.num.messages": 1000,
                    }
                )
                for key, value, headers, ts in RECORDS:
                    p.produce(topic, key=key, value=value, headers=headers, timestamp=ts, partition=0)
                assert p.flush(20) == 0

                # kcat: one line per record, key and value split at ':'; kcat sends no headers
                # per line and stamps its own timestamps.
                topic = f"kcat-{codec}"
                lines = b"".join(
                    (k or b"") + b":" + (v or b"") + b"\n"
                    for k, v, _, _ in RECORDS
                    if k is not None and v is not None and b"\n" not in v
                )
                subprocess.run(
                    ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", "0", "-K", ":", "-z", codec,
                     "-X", "linger.ms=500"],
                    input=lines,
                    check=True,
                    timeout=30,
                )

            for src in ("confluent", "kcat"):
                for codec in CODECS:
                    topic = f"{src}-{codec}"
                    n = len(RECORDS) if src == "confluent" else sum(
                        1 for k, v, _, _ in RECORDS if k is not None and v is not None
                    )
                    batch = first_batch(data, topic)
                    count = struct.unpack(">i", batch[57:61])[0]
                    assert count == n, f"{topic}: first batch holds {count} of {n} records"
                    attrs = struct.unpack(">h", batch[21:23])[0]
                    if codec != "none" and attrs & 7 == 0:
                        # librdkafka infers codec support from the APIs a broker advertises:
                        # LZ4 needs FindCoordinator (and Debian's older librdkafka gates gzip and
                        # snappy the same way), which Sluice serves once consumer groups exist.
                        # Until then it sends such batches uncompressed; nothing to capture.
                        print(f"skipped {topic}: librdkafka sent it uncompressed")
                        continue
                    file = f"librdkafka_{src}_{codec}.bin"
                    (OUT / file).write_bytes(batch)
                    manifest["record_sets"][topic] = expected(consume_all(bootstrap, topic, n))
                    manifest["fixtures"].append(
                        {
                            "file": file,
                            "source": "confluent-kafka" if src == "confluent" else "kcat",
                            "codec": codec if (attrs & 7) else "none",
                            "record_set": topic,
                            "producer_id": struct.unpack(">q", batch[43:51])[0],
                            "producer_epoch": struct.unpack(">h", batch[51:53])[0],
                            "base_sequence": struct.unpack(">i", batch[53:57])[0],
                            "transactional": bool(attrs & 0x10),
                            "base_timestamp": struct.unpack(">q", batch[27:35])[0],
                            "max_timestamp": struct.unpack(">q", batch[35:43])[0],
                        }
                    )
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(manifest['fixtures'])} fixtures to {OUT}")


if __name__ == "__main__":
    main()
