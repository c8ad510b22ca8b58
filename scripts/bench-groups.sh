#!/usr/bin/env bash
# Consumer-group benchmarks (issue 17) in one run, on loopback, `neo-node --fsync always`
# (the default): a 3-node cluster, then a single node. Prints every JSON line with its
# label, and stops every process it started. Method and recorded runs:
# docs/BENCHMARKS.md, "Consumer groups".
#
#   scripts/bench-groups.sh             # builds neo and neo-node (release) first
#
# On each setup (N = 3 or 1 nodes, replication N):
#   - 3 nodes only: `neo bench produce` of 100 B records into a 12-partition topic until
#     it holds each of BENCH_CONSUME_MSGS, and after each BENCH_CONSUME_RUNS x `neo bench
#     consume --group G --consumers 4` (4 group members vs 4 plain consumers reading the
#     whole topic, a new group each run);
#   - BENCH_COMMIT_RUNS x `neo bench commit --consumers 64` on a 64-partition topic
#     (commits vs single-record produce batches, a new group each run);
#   - `neo bench rebalance --members 10` on a 12-partition topic: clean leaves (after a
#     pause of one heartbeat interval, then back to back: --pause-ms 0), then kills
#     with a 3 s session;
#   - before the commit bench, the disk's raw fdatasync rate with 1 and 64 writers
#     (100 B write + fdatasync loops on their own files in BENCH_DIR, 3 s each; python3).
#
# Environment (all optional):
#   CARGO_TARGET_DIR      where the release binaries are built (default: <repo>/target)
#   BENCH_SKIP_BUILD=1    use the binaries already built
#   BENCH_SETUPS          which setups, in order (default: "3 1")
#   BENCH_ONLY            which benches (default: "consume commit rebalance")
#   BENCH_CONSUME_MSGS    topic sizes of the consume comparisons, ascending (default
#                         "1000000 5000000")
#   BENCH_CONSUME_RUNS    consume comparisons per size (default 3)
#   BENCH_COMMIT_MS       duration of the commit phase and of its baseline (default 10000)
#   BENCH_COMMIT_RUNS     commit benches per setup (default 3)
#   BENCH_ROUNDS          rebalance rounds (default 20)
#   BENCH_KILL_SESSION_MS session timeout of the --kill rounds (default 3000)
#   BENCH_PORT_BASE       first of the loopback ports used (default 39000; 30 ports)
#   BENCH_DIR             parent of the data directories (default /var/tmp: a real disk,
#                         not tmpfs, or fsync costs nothing)
#   BENCH_KEEP=1          keep the data directories and logs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SETUPS="${BENCH_SETUPS:-3 1}"
ONLY=" ${BENCH_ONLY:-consume commit rebalance} "
CONSUME_MSGS="${BENCH_CONSUME_MSGS:-1000000 5000000}"
CONSUME_RUNS="${BENCH_CONSUME_RUNS:-3}"
COMMIT_MS="${BENCH_COMMIT_MS:-10000}"
COMMIT_RUNS="${BENCH_COMMIT_RUNS:-3}"
ROUNDS="${BENCH_ROUNDS:-20}"
KILL_SESSION_MS="${BENCH_KILL_SESSION_MS:-3000}"
PORT="${BENCH_PORT_BASE:-39000}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
STEP_TIMEOUT=900 # seconds any one bench command may take

log() { printf '[bench-groups %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

WORK=""
PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    local rc=$?
    stop_all
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "${BENCH_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
            log "data and logs kept in $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building neo-node and neo (release) in $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet \
        --bin neo-node --bin neo) >&2
fi
NEO_NODE="$TARGET/release/neo-node"
NEO="$TARGET/release/neo"
for b in "$NEO_NODE" "$NEO"; do [[ -x "$b" ]] || die "missing $b"; done

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $(seq $((PORT + 1)) $((PORT + 29))); do
    port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
done

mkdir -p "$BENCH_DIR"
WORK="$(mktemp -d "$BENCH_DIR/neo-bench-groups.XXXXXX")"

check_alive() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a node exited early (logs in $WORK)"
    done
}

