#!/usr/bin/env bash
# Runs `neo-chaos --scenario rolling-restart` RUNS times in a row, a new random seed
# each run, and prints one line per run (seed, verdict, acknowledged, unknown, lost,
# failed, duplicates, wall time); stops at the first run with an unknown send or a
# verdict other than pass unless KEEP_GOING=1. Issue 22's criterion for the
# rolling-restart stall: 30 consecutive runs with 0 unknown (docs/CHAOS.md).
#
#   cargo build -p neo-chaos -p neo-node -p neo-client
#   NEO_IMAGE_PROFILE=debug bash scripts/docker-image.sh      # docker mode only
#   RUNS=30 MODE=docker bash chaos/scripts/rolling-restart-loop.sh
#
# Environment: RUNS (30), MODE (docker | local), DURATION (30s), OUT (/tmp/rr),
# CHAOS (target/debug/neo-chaos), KEEP_GOING (0). Each run's reports and stderr go to
# $OUT/run-N (node logs are kept there by neo-chaos for a run with an unknown send),
# its summary to $OUT/run-N.out and stderr to $OUT/run-N.err.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-30}
MODE=${MODE:-docker}
DURATION=${DURATION:-30s}
OUT=${OUT:-/tmp/rr}
CHAOS=${CHAOS:-target/debug/neo-chaos}
KEEP_GOING=${KEEP_GOING:-0}
command -v jq >/dev/null || { echo "rolling-restart-loop.sh: jq not found" >&2; exit 2; }
mkdir -p "$OUT"
mode_args=(--mode "$MODE")
[ "$MODE" = docker ] && mode_args+=(--compose-file docker-compose.yml)
printf 'run\tseed\tstatus\tacked\tunknown\tlost\tfailed\tduplicates\twall_s\n'
clean=0
for i in $(seq 1 "$RUNS"); do
  seed=$((RANDOM * 32768 + RANDOM))
  dir=$OUT/run-$i
  rm -rf "$dir"
  set +e
  NEO_CHAOS_LOG=${NEO_CHAOS_LOG:-warn,neo_client::retry=debug} "$CHAOS" "${mode_args[@]}" \
    --scenario rolling-restart --duration "$DURATION" --seed "$seed" \
    --report-dir "$dir" > "$dir.out" 2> "$dir.err"
  rc=$?
  set -e
  report=$dir/rolling-restart.json
  if [ ! -f "$report" ]; then
    printf '%s\t%s\tno report (exit %s)\n' "$i" "$seed" "$rc"
    [ "$KEEP_GOING" = 1 ] && continue
    exit 1
  fi
  line=$(jq -r '[.status, (.check.acknowledged // "-"), (.check.unknown // "-"),
      (.check.lost // "-"), (.check.failed // "-"), (.check.duplicates // "-"),
      (.wall_s | floor)] | @tsv' "$report")
  printf '%s\t%s\t%s\n' "$i" "$seed" "$line"
  status=$(jq -r '.status' "$report")
  unknown=$(jq -r '.check.unknown // 1' "$report")
  if [ "$status" = pass ] && [ "$unknown" = 0 ]; then
    clean=$((clean + 1))
  elif [ "$KEEP_GOING" != 1 ]; then
    echo "run $i: $status with $unknown unknown; reports in $dir" >&2
    exit 1
  fi
done
echo "$clean of $RUNS consecutive runs PASS with 0 unknown" >&2
