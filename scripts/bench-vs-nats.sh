#!/usr/bin/env bash
# Neo vs NATS JetStream on this machine, in one run: publish with acknowledgements,
# file storage, a 3-node cluster on loopback with replication 3 and the single-node case;
# 100 B and 1 KiB messages; 1 and 256 messages in flight. Prints a markdown table with
# the ratio Neo/NATS of every row (measured back to back in the same run, which is what
# to compare on a shared, noisy machine). Method and recorded runs: docs/BENCHMARKS.md.
#
#   scripts/bench-vs-nats.sh            # builds, installs Debian's nats-server if missing
#
# Both sides are measured the same way: one task on one client connection keeps K
# B-byte messages awaiting their ack (it sends until K are outstanding, then waits for
# the oldest ack before sending more) until N are acknowledged; latency is each
# message's send call -> its ack, throughput is N / (first send -> last ack). Neo: `neo bench produce
# --acks all` (ack after commit on a quorum, every replica fdatasyncs before it counts,
# `--fsync always`). NATS: scripts/bench/nats-bench (async-nats, JetStream publish + ack).
#
# Environment (all optional):
#   CARGO_TARGET_DIR      where Neo's release binaries are built (default: <repo>/target);
#                         nats-bench is built in $CARGO_TARGET_DIR/nats-bench
#   NATS_SERVER           nats-server binary to use (default: Debian's, apt-installed)
#   BENCH_MSGS_K1         messages per row with 1 in flight (default 5000)
#   BENCH_MSGS_K256_100   messages per 100 B row with 256 in flight (default 300000)
#   BENCH_MSGS_K256_1K    messages per 1 KiB row with 256 in flight (default 100000)
#   BENCH_GOAL_INFLIGHT   in flight of the single-node 100 B throughput row (default 4096)
#   BENCH_GOAL_MSGS       messages of that row (default 2000000)
#   BENCH_PORT_BASE       first of the loopback ports used (default 38000; 40 ports)
#   BENCH_DIR             parent of the temporary data directories (default: /var/tmp;
#                         must be a real disk, not tmpfs, or fsync costs nothing)
#   BENCH_KEEP=1          keep the data directories and logs
#   BENCH_SKIP_BUILD=1    use the binaries already built
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
NB_TARGET="$TARGET/nats-bench"
N_K1="${BENCH_MSGS_K1:-5000}"
N_K256_100="${BENCH_MSGS_K256_100:-300000}"
N_K256_1K="${BENCH_MSGS_K256_1K:-100000}"
GOAL_K="${BENCH_GOAL_INFLIGHT:-4096}"
GOAL_N="${BENCH_GOAL_MSGS:-2000000}"
PORT="${BENCH_PORT_BASE:-38000}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
STEP_TIMEOUT=300 # seconds any one bench command may take

log() { printf '[bench-vs-nats %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- processes, clean-up
WORK=""
PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    local rc=$?
    stop_all
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "${BENCH_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
            log "data and logs kept in $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
if [[ -z "${NATS_SERVER:-}" ]]; then
    if ! command -v nats-server >/dev/null; then
        log "installing Debian's nats-server"
        SUDO=""
        [[ $(id -u) -eq 0 ]] || SUDO=sudo
        $SUDO apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >&2
    fi
    NATS_SERVER="$(command -v nats-server)"
fi
[[ -x "$NATS_SERVER" ]] || die "NATS_SERVER=$NATS_SERVER is not executable"
NATS_VERSION="$("$NATS_SERVER" --version 2>&1 | head -1)"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building neo-node and neo (release) in $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet \
        -p neo-node -p neo-client --bin neo-node --bin neo) >&2
    log "building nats-bench (release) in $NB_TARGET"
    cargo build --release --quiet --locked \
        --manifest-path "$ROOT/scripts/bench/nats-bench/Cargo.toml" --target-dir "$NB_TARGET" >&2
fi
NEO_NODE="$TARGET/release/neo-node"
NEO="$TARGET/release/neo"
NATS_BENCH="$NB_TARGET/release/nats-bench"
for b in "$NEO_NODE" "$NEO" "$NATS_BENCH"; do [[ -x "$b" ]] || die "missing $b"; done

mkdir -p "$BENCH_DIR"
WORK="$(mktemp -d "$BENCH_DIR/neo-vs-nats.XXXXXX")"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# Does this nats-server know `jetstream { sync_interval: always }` (fsync before every
# ack)? NATS added the option in 2.10; Debian 12 ships 2.9.10, which rejects it as an
# unknown field and has no per-write fsync at all.
printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s/probe", sync_interval: always }\n' \
    "$PORT" "$WORK" >"$WORK/probe.conf"
