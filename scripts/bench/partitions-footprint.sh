#!/usr/bin/env bash
# What idle partitions cost one node (issue 20: threads, RSS, open files at 0, 1 000 and
# 10 000 partitions): starts one release `neo-node` (--fsync always), then creates
# BENCH_TOPICS topics of 1 000 partitions each (replication 1) and prints the node's
# threads, VmRSS and open file descriptors (/proc/PID) after each, then once more after
# 10 s idle. Uses the release binaries already built
# (`cargo build --release -p neo-node -p neo-client`). docs/BENCHMARKS.md, "Partitions
# per node: the footprint".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
T="${CARGO_TARGET_DIR:-$ROOT/target}/release"
TOPICS="${BENCH_TOPICS:-10}"
P="${BENCH_PORT_BASE:-39950}"
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/parts.XXXX")
"$T/neo-node" --id 1 --data-dir "$W/d" --listen 127.0.0.1:$P --cluster-listen 127.0.0.1:$((P + 1)) \
    --http-listen 127.0.0.1:$((P + 2)) --fsync always --log warn >"$W/node.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W"' EXIT
sleep 3
footprint() {
    echo "$1: threads=$(awk '/^Threads/{print $2}' /proc/$PID/status)" \
        "rss_kb=$(awk '/^VmRSS/{print $2}' /proc/$PID/status) fds=$(ls /proc/$PID/fd | wc -l)"
}
footprint "0 partitions, idle"
start=$(date +%s)
for i in $(seq 1 "$TOPICS"); do
    if ! timeout 300 "$T/neo" --server 127.0.0.1:$P topic create "t$i" --partitions 1000 \
        --replication 1 >/dev/null 2>"$W/err"; then
        echo "topic $i failed after $(($(date +%s) - start)) s: $(tail -2 "$W/err")"
        break
    fi
    footprint "$((i * 1000)) partitions, $(($(date +%s) - start)) s after the first create"
done
sleep 10
footprint "after 10 s idle"
timeout 60 "$T/neo" --server 127.0.0.1:$P topic list >/dev/null && echo "topic list: ok"
