#!/usr/bin/env bash
# A slow disk on one replica (issue 22): produce latency of a 3-node cluster (loopback,
# --fsync always, acks=all) with every disk healthy, and with node 3's partition-log
# fdatasyncs delayed by SLOW_MS (a storage failpoint), in alternating rounds of the same
# run (docs/BENCHMARKS.md, "A slow disk on one replica"). The topic has 1 partition (group
# 1, the only partition group); each line names its leader, so that rounds where the slow
# node leads (a slow leader, a different case) can be told apart.
#
#   bash scripts/bench/slow-disk.sh
#
# Needs a release build with fault injection, in its own target folder (so that the
# normal release binary never has it):
#   cargo build --release -p neo-node -p neo-client --features neo-node/failpoints \
#       --target-dir target/failpoints
# Environment: SLOW_MS (default 200), ROUNDS (default "1 2 3 4"), MSGS (default 20000),
# BIN (default target/failpoints/release).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN=${BIN:-$ROOT/target/failpoints/release}
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/slowdisk.XXXX")
P=${BENCH_PORT_BASE:-39800}
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
peers="1=127.0.0.1:$((P + 1)),2=127.0.0.1:$((P + 11)),3=127.0.0.1:$((P + 21))"
servers="127.0.0.1:$P,127.0.0.1:$((P + 10)),127.0.0.1:$((P + 20))"

start() { # slow_ms (0: healthy)
    PIDS=()
    for id in 1 2 3; do
        local b=$((P + (id - 1) * 10)) fp=""
        if [ "$id" = 3 ] && [ "$1" != 0 ]; then fp="segment.sync=delay=$1,path=/groups/1/"; fi
        NEO_FAILPOINTS="$fp" "$BIN/neo-node" --id $id --data-dir "$W/n$id" --listen 127.0.0.1:$b \
            --cluster-listen 127.0.0.1:$((b + 1)) --http-listen 127.0.0.1:$((b + 2)) \
            --peers "$peers" --fsync always --log warn >"$W/n$id.log" 2>&1 &
        PIDS+=($!)
    done
    for id in 1 2 3; do
        for _ in $(seq 100); do
            curl -fs "127.0.0.1:$((P + (id - 1) * 10 + 2))/ready" >/dev/null && break
            sleep 0.2
        done
    done
    "$BIN/neo" --server "$servers" topic create b --partitions 1 --replication 3 >/dev/null
    sleep 3
}

stop() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "${W:?}"/n*
}

run() { # label slow_ms
    start "$2"
    local leader
    leader=$(curl -fs "127.0.0.1:$((P + 2))/v1/cluster" | grep -o '"leader":[0-9]*' | head -1)
    local out
    out=$("$BIN/neo" --server "$servers" bench produce --topic b --msgs "${MSGS:-20000}" \
        --size 100 --inflight 64 --acks all |
        grep -o '"msgs_per_s":[0-9.]*\|"p50_us":[0-9]*\|"p99_us":[0-9]*' | tr '\n' ' ')
    echo "$1 slow_ms=$2 $leader $out"
    stop
}

for round in ${ROUNDS:-1 2 3 4}; do
    if [ $((round % 2)) = 1 ]; then
        run healthy 0
        run slow "${SLOW_MS:-200}"
    else
        run slow "${SLOW_MS:-200}"
        run healthy 0
    fi
done
