#!/usr/bin/env bash
# RSS per Raft entry: one release node, a 1-partition topic, N single-record batches
# (inflight 1: one produce = one batch = one entry), RSS before/after, and after a restart.
# Needs target/release/neo-node and target/release/neo (cargo build --release). docs/CHAOS.md "Soak".
set -euo pipefail
N=${N:-300000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release}
D=/tmp/rss-node; rm -rf $D; mkdir -p $D
start() {
  $BIN/neo-node --id 1 --data-dir $D/data --listen 127.0.0.1:27301 --cluster-listen 127.0.0.1:27311 \
     --http-listen 127.0.0.1:27321 --fsync interval > $D/node.log 2>&1 &
  PID=$!
  until curl -fs http://127.0.0.1:27321/ready >/dev/null; do sleep 0.3; done
}
rss() { grep -E "VmRSS|RssAnon" /proc/$PID/status | awk '{printf "%s %s kB  ", $1, $2}'; echo; }
start
$BIN/neo --server 127.0.0.1:27301 topic create r --partitions 1 --replication 1 >/dev/null
sleep 2; echo "after create:"; rss
$BIN/neo --server 127.0.0.1:27301 bench produce --topic r --msgs $N --size 10 --inflight 1
sleep 2; echo "after $N single-record batches:"; rss
kill $PID; wait $PID || true
start; sleep 3; echo "after restart (index rebuilt by the scan):"; rss
du -sh $D/data
kill $PID; wait $PID || true