# start_neo N: N nodes (node i: client PORT+i, cluster PORT+10+i, http PORT+20+i).
start_neo() {
    local n=$1 peers="" i
    for i in $(seq "$n"); do peers+="${peers:+,}$i=127.0.0.1:$((PORT + 10 + i))"; done
    for i in $(seq "$n"); do
        mkdir -p "$WORK/neo$n-$i"
        "$NEO_NODE" --id "$i" --data-dir "$WORK/neo$n-$i/data" \
            --listen "127.0.0.1:$((PORT + i))" \
            --cluster-listen "127.0.0.1:$((PORT + 10 + i))" \
            --http-listen "127.0.0.1:$((PORT + 20 + i))" \
            --peers "$peers" --fsync always --log warn \
            >"$WORK/neo$n-$i/log" 2>&1 &
        PIDS+=($!)
    done
    SERVERS=""
    for i in $(seq "$n"); do SERVERS+="${SERVERS:+,}127.0.0.1:$((PORT + i))"; done
}

# topic NAME PARTITIONS REPLICATION: create, retrying while the cluster forms.
topic() {
    local t0=$SECONDS
    until "$NEO" --server "$SERVERS" topic create "$1" --partitions "$2" \
        --replication "$3" >>"$WORK/admin.log" 2>&1; do
        check_alive
        ((SECONDS - t0 < 60)) || die "cannot create topic $1 (see $WORK/admin.log)"
        sleep 0.5
    done
}

# run LABEL ARGS...: one bench command; prints "LABEL<TAB>JSON" on stdout.
run() {
    local label=$1 out
    shift
    log "$label: neo bench $*"
    if out="$(timeout "$STEP_TIMEOUT" "$NEO" --server "$SERVERS" bench "$@" 2>"$WORK/bench.err")"; then
        printf '%s\t%s\n' "$label" "$out"
        [[ -s "$WORK/bench.err" ]] && sed "s/^/[$label] /" "$WORK/bench.err" >&2
    else
        printf '%s\tFAILED: %s\n' "$label" "$(tail -1 "$WORK/bench.err")"
    fi
    return 0
}

# fsync_rate WRITERS: fdatasyncs per second of WRITERS threads, each appending 100 B
# and fdatasync-ing its own file in $WORK for 3 s (os.fdatasync releases the GIL).
fsync_rate() {
    python3 - "$WORK" "$1" <<'EOF'
import os, sys, threading, time
d, n = sys.argv[1], int(sys.argv[2])
counts = [0] * n
stop = time.monotonic() + 3
def run(i):
    path = os.path.join(d, f"fsync-{i}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    while time.monotonic() < stop:
        os.write(fd, b"x" * 100)
        os.fdatasync(fd)
        counts[i] += 1
    os.close(fd)
    os.unlink(path)
threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print('{"writers":%d,"fsyncs_per_s":%.0f}' % (n, sum(counts) / 3))
EOF
}

log "data in $WORK; load average $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
for n in $SETUPS; do
    setup="${n}n"
    start_neo "$n"
    if ((n == 3)) && [[ $ONLY == *" consume "* ]]; then
        topic c12 12 3
        held=0
        for size in $CONSUME_MSGS; do
            run "$setup produce c12 +$((size - held))" produce --topic c12 \
                --msgs "$((size - held))" --size 100 --inflight 4096 --acks all
            held=$size
            for i in $(seq "$CONSUME_RUNS"); do
                run "$setup consume $size --group run $i" consume --topic c12 \
                    --group "bench-consume-$size-$i" --consumers 4
            done
        done
    fi
    if [[ $ONLY == *" commit "* ]]; then
        topic k64 64 "$n"
        for w in 1 64; do printf '%s\t%s\n' "$setup raw fdatasync" "$(fsync_rate "$w")"; done
        for i in $(seq "$COMMIT_RUNS"); do
            run "$setup commit run $i" commit --topic k64 --group "bench-commit-$i" \
                --consumers 64 --duration-ms "$COMMIT_MS"
        done
    fi
    if [[ $ONLY == *" rebalance "* ]]; then
        topic r12 12 "$n"
        run "$setup rebalance leave" rebalance --topic r12 --group bench-leave --members 10 \
            --rounds "$ROUNDS"
        run "$setup rebalance leave, back to back" rebalance --topic r12 --group bench-leave0 \
            --members 10 --rounds "$ROUNDS" --pause-ms 0
        run "$setup rebalance kill" rebalance --topic r12 --group bench-kill --members 10 \
            --rounds "$ROUNDS" --kill --session-timeout-ms "$KILL_SESSION_MS"
    fi
    stop_all
done
log "done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