if "$NATS_SERVER" -t -c "$WORK/probe.conf" >/dev/null 2>&1; then
    NATS_MODES=(always default)
else
    NATS_MODES=(default)
fi
log "$NATS_VERSION ($NATS_SERVER); NATS fsync modes measured: ${NATS_MODES[*]}"

# ---------------------------------------------------------------- ports
# Neo node i (1..3): client PORT+i, cluster PORT+10+i, http PORT+20+i.
# NATS server i: client PORT+30+i, cluster route PORT+35+i.
neo_client_port() { echo $((PORT + $1)); }
nats_port() { echo $((PORT + 30 + $1)); }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $(seq $((PORT + 1)) $((PORT + 39))); do
    port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
done

# Every process started must still run (a bad config or a busy port ends one at once).
check_alive() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a server exited early (logs in $WORK)"
    done
}

# ---------------------------------------------------------------- Neo
# start_neo N: N nodes (1 or 3) with fsync before every ack.
start_neo() {
    local n=$1 peers="" i
    for i in $(seq "$n"); do peers+="${peers:+,}$i=127.0.0.1:$((PORT + 10 + i))"; done
    for i in $(seq "$n"); do
        mkdir -p "$WORK/neo$n-$i"
        "$NEO_NODE" --id "$i" --data-dir "$WORK/neo$n-$i/data" \
            --listen "127.0.0.1:$(neo_client_port "$i")" \
            --cluster-listen "127.0.0.1:$((PORT + 10 + i))" \
            --http-listen "127.0.0.1:$((PORT + 20 + i))" \
            --peers "$peers" --fsync always --log warn \
            >"$WORK/neo$n-$i/log" 2>&1 &
        PIDS+=($!)
    done
    NEO_SERVERS=""
    for i in $(seq "$n"); do NEO_SERVERS+="${NEO_SERVERS:+,}127.0.0.1:$(neo_client_port "$i")"; done
}

# neo_topic NAME PARTITIONS REPLICATION: create, retrying while the cluster forms.
neo_topic() {
    local t0=$SECONDS
    until "$NEO" --server "$NEO_SERVERS" topic create "$1" --partitions "$2" \
        --replication "$3" >>"$WORK/neo-admin.log" 2>&1; do
        check_alive
        ((SECONDS - t0 < 60)) || die "cannot create Neo topic $1 (see $WORK/neo-admin.log)"
        sleep 0.5
    done
}

# ---------------------------------------------------------------- NATS
# start_nats N MODE: N servers (1 or 3), JetStream on file storage; MODE always adds
# `sync_interval: always`, default leaves the server's default.
start_nats() {
    local n=$1 mode=$2 i routes="" sync=""
    [[ $mode == always ]] && sync=", sync_interval: always"
    for i in $(seq "$n"); do routes+="${routes:+, }nats-route://127.0.0.1:$((PORT + 35 + i))"; done
    for i in $(seq "$n"); do
        local dir="$WORK/nats$n-$mode-$i"
        mkdir -p "$dir"
        {
            echo "server_name: n$i"
            echo "listen: 127.0.0.1:$(nats_port "$i")"
            echo "jetstream { store_dir: \"$dir/js\" $sync }"
            if ((n > 1)); then
                echo "cluster { name: bench, listen: 127.0.0.1:$((PORT + 35 + i)), routes: [ $routes ] }"
            fi
        } >"$dir/nats.conf"
        "$NATS_SERVER" -c "$dir/nats.conf" >"$dir/log" 2>&1 &
        PIDS+=($!)
    done
}

# nats_stream NAME REPLICAS: (re)create the stream, retrying while JetStream forms its
# meta group; sets NATS_LEADER_PORT to the client port of the stream's leader.
nats_stream() {
    local t0=$SECONDS leader
    until leader="$("$NATS_BENCH" --server "nats://127.0.0.1:$(nats_port 1)" setup \
        --stream "$1" --subject "$1" --replicas "$2" 2>>"$WORK/nats-admin.log")"; do
        check_alive
        ((SECONDS - t0 < 60)) || die "cannot create NATS stream $1 (see $WORK/nats-admin.log)"
        sleep 0.5
    done
    NATS_LEADER_PORT="$(nats_port "${leader#n}")"
}

# ---------------------------------------------------------------- measurements
# record SETUP SIZE K N SYSTEM MODE JSON -> one line of results.tsv
record() {
    local json=$7
    f() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p" <<<"$json"; }
    [[ -n "$(f msgs_per_s)" ]] || die "no result from $5 ($json)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" \
        "$(f msgs_per_s)" "$(f mb_per_s)" "$(f p50_us)" "$(f p99_us)" "$(f p999_us)" >>"$RESULTS"
    log "$1 ${2}B K=$3 N=$4 $5${6:+ ($6)}: $(f msgs_per_s | cut -d. -f1) msgs/s, p50 $(f p50_us) p99 $(f p99_us) us"
}

