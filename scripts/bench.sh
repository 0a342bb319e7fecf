#!/usr/bin/env bash
# The performance baseline: builds release binaries, measures this machine's limits (raw
# O_DIRECT write bandwidth of the data directory with and without fdatasync, loopback TCP
# bandwidth), starts the broker pinned to its cores, runs the standard workloads with
# sluice-bench, runs an independent client (confluent-kafka) for comparison, and prints every
# result as a ratio to the limit it is bounded by. JSON reports, SVG charts and a summary go to
# a results folder whose name is printed at the start and the end.
#
# Quick run (about a minute of load):   QUICK=1 scripts/bench.sh
# Full run:                             scripts/bench.sh
# Every size is an environment variable (see the defaults below), for example
#   DURATION=30 MANY_PARTITIONS=2000 RESULTS=/tmp/run1 scripts/bench.sh
# ONLY picks workloads by number (1 2 3 4 5 ref; 4 runs 1 for its maximum), for example
#   ONLY="3" QUICK=1 scripts/bench.sh
# SLUICE_GIT_REV names the revision measured when the binaries come from elsewhere (BIN_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${DURATION:=3}" "${E2E_DURATION:=3}" "${CONSUME_RECORDS:=300000}" "${DISK_MB:=256}"
else
    : "${DURATION:=15}" "${E2E_DURATION:=10}" "${CONSUME_RECORDS:=2000000}" "${DISK_MB:=1024}"
fi
MANY_PARTITIONS=${MANY_PARTITIONS:-10000}
CONFLUENT_RECORDS=${CONFLUENT_RECORDS:-1000000}
# Group-commit granularity used for the fdatasync'd disk limit.
SYNC_EVERY_KB=${SYNC_EVERY_KB:-1024}
BATCH_BYTES=${BATCH_BYTES:-16384}
IN_FLIGHT=${IN_FLIGHT:-8}
# Workload 3's "hot" run reads from the batch cache, so the broker's cache must hold what the
# fill writes (1 KiB records plus batch overhead); at least the broker's own default.
CACHE_BYTES=${CACHE_BYTES:-$(( CONSUME_RECORDS * 1100 + 256 * 1024 * 1024 ))}
ONLY=${ONLY:-1 2 3 4 5 ref}
want() { [[ " $ONLY " == *" $1 "* ]]; }

cores=$(nproc)
# By default the broker gets the first half of the cores and the load generator the rest, so
# they do not compete for a CPU (on one core they have to share it).
BROKER_SHARDS=${BROKER_SHARDS:-$(( cores / 2 > 0 ? cores / 2 : 1 ))}
if [[ -z ${BENCH_CPUS:-} ]]; then
    if (( cores > BROKER_SHARDS )); then
        BENCH_CPUS=$(seq -s, "$BROKER_SHARDS" $(( cores - 1 )))
    else
        BENCH_CPUS=0
    fi
fi
BENCH_THREADS=${BENCH_THREADS:-$(awk -F, '{print NF}' <<<"$BENCH_CPUS")}

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
RESULTS=${RESULTS:-target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)-$rev}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
DATA=${DATA_DIR:-$RESULTS/data}
echo "bench: results in $RESULTS"

# BIN_DIR=path uses binaries built elsewhere (for example from a clean checkout) instead.
if [[ -z ${BIN_DIR:-} ]]; then
    echo "bench: building release binaries"
    cargo build --release -q -p sluice --bin sluice -p sluice-bench --bin sluice-bench
    BIN_DIR=$PWD/target/release
fi
SLUICE=$BIN_DIR/sluice
BENCH=$BIN_DIR/sluice-bench
if [[ -z ${SLUICE_GIT_REV:-} ]]; then
    SLUICE_GIT_REV=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        SLUICE_GIT_REV="$SLUICE_GIT_REV-dirty"
    fi
fi
export SLUICE_GIT_REV

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=${PORT:-$(free_port)}
BOOT=127.0.0.1:$PORT

