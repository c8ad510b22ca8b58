#!/usr/bin/env bash
# Where TLS on the client port costs CPU: an OFF node and a TLS-only node side by side,
# `neo bench produce` (300 000 x 1 KiB, 4 096 in flight, acks=all) against each in turn,
# 2 rounds; prints msgs/s, the node's CPU seconds (utime+stime from /proc/PID/stat) and
# the client's (user+sys, /usr/bin/time), and both processes' minor page faults. Uses
# the release binaries already built (`cargo build --release -p neo-node -p neo-client`).
# docs/BENCHMARKS.md, "Security on vs off".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
T="${CARGO_TARGET_DIR:-$ROOT/target}/release"; W=$(mktemp -d /var/tmp/tlscpu.XXXX); P=39600
bash "$ROOT/scripts/dev-certs.sh" $W/certs >/dev/null
$T/neo-node --id 1 --data-dir $W/off --listen 127.0.0.1:$P --cluster-listen 127.0.0.1:$((P+1)) --http-listen 127.0.0.1:$((P+2)) --fsync always --log warn >$W/off.log 2>&1 & OFFPID=$!
$T/neo-node --id 1 --data-dir $W/tls --listen 127.0.0.1:$((P+3)) --cluster-listen 127.0.0.1:$((P+4)) --http-listen 127.0.0.1:$((P+5)) --fsync always --log warn --tls-cert $W/certs/node1.pem --tls-key $W/certs/node1.key >$W/tls.log 2>&1 & TLSPID=$!
sleep 2
$T/neo --server 127.0.0.1:$P topic create bench >/dev/null
$T/neo --server 127.0.0.1:$((P+3)) --tls-ca $W/certs/ca.pem topic create bench >/dev/null
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
minflt() { awk '{print $10}' /proc/$1/stat; }
tck=$(getconf CLK_TCK)
for round in 1 2; do
for side in off tls; do
  if [[ $side == off ]]; then pid=$OFFPID; args=(--server 127.0.0.1:$P); else pid=$TLSPID; args=(--server 127.0.0.1:$((P+3)) --tls-ca $W/certs/ca.pem); fi
  before=$(cpu $pid); fbefore=$(minflt $pid)
  out=$( { /usr/bin/time -f "client_cpu_s=%U+%S client_minflt=%R" $T/neo "${args[@]}" bench produce --topic bench --msgs 300000 --size 1024 --inflight 4096 --acks all; } 2>&1 )
  after=$(cpu $pid); fafter=$(minflt $pid)
  echo "$side node_cpu_s=$(echo "scale=2; ($after-$before)/$tck" | bc) node_minflt=$((fafter-fbefore)) $(echo "$out" | grep -o 'client_cpu_s=[0-9.+]*') $(echo "$out" | grep -o 'client_minflt=[0-9]*') $(echo "$out" | grep -o '"msgs_per_s":[0-9.]*')"
done; done
kill $OFFPID $TLSPID; wait 2>/dev/null || true; rm -rf $W
