#!/usr/bin/env bash
# Spurious-election soak (docs/CHAOS.md, "Failover time"): three local neo-node
# processes, a topic of PARTITIONS partitions (rf 3) under a steady producer, no fault,
# for DURATION seconds; prints the Raft election and leader-change counters of every
# node at the start (after the cluster settled), every INTERVAL seconds and at the end,
# and the nodes' CPU (utime + stime from /proc) over each interval.
#
#   bash chaos/scripts/quiet-soak.sh            # 3600 s, 100 partitions, 200 msg/s
#   DURATION=1800 PARTITIONS=50 RATE=100 bash chaos/scripts/quiet-soak.sh
#
# Needs target/debug/neo-node and target/debug/neo (or NODE_BIN / NEO_BIN).
set -euo pipefail
DURATION=${DURATION:-3600}
PARTITIONS=${PARTITIONS:-100}
RATE=${RATE:-200}
SETTLE=${SETTLE:-30}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NODE_BIN=${NODE_BIN:-$ROOT/target/debug/neo-node}
NEO_BIN=${NEO_BIN:-$ROOT/target/debug/neo}
WORK=${WORK:-$(mktemp -d /tmp/neo-soak-XXXXXX)}
BASE=${BASE:-27100}
echo "work dir $WORK, $PARTITIONS partitions, $RATE msg/s, ${DURATION}s" >&2

peers="1=127.0.0.1:$((BASE + 11)),2=127.0.0.1:$((BASE + 12)),3=127.0.0.1:$((BASE + 13))"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
for id in 1 2 3; do
    mkdir -p "$WORK/node-$id"
    NEO_LOG=${NEO_LOG:-info} "$NODE_BIN" --id "$id" --data-dir "$WORK/node-$id" \
        --listen "127.0.0.1:$((BASE + id))" --cluster-listen "127.0.0.1:$((BASE + 10 + id))" \
        --http-listen "127.0.0.1:$((BASE + 20 + id))" --peers "$peers" \
        >"$WORK/node-$id.log" 2>&1 &
    pids+=($!)
done
servers="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
for id in 1 2 3; do
    until curl -fs "http://127.0.0.1:$((BASE + 20 + id))/ready" >/dev/null; do sleep 0.5; done
done
"$NEO_BIN" --server "$servers" topic create soak --partitions "$PARTITIONS" --replication 3 >&2

# The producer: RATE lines per second into one long-lived `neo produce` (round robin).
python3 -u -c '
import sys, time
rate = float(sys.argv[1]); n = 0; start = time.monotonic()
while True:
    n += 1
    sys.stdout.write(f"soak-{n}\n"); sys.stdout.flush()
    delay = start + n / rate - time.monotonic()
    if delay > 0: time.sleep(delay)
' "$RATE" | "$NEO_BIN" --server "$servers" produce soak >"$WORK/produce.out" 2>"$WORK/produce.err" &
pids+=($!)

counters() {
    for id in 1 2 3; do
        curl -fs "http://127.0.0.1:$((BASE + 20 + id))/metrics" |
            grep -E '^neo_(raft_elections_started_total|raft_leader_changes_total|leader_transfers_total)' |
            sed "s/^/node $id: /"
    done
}
cpu() { for pid in "${pids[@]:0:3}"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | paste -sd' '; }
sleep "$SETTLE" # leader balancing and the first elections settle
hz=$(getconf CLK_TCK)
c0=$(cpu); t0=$(date +%s)
echo "== start $(date -u +%FT%TZ)"; counters
# A report every INTERVAL seconds (CPU of each node over that interval), then the end.
INTERVAL=${INTERVAL:-600}
elapsed=0; cp=$c0; tp=$t0
while [ "$elapsed" -lt "$DURATION" ]; do
    step=$((DURATION - elapsed < INTERVAL ? DURATION - elapsed : INTERVAL))
    sleep "$step"; elapsed=$((elapsed + step))
    c=$(cpu); t=$(date +%s)
    echo "== after ${elapsed}s $(date -u +%FT%TZ)"; counters
    paste <(tr ' ' '\n' <<<"$cp") <(tr ' ' '\n' <<<"$c") |
        awk -v hz="$hz" -v s=$((t - tp)) '{printf "  node %d CPU over the last %d s: %.1f%% of one core\n", NR, s, 100 * ($2 - $1) / hz / s}'
    cp=$c; tp=$t
done
echo "== whole run: ${DURATION}s"
paste <(tr ' ' '\n' <<<"$c0") <(tr ' ' '\n' <<<"$cp") |
    awk -v hz="$hz" -v s=$((tp - t0)) '{printf "  node %d CPU: %.1f%% of one core\n", NR, 100 * ($2 - $1) / hz / s}'
echo "producer stderr (last lines):"; tail -3 "$WORK/produce.err" || true
