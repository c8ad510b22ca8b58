#!/usr/bin/env bash
# Node CPU per message of `neo bench produce` against one single-node `neo-node`
# (--fsync always), A/B: runs build A and build B alternately, each on a fresh data
# directory, so both see the same minutes of machine load.
#
#   scripts/bench/produce-cpu.sh NODE_A NODE_B NEO [RUNS] [MSGS] [SIZE] [INFLIGHT]
#
# NEO (the client) is the same for both builds, so only the node differs. Node CPU =
# utime + stime of the node process (fields 14 + 15 of /proc/PID/stat, in clock ticks)
# read just before and just after the bench, divided by the messages: node CPU per
# message in µs. Prints one line per run: build, msgs/s, node µs/msg, the bench's JSON.
set -euo pipefail
A=$1 B=$2 NEO=$3 RUNS=${4:-3} MSGS=${5:-2000000} SIZE=${6:-100} INFLIGHT=${7:-4096}
PORT=${PORT:-17170}
WORK=$(mktemp -d /var/tmp/neo-produce-cpu.XXXXXX)
TICK=$(getconf CLK_TCK)
NODE_PID=
cleanup() { [[ -n $NODE_PID ]] && kill "$NODE_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # LABEL NODE_BINARY
    local dir="$WORK/$1-$RANDOM" server="127.0.0.1:$PORT" t0 out before after
    mkdir -p "$dir"
    "$2" --id 1 --data-dir "$dir/data" --listen "$server" \
        --cluster-listen "127.0.0.1:$((PORT + 1))" --http-listen "127.0.0.1:$((PORT + 2))" \
        --fsync always --log warn >"$dir/log" 2>&1 &
    NODE_PID=$!
    t0=$SECONDS
    until "$NEO" --server "$server" topic create bench --partitions 1 --replication 1 \
        >>"$dir/admin.log" 2>&1; do
        ((SECONDS - t0 < 60)) || { echo "node $1 did not start" >&2; cat "$dir/log" >&2; exit 1; }
        sleep 0.3
    done
    sleep 1 # the partition's group elects its leader
    before=$(cpu_ticks "$NODE_PID")
    out=$("$NEO" --server "$server" bench produce --topic bench --msgs "$MSGS" --size "$SIZE" \
        --inflight "$INFLIGHT" --acks all)
    after=$(cpu_ticks "$NODE_PID")
    kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=
    rm -rf "$dir"
    awk -v l="$1" -v b="$before" -v a="$after" -v t="$TICK" -v n="$MSGS" -v o="$out" 'BEGIN {
        m = o; sub(/.*"msgs_per_s":/, "", m); sub(/[,}].*/, "", m)
        printf "%s msgs/s=%.0f node_us_per_msg=%.4f load=%s %s\n", l, m, (a - b) / t * 1e6 / n,
            substr(ENVIRON["LOAD"], 1, 14), o }'
}

for i in $(seq "$RUNS"); do
    if ((i % 2)); then order=(A B); else order=(B A); fi
    for l in "${order[@]}"; do
        LOAD=$(cut -d' ' -f1-3 /proc/loadavg) export LOAD
        if [[ $l == A ]]; then run A "$A"; else run B "$B"; fi
    done
done
