#!/usr/bin/env bash
# Produce throughput of one node over 1, 12 and 96 partitions, two node binaries
# alternating in the same run (docs/BENCHMARKS.md, "After the sync pool"): for each
# partition count and round, start a node (--fsync always), create the topic, run
# `neo bench produce` (300 000 x 100 B, 4 096 in flight, acks=all, round robin), stop.
#
#   OLD_NODE=/path/to/old/neo-node bash scripts/bench/partitions-throughput.sh
#
# Environment: OLD_NODE (required), NEW_NODE (default: the release build), PARTS
# (default "1 12 96"), ROUNDS (default "1 2 3 4"; odd rounds run old first), MSGS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
OLD=${OLD_NODE:?set OLD_NODE to the neo-node binary to compare against}
NEW=${NEW_NODE:-$REL/neo-node}
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/partsb.XXXX")
P=${BENCH_PORT_BASE:-39970}
trap 'rm -rf "$W"' EXIT
run_side() { # label, node binary, partitions
    "$2" --id 1 --data-dir "$W/$1-$3" --listen 127.0.0.1:$P --cluster-listen 127.0.0.1:$((P + 1)) \
        --http-listen 127.0.0.1:$((P + 2)) --fsync always --log warn >"$W/$1.log" 2>&1 &
    local pid=$!
    sleep 2
    "$REL/neo" --server 127.0.0.1:$P topic create b --partitions "$3" --replication 1 >/dev/null
    sleep 2
    local out
    out=$("$REL/neo" --server 127.0.0.1:$P bench produce --topic b --msgs "${MSGS:-300000}" \
        --size 100 --inflight 4096 --acks all | grep -o '"msgs_per_s":[0-9]*')
    local threads
    threads=$(awk '/^Threads/{print $2}' /proc/$pid/status)
    kill $pid
    wait $pid 2>/dev/null || true
    rm -rf "${W:?}/$1-$3"
    echo "$1 partitions=$3 $out threads_after=$threads"
}
for parts in ${PARTS:-1 12 96}; do
    for round in ${ROUNDS:-1 2 3 4}; do
        if [ $((round % 2)) = 1 ]; then
            run_side old "$OLD" "$parts"
            run_side new "$NEW" "$parts"
        else
            run_side new "$NEW" "$parts"
            run_side old "$OLD" "$parts"
        fi
    done
done
