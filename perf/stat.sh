#!/usr/bin/env bash
# Counts what the broker's CPUs did under a named workload:
#   perf/stat.sh [produce|produce-all|fetch|e2e]
# `perf stat -e cpu-clock,task-clock,context-switches,cpu-migrations,page-faults` on the
# broker process for the measured window, next to sluice-bench's throughput for that window,
# so "records per CPU-second" and "context switches per request" can be read off.
# Output: perf/out/stat-<workload>.txt (override with OUT=...).
set -euo pipefail
WORKLOAD=${1:-${WORKLOAD:-produce}}
export WORKLOAD
source "$(dirname "$0")/common.sh"

command -v perf >/dev/null || { echo "perf: install linux-perf (apt-get install -y linux-perf)" >&2; exit 1; }
OUT=${OUT:-perf/out/stat-$WORKLOAD.txt}
mkdir -p "$(dirname "$OUT")"

build_with_frame_pointers
start_broker
prepare_workload
perf stat -e cpu-clock,task-clock,context-switches,cpu-migrations,page-faults \
    -p "$BROKER_PID" -o "$PERF_TMP/stat.txt" -- sleep "$DURATION" &
perf_pid=$!
run_workload "$PERF_TMP/report.json"
wait "$perf_pid"
{
    cat "$PERF_TMP/stat.txt"
    python3 - "$PERF_TMP/report.json" "$PERF_TMP/stat.txt" "$DURATION" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"sluice-bench {r['mode']}: {r['records_per_sec']:.0f} records/s, {r['mb_per_sec']} MB/s, "
      f"p50 {r['latency_us']['p50']} us, p99 {r['latency_us']['p99']} us ({r['latency_kind']})")
# Per produce request, over the counted window (the load runs at least as long).
counts = {}
for line in open(sys.argv[2]):
    parts = line.split()
    try:
        value = float(parts[0].replace(",", ""))
    except (IndexError, ValueError):
        continue
    if len(parts) >= 3:
        counts[parts[2] if parts[1] == "msec" else parts[1]] = value
side = r.get("produce")
if side and side["requests"] and side["seconds"]:
    requests = side["requests"] / side["seconds"] * float(sys.argv[3])
    print(f"per produce request ({side['records'] / side['requests']:.1f} records): "
          f"{counts.get('task-clock', 0) * 1000 / requests:.1f} us of broker CPU, "
          f"{counts.get('context-switches', 0) / requests:.2f} context switches, "
          f"{counts.get('page-faults', 0) / requests:.2f} page faults")
PY
} | tee "$OUT"