# ---- limits -------------------------------------------------------------------------------
mkdir -p "$DATA"
echo "bench: measuring limits (O_DIRECT writes of ${DISK_MB} MiB in $DATA, loopback TCP)"
"$BENCH" limits disk --dir "$DATA" --mb "$DISK_MB" --sync-every-kb "$SYNC_EVERY_KB" >"$RESULTS/limits-disk.json"
"$BENCH" limits loopback --seconds 3 >"$RESULTS/limits-loopback.json"

# ---- broker -------------------------------------------------------------------------------
BROKER_PID=
start_broker() {
    local pin=()
    if command -v taskset >/dev/null; then
        pin=(taskset -c "0-$(( BROKER_SHARDS - 1 ))")
    fi
    : >"$RESULTS/broker.out"
    # The admin listener takes a free port (printed in the ready line), so a broker already on
    # the default 9644 does not stop the benchmark.
    "${pin[@]}" "$SLUICE" start --data-dir "$DATA" --listen "$BOOT" --shards "$BROKER_SHARDS" \
        --admin-listen 127.0.0.1:0 --log-level warn --batch-cache-bytes "$CACHE_BYTES" ${BROKER_ARGS:-} >"$RESULTS/broker.out" 2>>"$RESULTS/broker.log" &
    BROKER_PID=$!
    for _ in $(seq 1 600); do
        if grep -q ready "$RESULTS/broker.out"; then return 0; fi
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "bench: the broker did not start; its log:" >&2
    cat "$RESULTS/broker.log" >&2
    exit 1
}
stop_broker() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID"
        wait "$BROKER_PID" || true
    fi
    BROKER_PID=
}
broker_memory() {
    # VmRSS now and VmHWM (peak), in bytes.
    awk '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} END{printf "{\"rss_bytes\": %d, \"peak_rss_bytes\": %d}\n", r*1024, h*1024}' \
        "/proc/$BROKER_PID/status"
}
trap stop_broker EXIT

# The sums over shards of the broker's /metrics samples named $@, in that order, on one line
# (zeros when the broker has no admin listener).
metric_sums() {
    local url
    url=$(grep -o 'admin on http://[0-9.:]*' "$RESULTS/broker.out" | tail -1 | cut -d' ' -f3)
    [[ -n $url ]] || { printf '0 %.0s' "$@"; echo; return; }
    python3 - "$url/metrics" "$@" <<'EOF'
import sys, urllib.request
names = sys.argv[2:]
sums = dict.fromkeys(names, 0.0)
for line in urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().splitlines():
    name = line.split("{", 1)[0].split(" ", 1)[0]
    if name in sums:
        sums[name] += float(line.split()[-1])
print(" ".join(str(int(sums[n])) for n in names))
EOF
}
cache_counters() { metric_sums sluice_batch_cache_hits_total sluice_batch_cache_misses_total; }

# Runs one workload; the broker's cache hits and misses during it go to cache-<name>.json.
bench() {
    local name=$1; shift
    echo "bench: $name"
    local before after
    before=$(cache_counters)
    "$BENCH" "$@" --bootstrap "$BOOT" --threads "$BENCH_THREADS" --cpus "$BENCH_CPUS" \
        --label "$name" --json "$RESULTS/$name.json" --quiet
    after=$(cache_counters)
    read -r h0 m0 <<<"$before"
    read -r h1 m1 <<<"$after"
    printf '{"batch_cache_hits": %d, "batch_cache_misses": %d}\n' $(( h1 - h0 )) $(( m1 - m0 )) \
        >"$RESULTS/cache-$name.json"
}

start_broker

# 1. One partition, 100-byte records, acks=1.
if want 1 || want 4; then
bench w1-produce-1p-100B-acks1 produce --topic w1 --partitions 1 --record-size 100 --acks 1 \
    --duration "$DURATION" --in-flight "$IN_FLIGHT" --batch-bytes "$BATCH_BYTES"

# 1b. The same with 1 MB batches, librdkafka's default batch.size (the reference client below
# uses it), so the per-request cost and the per-byte cost can be told apart.
bench w1b-produce-1p-100B-acks1-1MB-batches produce --topic w1b --partitions 1 --record-size 100 \
    --acks 1 --duration "$DURATION" --in-flight "$IN_FLIGHT" --batch-bytes 1000000
