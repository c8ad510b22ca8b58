#!/usr/bin/env bash
# A normal client's produce latency alone, and during a flood (issue 22, "Floods and
# slow clients"): N idle connections held open (they answer the node's heartbeats, as
# a live idle client does) plus one process opening and closing connections as fast as
# it can. One node, `--fsync always`, loopback. Method and recorded runs:
# docs/BENCHMARKS.md, "Floods and slow clients".
#
#   scripts/bench/floods.sh            # builds neo and neo-node first
#
# Each round runs `neo bench produce --inflight 1` (one message at a time: every
# message's latency is a full produce round trip with acks=all) alone, then again during
# the flood; the script prints every run, the p99 ratio of each round and the median
# ratio, and the node's RSS with 0 and with N idle connections.
#
# Environment (all optional):
#   CARGO_TARGET_DIR       where the binaries are built (default: <repo>/target)
#   BENCH_PROFILE          release (default) or debug
#   BENCH_SKIP_BUILD=1     use the binaries already built
#   BENCH_IDLE             idle connections of the flood (default 9000)
#   BENCH_CONNECTIONS_MAX  the node's --connections-max (default 10000)
#   BENCH_ROUNDS           rounds (default 3)
#   BENCH_MSGS             messages per run (default 3000)
#   BENCH_SIZE             value bytes (default 1024)
#   BENCH_PORT_BASE        first of 3 loopback ports (default 29600, below the ephemeral range the storm uses)
#   BENCH_DIR              parent of the data directory (default /var/tmp: a real disk)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${BENCH_PROFILE:-release}"
IDLE="${BENCH_IDLE:-9000}"
CONN_MAX="${BENCH_CONNECTIONS_MAX:-10000}"
ROUNDS="${BENCH_ROUNDS:-3}"
MSGS="${BENCH_MSGS:-3000}"
SIZE="${BENCH_SIZE:-1024}"
PORT="${BENCH_PORT_BASE:-29600}"
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/neo-bench-floods.XXXXXX")"
PIDS=()
FLOOD_PIDS=()
cleanup() {
  for p in "${FLOOD_PIDS[@]}" "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
  flag=(); [[ "$PROFILE" == release ]] && flag=(--release)
  (cd "$ROOT" && cargo build "${flag[@]}" -p neo-node -p neo-client)
fi
NODE="$TARGET/$PROFILE/neo-node"
NEO="$TARGET/$PROFILE/neo"
SERVER="127.0.0.1:$PORT"

# Idle connections: open COUNT, answer every Ping with a Pong, never send anything else.
cat >"$WORK/idle.py" <<'PY'
import resource, selectors, socket, sys, time
host, port, count, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sel = selectors.DefaultSelector()
bufs = {}
opened = refused = 0
for _ in range(count):
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError:
        refused += 1
        continue
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    bufs[s] = b""
    opened += 1
open(ready, "w").write(f"{opened} {refused}\n")
while True:
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s); s.close(); bufs.pop(s, None); continue
        buf = bufs[s] + data
        while len(buf) >= 26:
            body = int.from_bytes(buf[18:22], "big")
            if len(buf) < 26 + body:
                break
            frame, buf = buf[:26 + body], buf[26 + body:]
            if frame[3] == 5:  # Ping: answer Pong with the same correlation id
                try:
                    s.send(frame[:3] + b"\x06" + frame[4:26])
                except OSError:
                    pass
        bufs[s] = buf
PY
# The storm: connect and close as fast as one process can; counts on SIGTERM.
cat >"$WORK/storm.py" <<'PY'
import signal, socket, sys
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n = 0
def done(*_):
    open(out, "w").write(f"{n}\n"); sys.exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    try:
        socket.create_connection((host, port), timeout=5).close()
        n += 1
    except OSError:
        pass
PY

"$NODE" --id 1 --data-dir "$WORK/data" --listen "$SERVER" \
  --cluster-listen "127.0.0.1:$((PORT + 1))" --http-listen "127.0.0.1:$((PORT + 2))" \
  --connections-max "$CONN_MAX" --log warn >"$WORK/node.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
ready=
for _ in $(seq 150); do
  curl -sf "http://127.0.0.1:$((PORT + 2))/ready" >/dev/null 2>&1 && { ready=1; break; }
  sleep 0.2
done
if [[ -z "$ready" ]]; then
  echo "the node did not get ready in 30 s:" >&2; tail -20 "$WORK/node.log" >&2; exit 1
fi
"$NEO" --server "$SERVER" topic create bench --partitions 1 --replication 1 >/dev/null
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$NODE_PID/status"; }
bench() {
  "$NEO" --server "$SERVER" bench produce --topic bench --msgs "$MSGS" --size "$SIZE" \
    --inflight 1
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

bench >/dev/null # warm-up
RSS0=$(rss_kib)
echo "node RSS, 0 idle connections: $RSS0 KiB"
RATIOS=()
for round in $(seq "$ROUNDS"); do
  alone=$(bench)
  echo "round $round alone: $alone"
  # The flood: idle holders of at most 8000 connections each (fd limits), then the storm.
  left=$IDLE; i=0
  while ((left > 0)); do
    n=$((left > 8000 ? 8000 : left))
    python3 "$WORK/idle.py" 127.0.0.1 "$PORT" "$n" "$WORK/ready.$i" &
    FLOOD_PIDS+=($!)
    left=$((left - n)); i=$((i + 1))
  done
  for j in $(seq 0 $((i - 1))); do
    for _ in $(seq 600); do [[ -s "$WORK/ready.$j" ]] && break; sleep 0.1; done
  done
  held=$(cat "$WORK"/ready.* | awk '{o += $1; r += $2} END {print o " open, " r " refused"}')
  sleep 1
  RSSN=$(rss_kib)
  python3 "$WORK/storm.py" 127.0.0.1 "$PORT" "$WORK/storm.count" &
  STORM=$!
  FLOOD_PIDS+=("$STORM")
  sleep 1
  during=$(bench)
  kill "$STORM"; wait "$STORM" 2>/dev/null || true
  echo "round $round during ($held idle connections, RSS $RSSN KiB, storm of $(cat "$WORK/storm.count") connects): $during"
  for p in "${FLOOD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${FLOOD_PIDS[@]}" 2>/dev/null || true
  FLOOD_PIDS=(); rm -f "$WORK"/ready.* "$WORK/storm.count"
  a=$(field "$alone" p99_us); d=$(field "$during" p99_us)
  ratio=$(python3 -c "print(f'{$d / $a:.2f}')")
  echo "round $round: p99 alone ${a} us, during ${d} us, ratio $ratio (p50 alone $(field "$alone" p50_us) us, during $(field "$during" p50_us) us)"
  RATIOS+=("$ratio")
  sleep 2 # the node closes the flood's connections
done
echo "median p99 ratio (during / alone): $(printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
echo "node RSS: $RSS0 KiB with 0 idle connections, $RSSN KiB with $IDLE"
