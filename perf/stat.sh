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
    python3 - "$PERF_TMP/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"sluice-bench {r['mode']}: {r['records_per_sec']:.0f} records/s, {r['mb_per_sec']} MB/s, "
      f"p50 {r['latency_us']['p50']} us, p99 {r['latency_us']['p99']} us ({r['latency_kind']})")
PY
} | tee "$OUT"