# record_failure SETUP SIZE K N SYSTEM MODE ERROR: the row is kept (and shown as failed),
# the run goes on, and the script exits 1 at the end.
FAILURES=0
record_failure() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$RESULTS"
    printf -- '- %s, %s B, %s in flight, %s: %s\n' "$1" "$2" "$3" "$5" "$7" >>"$WORK/failures.md"
    log "$1 ${2}B K=$3 N=$4 $5: FAILED: $7"
    FAILURES=$((FAILURES + 1))
}

run_neo() { # SETUP SIZE K N TOPIC
    local out
    if out="$(timeout "$STEP_TIMEOUT" "$NEO" --server "$NEO_SERVERS" bench produce \
        --topic "$5" --msgs "$4" --size "$2" --inflight "$3" --acks all 2>"$WORK/bench.err")"; then
        record "$1" "$2" "$3" "$4" neo "fsync always" "$out"
    else
        record_failure "$1" "$2" "$3" "$4" neo "fsync always" "$(tail -1 "$WORK/bench.err")"
    fi
}

run_nats() { # SETUP SIZE K N STREAM MODE
    local out
    if out="$(timeout "$STEP_TIMEOUT" "$NATS_BENCH" --server "nats://127.0.0.1:$NATS_LEADER_PORT" \
        produce --subject "$5" --msgs "$4" --size "$2" --inflight "$3" 2>"$WORK/bench.err")"; then
        record "$1" "$2" "$3" "$4" nats "$6" "$out"
    else
        record_failure "$1" "$2" "$3" "$4" nats "$6" "$(tail -1 "$WORK/bench.err")"
    fi
}

msgs_for() { # SIZE K
    if (($2 == 1)); then echo "$N_K1"; elif (($1 <= 100)); then echo "$N_K256_100"; else echo "$N_K256_1K"; fi
}