fi

# 2. 16 partitions, 1 KiB records, acks=all (group-committed fdatasync).
want 2 && bench w2-produce-16p-1KiB-acksall produce --topic w2 --partitions 16 --record-size 1024 \
    --acks all --duration "$DURATION" --producers 2 --in-flight "$IN_FLIGHT" \
    --batch-bytes "$BATCH_BYTES"

# 3. Consume from the batch cache right after producing, then from disk after a restart.
if want 3; then
bench w3-fill-4p-1KiB produce --topic w3 --partitions 4 --record-size 1024 --acks 1 \
    --records "$CONSUME_RECORDS" --duration 600 --producers 2 --in-flight "$IN_FLIGHT"
bench w3-consume-hot consume --topic w3 --partitions 4 --consumers 4 --duration 600
stop_broker
start_broker
bench w3-consume-cold consume --topic w3 --partitions 4 --consumers 4 --duration 600
fi

# 4. End-to-end latency at fixed rates of 10%, 50% and 80% of workload 1's maximum.
if want 4; then
max_rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["records_per_sec"])' \
    "$RESULTS/w1-produce-1p-100B-acks1.json")
for pct in 10 50 80; do
    rate=$(python3 -c "print(max(1.0, $max_rate * $pct / 100))")
    bench "w4-e2e-${pct}pct" e2e --topic "w4-$pct" --partitions 1 --record-size 100 --acks 1 \
        --rate "$rate" --duration "$E2E_DURATION" --in-flight "$IN_FLIGHT" \
        --batch-bytes "$BATCH_BYTES"
done
fi

# 5. Many partitions: throughput and broker memory, on a fresh broker so that the memory is
# this workload's (the batch cache holds what was produced since the start, up to its budget).
if want 5; then
stop_broker
start_broker
bench "w5-produce-${MANY_PARTITIONS}p-100B-acks1" produce --topic w5 \
    --partitions "$MANY_PARTITIONS" --record-size 100 --acks 1 --duration "$DURATION" \
    --producers 4 --partitions-per-request 100 --batch-records 16 --in-flight "$IN_FLIGHT"
broker_memory >"$RESULTS/broker-memory-w5.json"
printf '{"batch_cache_bytes": %d}\n' "$(metric_sums sluice_batch_cache_bytes)" \
    >"$RESULTS/broker-cache-bytes-w5.json"
fi

# An independent client, so our load generator is not the only judge: confluent-kafka
# (librdkafka) produces and then consumes CONFLUENT_RECORDS 100-byte records.
if want ref; then
echo "bench: confluent-kafka reference producer and consumer ($CONFLUENT_RECORDS records)"
python3 - "$BOOT" "$CONFLUENT_RECORDS" >"$RESULTS/confluent-kafka.json" <<'EOF'
import json, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

boot, n = sys.argv[1], int(sys.argv[2])
topic = "ref-confluent"
admin = AdminClient({"bootstrap.servers": boot})  # must outlive the future it returns
admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
value = b"x" * 100
p = Producer({"bootstrap.servers": boot, "acks": 1, "linger.ms": 5,
              "queue.buffering.max.messages": 1000000})
t0 = time.perf_counter()
for _ in range(n):
    while True:
        try:
            p.produce(topic, value)
            break
        except BufferError:
            p.poll(0.001)
