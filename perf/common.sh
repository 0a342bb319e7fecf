# Shared by perf/flamegraph.sh and perf/stat.sh (sourced, not run): builds the broker and
# sluice-bench in release mode with frame pointers into target/perf (so the normal release
# build is not invalidated), starts the broker pinned to its cores on a free port with a
# temporary data directory, and runs a named workload against it.
#
# Workloads (WORKLOAD):
#   produce        1 partition, 100-byte records, acks=1 (the produce path)
#   produce-all    16 partitions, 1 KiB records, acks=all (group-committed fdatasync)
#   fetch          consumers reading 4 partitions that were filled first (the fetch path)
#   e2e            producers and tailing consumers at full speed (mixed mode)
# Sizes: DURATION (seconds of load, default 10), BROKER_SHARDS (default 1), BENCH_CPUS
# (default: the CPU after the broker's), FILL_RECORDS (fetch workload, default 2000000),
# BATCH_BYTES (produce workloads' batch size, default 16384), SKIP_BUILD=1 (use the binaries
# already built). The broker's data directory is a temporary one under TMPDIR_BASE (default
# target/; TMPDIR_BASE=/dev/shm takes the disk out of the measurement).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORKLOAD=${WORKLOAD:-produce}
DURATION=${DURATION:-10}
BROKER_SHARDS=${BROKER_SHARDS:-1}
cores=$(nproc)
BENCH_CPUS=${BENCH_CPUS:-$(( BROKER_SHARDS < cores ? BROKER_SHARDS : 0 ))}
FILL_RECORDS=${FILL_RECORDS:-2000000}
BATCH_BYTES=${BATCH_BYTES:-16384}

# SKIP_BUILD=1 profiles the binaries already in target/perf/release.
build_with_frame_pointers() {
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        echo "perf: building release binaries with frame pointers (target/perf)"
        CARGO_TARGET_DIR=target/perf RUSTFLAGS="-C force-frame-pointers=yes" \
            cargo build --release -q -p sluice --bin sluice -p sluice-bench --bin sluice-bench
    fi
    SLUICE=$PWD/target/perf/release/sluice
    BENCH=$PWD/target/perf/release/sluice-bench
}

PERF_TMP=$(mktemp -d -p "${TMPDIR_BASE:-$PWD/target}" sluice-perf.XXXXXX)
BROKER_PID=
cleanup() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID"
        wait "$BROKER_PID" || true
    fi
    rm -rf "$PERF_TMP"
}
trap cleanup EXIT

start_broker() {
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    BOOT=127.0.0.1:$PORT
    taskset -c "0-$(( BROKER_SHARDS - 1 ))" "$SLUICE" start --data-dir "$PERF_TMP/data" \
        --listen "$BOOT" --admin-listen 127.0.0.1:0 --shards "$BROKER_SHARDS" --log-level warn \
        >"$PERF_TMP/broker.out" 2>"$PERF_TMP/broker.log" &
    BROKER_PID=$!
    for _ in $(seq 1 300); do
        grep -q ready "$PERF_TMP/broker.out" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "perf: the broker did not start:" >&2
    cat "$PERF_TMP/broker.log" >&2
    exit 1
}

bench() {
    "$BENCH" "$@" --bootstrap "$BOOT" --cpus "$BENCH_CPUS" --quiet
}

# Whatever must exist before the measured window (fills the topic for `fetch`).
prepare_workload() {
    case $WORKLOAD in
        fetch)
            echo "perf: filling 4 partitions with $FILL_RECORDS 1 KiB records"
            bench produce --topic fetch --partitions 4 --record-size 1024 --acks 1 \
                --records "$FILL_RECORDS" --duration 600 --producers 2
            ;;
        produce | produce-all | e2e) ;;
        *) echo "perf: unknown workload $WORKLOAD (produce, produce-all, fetch, e2e)" >&2; exit 2 ;;
    esac
}

# Runs the measured workload for DURATION seconds (writes its report to $1).
run_workload() {
    local json=$1
    case $WORKLOAD in
        produce)
            bench produce --topic p1 --partitions 1 --record-size 100 --acks 1 \
                --duration "$DURATION" --in-flight 8 --batch-bytes "$BATCH_BYTES" \
                --json "$json" ;;
        produce-all)
            bench produce --topic p16 --partitions 16 --record-size 1024 --acks all \
                --duration "$DURATION" --producers 2 --in-flight 8 --batch-bytes "$BATCH_BYTES" \
                --json "$json" ;;
        fetch)
            # Re-read the filled partitions until the window ends.
            local until=$(( SECONDS + DURATION ))
            while (( SECONDS < until )); do
                bench consume --topic fetch --partitions 4 --consumers 4 \
                    --duration "$(( until - SECONDS > 0 ? until - SECONDS : 1 ))" --json "$json"
            done ;;
        e2e)
            bench mixed --topic mixed --partitions 1 --record-size 100 --acks 1 \
                --duration "$DURATION" --json "$json" ;;
    esac
}
