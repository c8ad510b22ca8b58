#!/usr/bin/env bash
# Produce throughput with security on against off (issue 19: goal at least 0.8x), on
# loopback, one node each, `--fsync always`, acks=all. Method and recorded runs:
# docs/BENCHMARKS.md, "Security on vs off".
#
#   scripts/bench-security.sh          # builds neo and neo-node (release) first
#
# Two nodes run side by side for the whole run: OFF (no security, plaintext) and ON
# (TLS on the client port, `--auth jwt`, RBAC: the producer is `bencher`, allowed
# `produce,describe` on `topic:bench*` by a role, not a superuser). Each pair runs
# `neo bench produce` against one then the other (the order alternates), so both sides
# see the same machine; the ratio of a pair is ON / OFF msgs/s, and the script prints
# every run and the median ratio.
#
# Environment (all optional):
#   CARGO_TARGET_DIR    where the release binaries are built (default: <repo>/target)
#   BENCH_SKIP_BUILD=1  use the binaries already built
#   BENCH_PAIRS         pairs of runs (default 5)
#   BENCH_MSGS          messages per run (default 1000000)
#   BENCH_SIZE          value bytes (default 1024)
#   BENCH_INFLIGHT      messages in flight (default 4096)
#   BENCH_PORT_BASE     first of 6 loopback ports (default 39400)
#   BENCH_DIR           parent of the data directories (default /var/tmp: a real disk)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PAIRS="${BENCH_PAIRS:-5}"
MSGS="${BENCH_MSGS:-1000000}"
SIZE="${BENCH_SIZE:-1024}"
INFLIGHT="${BENCH_INFLIGHT:-4096}"
PORT="${BENCH_PORT_BASE:-39400}"
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/neo-bench-security.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
  (cd "$ROOT" && cargo build --release -p neo-node -p neo-client)
fi
NODE="$TARGET/release/neo-node"
NEO="$TARGET/release/neo"

bash "$ROOT/scripts/dev-certs.sh" "$WORK/certs" >/dev/null
C="$WORK/certs"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
token_for() {
  local now header payload secret signature
  now=$(date +%s)
  header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
  payload=$(printf '{"sub":"%s","iss":"neo-dev","exp":%d}' "$1" $((now + 86400)) | b64url)
  secret=$(tr -d '\n' <"$C/jwt.secret")
  signature=$(printf '%s.%s' "$header" "$payload" |
    openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)
  printf '%s.%s.%s' "$header" "$payload" "$signature"
}

start() { # name port-offset extra-flags...
  local name=$1 off=$2
  shift 2
  "$NODE" --id 1 --data-dir "$WORK/$name" --listen "127.0.0.1:$((PORT + off))" \
    --cluster-listen "127.0.0.1:$((PORT + off + 1))" --http-listen "127.0.0.1:$((PORT + off + 2))" \
    --fsync always --log warn "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
start off 0
start on 3 --auth jwt --jwt-hs256-secret-file "$C/jwt.secret" --jwt-issuer neo-dev \
  --superuser admin --tls-cert "$C/node1.pem" --tls-key "$C/node1.key"

OFF=(--server "127.0.0.1:$PORT")
ON=(--server "127.0.0.1:$((PORT + 3))" --tls-ca "$C/ca.pem")
ADMIN=(--token "$(token_for admin)")
BENCHER=(--token "$(token_for bencher)")
for i in $(seq 1 50); do
  "$NEO" "${OFF[@]}" cluster status >/dev/null 2>&1 &&
    "$NEO" "${ON[@]}" "${ADMIN[@]}" cluster status >/dev/null 2>&1 && break
  sleep 0.2
done
"$NEO" "${OFF[@]}" topic create bench --partitions 1 --replication 1 >/dev/null
"$NEO" "${ON[@]}" "${ADMIN[@]}" topic create bench --partitions 1 --replication 1 >/dev/null
"$NEO" "${ON[@]}" "${ADMIN[@]}" role create producer >/dev/null
"$NEO" "${ON[@]}" "${ADMIN[@]}" role grant producer --resource 'topic:bench*' \
  --operations produce,describe >/dev/null
"$NEO" "${ON[@]}" "${ADMIN[@]}" role assign producer --principal bencher >/dev/null

run() { # side
  local args
  if [[ $1 == off ]]; then args=("${OFF[@]}"); else args=("${ON[@]}" "${BENCHER[@]}"); fi
  "$NEO" "${args[@]}" bench produce --topic bench --msgs "$MSGS" --size "$SIZE" \
    --inflight "$INFLIGHT" --acks all
}

RESULTS="$WORK/results"
for pair in $(seq 1 "$PAIRS"); do
  if ((pair % 2)); then order="off on"; else order="on off"; fi
  for side in $order; do
    line=$(run "$side")
    echo "pair $pair $side $line"
    echo "$pair $side $line" >>"$RESULTS"
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    pair, side, rest = line.split(" ", 2)
    runs.setdefault(pair, {})[side] = json.loads(rest)["msgs_per_s"]
ratios = [r["on"] / r["off"] for r in runs.values() if "on" in r and "off" in r]
print(json.dumps({
    "pairs": len(ratios),
    "off_msgs_per_s_median": round(statistics.median(r["off"] for r in runs.values())),
    "on_msgs_per_s_median": round(statistics.median(r["on"] for r in runs.values())),
    "ratios": [round(x, 2) for x in ratios],
    "ratio_median": round(statistics.median(ratios), 2),
}))
PY