# phase NODES SETUP-LABEL: both systems up, every row measured Neo and NATS back to back
# (alternating who goes first); then the other NATS fsync mode, if any, on a fresh NATS.
phase() {
    local n=$1 label=$2 size k mi=0 row mode
    start_neo "$n"
    for mode in "${NATS_MODES[@]}"; do
        start_nats "$n" "$mode"
        row=0
        for size in 100 1024; do
            for k in 1 256; do
                local msgs name
                msgs="$(msgs_for "$size" "$k")"
                name="b$n-$size-$k"
                nats_stream "$name-$mode" "$n"
                if ((mi == 0)); then
                    neo_topic "$name" 1 "$n"
                    if (((row % 2) == 0)); then
                        run_neo "$label" "$size" "$k" "$msgs" "$name"
                        run_nats "$label" "$size" "$k" "$msgs" "$name-$mode" "$mode"
                    else
                        run_nats "$label" "$size" "$k" "$msgs" "$name-$mode" "$mode"
                        run_neo "$label" "$size" "$k" "$msgs" "$name"
                    fi
                else
                    run_nats "$label" "$size" "$k" "$msgs" "$name-$mode" "$mode"
                fi
                row=$((row + 1))
            done
        done
        # Stop this NATS before the next mode (its processes are the last ones started).
        local keep=$((${#PIDS[@]} - n)) pid
        for pid in "${PIDS[@]:keep}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${PIDS[@]:keep}"; do wait "$pid" 2>/dev/null || true; done
        PIDS=("${PIDS[@]:0:keep}")
        mi=$((mi + 1))
    done
    # Neo only: the same load spread over 3 partitions (3 Raft groups; their leaders are
    # wherever the elections put them, Neo does no leader balancing yet), and on the single
    # node the 100 B throughput with more in flight (the 1M msgs/s goal).
    if ((n == 3)); then
        for size in 100 1024; do
            neo_topic "p3-$size" 3 3
            run_neo "$label, 3 partitions" "$size" 256 "$(msgs_for "$size" 256)" "p3-$size"
        done
    else
        neo_topic "goal" 1 1
        run_neo "$label" 100 "$GOAL_K" "$GOAL_N" goal
    fi
    stop_all
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED=$SECONDS
log "data in $WORK; load average $LOAD_BEFORE"
phase 3 "3 nodes, R=3"
phase 1 "1 node"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- report
fmt_int() { awk -v x="$1" 'BEGIN { s = sprintf("%.0f", x); n = length(s); o = "";
    for (i = 1; i <= n; i++) { o = o substr(s, i, 1); if ((n - i) % 3 == 0 && i < n) o = o " " } print o }'; }

{
    echo
    if rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; then
        git -C "$ROOT" diff --quiet HEAD 2>/dev/null || rev+=" + uncommitted changes"
    else
        rev="source tree $ROOT"
    fi
    echo "Neo ($rev) vs $NATS_VERSION; $(nproc) cores; load average $LOAD_BEFORE before," \
        "$LOAD_AFTER after; $((SECONDS - STARTED)) s."
    echo "Neo: \`--fsync always\` (fdatasync before an entry counts as flushed), acks=all." \
        "NATS fsync: \`always\` = \`jetstream { sync_interval: always }\`; \`default\` = no" \
        "sync_interval set$( [[ ${#NATS_MODES[@]} -eq 1 ]] && echo " (this version has no such option: no fsync before an ack; background sync every 2 min)")."
    echo
    echo "| setup | msg | in flight | msgs | Neo msgs/s | Neo MB/s | Neo p50 / p99 / p999 µs | NATS fsync | NATS msgs/s | NATS p50 / p99 / p999 µs | msgs/s Neo/NATS | p99 Neo/NATS |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    awk -F'\t' '$5 == "neo" { print }' "$RESULTS" | while IFS=$'\t' read -r setup size k n _ _ mps mbps p50 p99 p999; do
        if [[ $mps == - ]]; then
            neo_cells="**failed** | — | —"
        else
            neo_cells="$(fmt_int "$mps") | $(printf '%.1f' "$mbps") | $p50 / $p99 / $p999"
        fi
        matched=0
        while IFS=$'\t' read -r _ _ _ _ _ mode nmps _ np50 np99 np999; do
            matched=1
            if [[ $mps == - || $nmps == - ]]; then
                ratio="—" pratio="—"
            else
                ratio="$(awk -v a="$mps" -v b="$nmps" 'BEGIN { printf "%.2fx", a / b }')"
                pratio="$(awk -v a="$p99" -v b="$np99" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 1) }')"
            fi
            if [[ $nmps == - ]]; then
                nats_cells="**failed** | —"
            else
                nats_cells="$(fmt_int "$nmps") | $np50 / $np99 / $np999"
            fi
            echo "| $setup | $size B | $k | $(fmt_int "$n") | $neo_cells | $mode | $nats_cells | $ratio | $pratio |"
        done < <(awk -F'\t' -v s="$setup" -v z="$size" -v k="$k" -v n="$n" \
            '$5 == "nats" && $1 == s && $2 == z && $3 == k && $4 == n' "$RESULTS")
        if ((matched == 0)); then
            echo "| $setup | $size B | $k | $(fmt_int "$n") | $neo_cells | — | — | — | — | — |"
        fi
    done
    if [[ -s "$WORK/failures.md" ]]; then
        echo
        echo "Failed rows:"
        echo
        cat "$WORK/failures.md"
    fi
    echo
    goal="$(awk -F'\t' -v k="$GOAL_K" '$5 == "neo" && $1 == "1 node" && $2 == 100 && $3 == k { print $7 }' "$RESULTS")"
    best="$(awk -F'\t' '$5 == "neo" && $1 == "1 node" && $2 == 100 && $7 != "-" { if ($7 + 0 > m) m = $7 + 0 } END { print m + 0 }' "$RESULTS")"
    [[ $goal == - || -z $goal ]] && goal_text="failed" || goal_text="$(fmt_int "$goal") msgs/s"
    echo "Single node, 100 B, acks=all, fsync always: $goal_text with $GOAL_K in flight" \
        "(best single-node 100 B row: $(fmt_int "$best") msgs/s); goal 1 000 000 msgs/s:" \
        "$(awk -v b="$best" 'BEGIN { print (b >= 1000000 ? "met" : "missed") }')."
    echo "Rows meeting \"Neo >= 3x NATS msgs/s with a lower p99\":" \
        "$(awk -F'\t' '
            $5 == "neo" { neo[$1 FS $2 FS $3 FS $4] = $7 FS $10 }
            $5 == "nats" { nats[$1 FS $2 FS $3 FS $4 FS $6] = $7 FS $10 }
            END { for (k in nats) { split(k, a, FS); key = a[1] FS a[2] FS a[3] FS a[4];
                    if (!(key in neo)) continue; split(neo[key], x, FS); split(nats[k], y, FS);
                    total++; if (x[1] != "-" && y[1] != "-" && x[1] + 0 >= 3 * y[1] && x[2] + 0 < y[2] + 0) met++ }
                  printf "%d of %d", met, total }' "$RESULTS")."
} | tee "$WORK/table.md"

if ((FAILURES > 0)); then
    log "$FAILURES row(s) failed (listed under the table)"
    exit 1
fi