left = p.flush(120)
produce_s = time.perf_counter() - t0
c = Consumer({"bootstrap.servers": boot, "group.id": "ref-confluent", "enable.auto.commit": False,
              "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 1048576})
c.assign([TopicPartition(topic, 0, 0)])
got, t0 = 0, time.perf_counter()
while got < n and time.perf_counter() - t0 < 120:
    for m in c.consume(10000, timeout=1.0):
        if m.error() is None:
            got += 1
consume_s = time.perf_counter() - t0
c.close()
print(json.dumps({"client": "confluent-kafka", "records": n, "record_size": 100,
                  "unflushed": left,
                  "produce_records_per_sec": round(n / produce_s),
                  "produce_mb_per_sec": round(n * 100 / produce_s / 1e6, 3),
                  "consumed": got,
                  "consume_records_per_sec": round(got / consume_s),
                  "consume_mb_per_sec": round(got * 100 / consume_s / 1e6, 3)}, indent=2))
EOF
fi
stop_broker

# ---- charts and summary -------------------------------------------------------------------
plot() {
    local out=$1 title=$2; shift 2
    local files=()
    for f in "$@"; do [[ -e $f ]] && files+=("$f"); done
    if (( ${#files[@]} )); then
        "$BENCH" plot "${files[@]}" --out "$RESULTS/$out" --title "$title"
    fi
}
plot e2e-latency.svg "end-to-end latency at fixed rates (10/50/80% of max)" "$RESULTS"/w4-e2e-*.json
plot produce.svg "produce: acknowledgement latency and throughput" \
    "$RESULTS"/w1-*.json "$RESULTS"/w1b-*.json "$RESULTS"/w2-*.json "$RESULTS"/w5-*.json
plot consume.svg "consume: hot (batch cache) and cold (after restart)" "$RESULTS"/w3-consume-*.json

python3 - "$RESULTS" <<'EOF' | tee "$RESULTS/summary.txt"
import glob, json, os, sys

r = sys.argv[1]
def one(pattern):
    """The report matching `pattern`, or None when that workload was not run (ONLY)."""
    found = sorted(glob.glob(os.path.join(r, pattern)))
    return json.load(open(found[0])) if found else None
disk, loop = one("limits-disk.json"), one("limits-loopback.json")
w1, w1b, w2 = one("w1-*.json"), one("w1b-*.json"), one("w2-*.json")
hot, cold = one("w3-consume-hot.json"), one("w3-consume-cold.json")
w5, mem = one("w5-produce-*.json"), one("broker-memory-w5.json")
ref = one("confluent-kafka.json")
e2e = {p: one(f"w4-e2e-{p}pct.json") for p in (10, 50, 80)}
any_run = next(x for x in (w1, w2, hot, w5, *e2e.values()) if x is not None)

MB = 1e6
d_raw, d_sync, lo = disk["direct_write_bytes_per_sec"], disk["direct_fdatasync_write_bytes_per_sec"], loop["bytes_per_sec"]
d_read = disk.get("direct_read_bytes_per_sec", 0.0)
rows, goals = [], []
def ratio(name, value_bps, limit_bps, limit_name, goal, extra=""):
    x = value_bps / limit_bps if limit_bps else 0.0
    rows.append(f"{name:<44} {value_bps/MB:9.1f} MB/s = {x:5.2f} x {limit_name} ({limit_bps/MB:.0f} MB/s)   goal >= {goal}: {'met' if x >= goal else 'MISSED'}{extra}")
    goals.append({"workload": name, "value_bytes_per_sec": value_bps, "limit": limit_name,
                  "limit_bytes_per_sec": limit_bps, "ratio": round(x, 3), "goal": goal, "met": x >= goal})

m = any_run["machine"]
print(f"machine: {m['cpu_model']}, {m['cores']} cores, "
      f"{m['memory_bytes']/2**30:.1f} GiB, kernel {m['kernel']}; rev {any_run['git_revision']}")
print(f"limits: O_DIRECT write {d_raw/MB:.0f} MB/s, with fdatasync every {disk['sync_every_bytes']//1024} KiB "
      f"{d_sync/MB:.0f} MB/s, O_DIRECT read {d_read/MB:.0f} MB/s, loopback TCP {lo/MB:.0f} MB/s")
print()
if w1:
    ratio(f"1. produce 1p 100B acks=1 ({w1['records_per_sec']:.0f} rec/s)", w1["bytes_per_sec"], min(d_raw, lo), "min(disk, loopback)", 0.8)
if w1b:
    ratio(f"1b. same, 1 MB batches ({w1b['records_per_sec']:.0f} rec/s)", w1b["bytes_per_sec"], min(d_raw, lo), "min(disk, loopback)", 0.8)
if w2:
    ratio(f"2. produce 16p 1KiB acks=all ({w2['records_per_sec']:.0f} rec/s)", w2["bytes_per_sec"], d_sync, "fdatasync'd disk", 0.6)
def hit_ratio(name):
    c = one(f"cache-{name}.json") or {}
    n = c.get("batch_cache_hits", 0) + c.get("batch_cache_misses", 0)
    return f"; batch-cache hits {c['batch_cache_hits'] / n:.0%}" if n else ""
if hot:
    ratio(f"3. consume hot ({hot['records_per_sec']:.0f} rec/s)", hot["bytes_per_sec"], lo, "loopback", 0.8,
          hit_ratio("w3-consume-hot"))
if cold:
    ratio(f"3. consume cold ({cold['records_per_sec']:.0f} rec/s)", cold["bytes_per_sec"], lo, "loopback", 0.8,
          f"; {cold['bytes_per_sec'] / min(d_read, lo):.2f} x min(disk read, loopback)" if d_read else "")
print("\n".join(rows))
for p, rep in e2e.items():
    if rep is None:
        continue
    l = rep["latency_us"]
    ok = (l["p99"] < 2000 and l["p999"] < 10000) if p == 50 else None
    line = (f"4. e2e at {p}% of max ({rep['parameters']['rate']:.0f} rec/s): p50 {l['p50']} us, p99 {l['p99']} us, "
            f"p99.9 {l['p999']} us, max {l['max']} us")
    if ok is not None:
        line += f"   goal p99 < 2000 and p99.9 < 10000: {'met' if ok else 'MISSED'}"
        goals.append({"workload": "e2e at 50%", "p99_us": l["p99"], "p999_us": l["p999"], "met": ok})
    print(line)
if w5 and mem:
    x5 = w5["records_per_sec"] / w1["records_per_sec"] if w1 and w1["records_per_sec"] else 0.0
    rss = mem["peak_rss_bytes"]
    cached = (one("broker-cache-bytes-w5.json") or {}).get("batch_cache_bytes", 0)
    vs_one = (f"= {x5:.2f} x one partition (goal >= 0.7: {'met' if x5 >= 0.7 else 'MISSED'})" if w1
              else "(workload 1 not run: no ratio)")
    print(f"5. {w5['broker']['partitions']} partitions: {w5['records_per_sec']:.0f} rec/s {vs_one}; broker peak RSS {rss/2**20:.0f} MiB "
          f"(goal < 1024 MiB: {'met' if rss < 2**30 else 'MISSED'}), of which batch cache {cached/2**20:.0f} MiB at the end")
    goals.append({"workload": "many partitions", "ratio_to_one_partition": round(x5, 3) if w1 else None,
                  "met": x5 >= 0.7 if w1 else None,
                  "peak_rss_bytes": rss, "rss_met": rss < 2**30})
if ref:
    line = (f"independent client: confluent-kafka produced {ref['records']} x 100 B at {ref['produce_records_per_sec']} rec/s "
            f"({ref['produce_mb_per_sec']} MB/s payload) and consumed at {ref['consume_records_per_sec']} rec/s")
    if w1 and w1b:
        line += (f"; sluice-bench workload 1: {w1['records_per_sec']:.0f} rec/s ({w1['payload_mb_per_sec']} MB/s payload), "
                 f"1b: {w1b['records_per_sec']:.0f} rec/s ({w1b['payload_mb_per_sec']} MB/s payload)")
    print(line)
errors = {os.path.basename(f): json.load(open(f)).get("errors", 0) for f in glob.glob(os.path.join(r, "w*-*.json"))}
bad = {k: v for k, v in errors.items() if v}
if bad:
    print(f"errors reported by runs: {bad}")
json.dump({"limits": {"disk": disk, "loopback": loop}, "goals": goals, "confluent_kafka": ref,
           "errors": bad}, open(os.path.join(r, "summary.json"), "w"), indent=2)
EOF
# The broker's data is only a by-product (gigabytes in a full run); KEEP_DATA=1 keeps it.
if [[ -z ${DATA_DIR:-} && ${KEEP_DATA:-0} != 1 ]]; then
    rm -rf "$DATA"
fi
echo "bench: results in $RESULTS (summary.txt, summary.json, *.json reports, *.svg charts)"
