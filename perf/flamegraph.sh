#!/usr/bin/env bash
# Records a CPU flamegraph of the broker under a named workload:
#   perf/flamegraph.sh [produce|produce-all|fetch|e2e]
# `perf record -e cpu-clock -g` samples the broker process (frame-pointer call graphs; the
# binaries are built with -C force-frame-pointers=yes) while sluice-bench drives it; inferno
# renders the SVG. Output: perf/flamegraphs/<workload>.svg (override with OUT=...), plus the
# sluice-bench report of the window next to it. Needs `perf` (Debian: apt-get install -y
# linux-perf) and inferno (installed with `cargo install inferno` when missing).
set -euo pipefail
WORKLOAD=${1:-${WORKLOAD:-produce}}
export WORKLOAD
source "$(dirname "$0")/common.sh"

command -v perf >/dev/null || { echo "perf: install linux-perf (apt-get install -y linux-perf)" >&2; exit 1; }
if ! command -v inferno-flamegraph >/dev/null; then
    echo "perf: installing inferno"
    cargo install -q inferno
fi
FREQ=${FREQ:-999}
OUT=${OUT:-perf/flamegraphs/$WORKLOAD.svg}
mkdir -p "$(dirname "$OUT")"

build_with_frame_pointers
start_broker
prepare_workload
echo "perf: recording the broker (pid $BROKER_PID) for ${DURATION}s under '$WORKLOAD'"
perf record -e cpu-clock -F "$FREQ" -g -p "$BROKER_PID" -o "$PERF_TMP/perf.data" \
    -- sleep "$(( DURATION + 1 ))" 2>"$PERF_TMP/perf-record.log" &
perf_pid=$!
run_workload "${OUT%.svg}.json"
wait "$perf_pid"
perf script -i "$PERF_TMP/perf.data" 2>/dev/null | inferno-collapse-perf >"$PERF_TMP/folded"
inferno-flamegraph --title "sluice broker: $WORKLOAD ($(git rev-parse --short HEAD 2>/dev/null))" \
    <"$PERF_TMP/folded" >"$OUT"
# The hottest functions, self (leaf) and total (anywhere on the stack), for a first reading
# without opening the SVG. `sed -n 1,Np` rather than `head -N`: head exits early, sort then
# dies of SIGPIPE, and with pipefail that ended the script before it said where it wrote.
{
    echo "self time (leaf frames)"
    awk '{n=$NF; $NF=""; k=split($0, f, ";"); leaf=f[k]; sub(/ +$/, "", leaf); s[leaf]+=n; t+=n}
         END{for (l in s) printf "%6.2f%%  %s\n", 100*s[l]/t, l}' "$PERF_TMP/folded" | sort -rn | sed -n 1,25p
    echo
    echo "total time (frames anywhere on the stack)"
    awk '{n=$NF; $NF=""; sub(/ +$/, ""); k=split($0, f, ";"); delete seen
          for (i=1; i<=k; i++) if (!(f[i] in seen)) {seen[f[i]]=1; s[f[i]]+=n}; t+=n}
         END{for (l in s) printf "%6.2f%%  %s\n", 100*s[l]/t, l}' "$PERF_TMP/folded" | sort -rn | sed -n 1,60p
} >"${OUT%.svg}.top.txt"
cp "$PERF_TMP/folded" "target/perf-$WORKLOAD.folded"
echo "perf: wrote $OUT (hottest functions in ${OUT%.svg}.top.txt)"
