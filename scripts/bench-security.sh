#!/usr/bin/env bash
# Produce throughput with security on against off (issue 19: goal at least 0.8x), on
# loopback, one node each, `--fsync always`, acks=all, split into TLS alone and
# JWT + RBAC alone, plus a topic encrypted at rest against a plain one on the same node.
# Method and recorded runs: docs/BENCHMARKS.md, "Security on vs off".
#
#   scripts/bench-security.sh          # builds neo and neo-node (release) first
#
# Four nodes run side by side for the whole run: OFF (no security, plaintext), TLS (TLS
# on the client port only), JWT (`--auth jwt` + RBAC, plaintext) and ON (both: TLS,
# `--auth jwt`, RBAC). Under RBAC the producer is `bencher`, allowed `produce,describe`
# on `topic:bench*` by a role, not a superuser. The OFF node also has an at-rest key and
# a second topic `bench-enc` created with `--encrypt-at-rest` (side ATREST). Each round
# runs `neo bench produce` once per side, the order rotating from round to round, so all
# sides see the same machine; the ratio of a side in a round is its msgs/s over OFF's,
# and the script prints every run and the median ratio of each side.
#
# Environment (all optional):
#   CARGO_TARGET_DIR    where the release binaries are built (default: <repo>/target)
#   BENCH_SKIP_BUILD=1  use the binaries already built
#   BENCH_PAIRS         rounds (one run per side each; default 5)
#   BENCH_MSGS          messages per run (default 1000000)
#   BENCH_SIZE          value bytes (default 1024)
#   BENCH_INFLIGHT      messages in flight (default 4096)
#   BENCH_PORT_BASE     first of 12 loopback ports (default 39400)
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
openssl rand -hex 32 >"$WORK/at-rest.key"
JWT_FLAGS=(--auth jwt --jwt-hs256-secret-file "$C/jwt.secret" --jwt-issuer neo-dev --superuser admin)
TLS_FLAGS=(--tls-cert "$C/node1.pem" --tls-key "$C/node1.key")
start off 0 --at-rest-key-file "$WORK/at-rest.key"
start tls 3 "${TLS_FLAGS[@]}"
start jwt 6 "${JWT_FLAGS[@]}"
start on 9 "${JWT_FLAGS[@]}" "${TLS_FLAGS[@]}"

OFF=(--server "127.0.0.1:$PORT")
TLS=(--server "127.0.0.1:$((PORT + 3))" --tls-ca "$C/ca.pem")
JWT=(--server "127.0.0.1:$((PORT + 6))")
ON=(--server "127.0.0.1:$((PORT + 9))" --tls-ca "$C/ca.pem")
ADMIN=(--token "$(token_for admin)")
BENCHER=(--token "$(token_for bencher)")
for i in $(seq 1 50); do
  "$NEO" "${OFF[@]}" cluster status >/dev/null 2>&1 &&
    "$NEO" "${TLS[@]}" cluster status >/dev/null 2>&1 &&
    "$NEO" "${JWT[@]}" "${ADMIN[@]}" cluster status >/dev/null 2>&1 &&
    "$NEO" "${ON[@]}" "${ADMIN[@]}" cluster status >/dev/null 2>&1 && break
  sleep 0.2
done
"$NEO" "${OFF[@]}" topic create bench --partitions 1 --replication 1 >/dev/null
"$NEO" "${OFF[@]}" topic create bench-enc --partitions 1 --replication 1 --encrypt-at-rest >/dev/null
"$NEO" "${TLS[@]}" topic create bench --partitions 1 --replication 1 >/dev/null
for side in JWT ON; do
  declare -n S=$side
  "$NEO" "${S[@]}" "${ADMIN[@]}" topic create bench --partitions 1 --replication 1 >/dev/null
  "$NEO" "${S[@]}" "${ADMIN[@]}" role create producer >/dev/null
  "$NEO" "${S[@]}" "${ADMIN[@]}" role grant producer --resource 'topic:bench*' \
    --operations produce,describe >/dev/null
  "$NEO" "${S[@]}" "${ADMIN[@]}" role assign producer --principal bencher >/dev/null
  unset -n S
done

run() { # side
  local args topic=bench
  case $1 in
  off) args=("${OFF[@]}") ;;
  atrest) args=("${OFF[@]}") topic=bench-enc ;;
  tls) args=("${TLS[@]}") ;;
  jwt) args=("${JWT[@]}" "${BENCHER[@]}") ;;
  on) args=("${ON[@]}" "${BENCHER[@]}") ;;
  esac
  "$NEO" "${args[@]}" bench produce --topic "$topic" --msgs "$MSGS" --size "$SIZE" \
    --inflight "$INFLIGHT" --acks all
}

RESULTS="$WORK/results"
SIDES=(off tls jwt on atrest)
for pair in $(seq 1 "$PAIRS"); do
  # Rotate the order: each side runs first, second, ... in turn.
  shift_by=$(((pair - 1) % ${#SIDES[@]}))
  order=("${SIDES[@]:shift_by}" "${SIDES[@]:0:shift_by}")
  for side in "${order[@]}"; do
    line=$(run "$side")
    echo "round $pair $side $line"
    echo "$pair $side $line" >>"$RESULTS"
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    pair, side, rest = line.split(" ", 2)
    runs.setdefault(pair, {})[side] = json.loads(rest)["msgs_per_s"]
out = {"rounds": len(runs),
       "off_msgs_per_s_median": round(statistics.median(r["off"] for r in runs.values()))}
for side in ["tls", "jwt", "on", "atrest"]:
    ratios = [r[side] / r["off"] for r in runs.values() if side in r and "off" in r]
    out[side] = {
        "msgs_per_s_median": round(statistics.median(r[side] for r in runs.values())),
        "ratios": [round(x, 2) for x in ratios],
        "ratio_median": round(statistics.median(ratios), 2),
    }
print(json.dumps(out))
PY
