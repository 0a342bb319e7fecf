"""Fixtures for end-to-end tests: a real `sluice` broker process on a free loopback port.

Each test that asks for `broker` gets its own broker with a fresh temporary data directory. The
broker is the binary built by `cargo build` (path from $SLUICE_BIN, else target/debug/sluice
relative to this file), started with `--dev` only if the temporary directory lacks O_DIRECT, and
stopped by PID at the end of the test: SIGTERM first, SIGKILL if it does not exit.

Every broker also gets its own admin HTTP listener on a port the kernel picks
(`--admin-listen 127.0.0.1:0`, unless the test passes `--admin-listen` itself), so brokers of
tests running side by side never collide; the bound address is read from the ready line and
offered as `Broker.admin_url`.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30
ADMIN_URL_IN_READY_LINE = re.compile(rb"admin on (http://\S+)")
# Consumer-group timings that keep the group tests fast, unless a test gives its own: no
# initial rebalance delay (Kafka waits 3 s for more members of a new group) and session
# timeouts allowed down to 1 s (Kafka's minimum is 6 s).
GROUP_ARGS = {
    "--group-initial-rebalance-delay-ms": "0",
    "--group-min-session-timeout-ms": "1000",
}


def sluice_bin() -> Path:
    explicit = os.environ.get("SLUICE_BIN")
    if explicit:
        return Path(explicit)
    return REPO / "target" / "debug" / "sluice"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A running broker process; `bootstrap` is what clients connect to."""

    def __init__(self, data_dir: Path, port: int, extra_args=()):
        self.data_dir = data_dir
        self.port = port
        self.extra_args = list(extra_args)
        self.proc = None
        # The admin listener's base URL (no trailing slash), known once the broker is ready;
        # None when the test turned the listener off.
        self.admin_url = None
        self.log_path = data_dir.parent / f"broker-{port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        args = [
            str(sluice_bin()),
            "start",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.bootstrap,
            "--log-level",
            "info",
            *self.extra_args,
        ]
        if "--admin-listen" not in self.extra_args:
            args += ["--admin-listen", "127.0.0.1:0"]
        for flag, value in GROUP_ARGS.items():
            if flag not in self.extra_args:
                args += [flag, value]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
        deadline = time.time() + READY_TIMEOUT_S
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if b"ready" in line:
                found = ADMIN_URL_IN_READY_LINE.search(line)
                self.admin_url = found.group(1).decode() if found else None
                return self
        self.stop()
        raise RuntimeError(f"broker did not become ready; log:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self):
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode if self.proc else None


@pytest.fixture
def broker():
    with tempfile.TemporaryDirectory(prefix="sluice-e2e-") as tmp:
        b = Broker(Path(tmp) / "data", free_port())
        b.start()
        try:
            yield b
        finally:
            code = b.stop()
            if code not in (0, None):
                sys.stderr.write(b.log())
