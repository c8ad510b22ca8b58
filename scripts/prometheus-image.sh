#!/usr/bin/env bash
# Builds the image neo-prometheus:latest FROM scratch from the Prometheus binary of this
# machine (Debian's `prometheus` package: apt-get install prometheus). No registry pull.
#
#   bash scripts/prometheus-image.sh
#   docker-compose --profile monitoring up -d      # docs/monitoring.md
#
# 1. It copies the binary, every shared library `ldd` lists (and the loader) at the same
#    paths, the web UI's assets (/usr/share/prometheus/web) and the console templates
#    when present, and deploy/prometheus/{prometheus.yml,alerts.yml} as the default
#    configuration in /etc/prometheus.
# 2. docker builds docker/prometheus/Dockerfile in a temporary context, replaces the
#    previous image of that tag and prints the image id and size.
#
# Environment: PROMETHEUS_BIN (default: `prometheus` on the PATH), NEO_PROMETHEUS_IMAGE
# (default neo-prometheus:latest).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=${NEO_PROMETHEUS_IMAGE:-neo-prometheus:latest}
BIN=${PROMETHEUS_BIN:-$(command -v prometheus || true)}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'prometheus-image.sh: %s\n' "$*" >&2; exit 1; }

[ -n "$BIN" ] && [ -x "$BIN" ] ||
    die "no prometheus binary: apt-get install prometheus (or set PROMETHEUS_BIN)"
command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer (docker info)"
for f in prometheus.yml alerts.yml; do
    [ -f "$ROOT/deploy/prometheus/$f" ] || die "deploy/prometheus/$f missing"
done

CTX=$(mktemp -d "${TMPDIR:-/tmp}/neo-prometheus-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
R=$CTX/rootfs
mkdir -p "$R/usr/bin" "$R/etc/prometheus" "$CTX/data"
cp "$ROOT/docker/prometheus/Dockerfile" "$CTX/Dockerfile"
cp -L "$BIN" "$R/usr/bin/prometheus"
log "$BIN: $("$BIN" --version 2>&1 | head -n 1)"

# A static binary lists no library; a dynamic one gets its libraries and the loader.
if ldd "$BIN" >/dev/null 2>&1; then
    ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(0x/ { print $1 }' |
        while read -r lib; do
            mkdir -p "$R$(dirname "$lib")"
            cp -L "$lib" "$R$lib"
        done
    log "dynamic: $(ldd "$BIN" | grep -c '/') libraries copied"
else
    log "static: no library to copy"
fi

# Web UI assets and console templates, where Debian puts them (the flags' defaults).
if [ -d /usr/share/prometheus/web ]; then
    mkdir -p "$R/usr/share/prometheus"
    cp -rL /usr/share/prometheus/web "$R/usr/share/prometheus/web" ||
        log "warning: some UI assets could not be copied (dangling links?): the API works"
    # Debian links moment-timezone's whole tz database (~200 MiB); the UI loads only
    # moment-timezone-with-data.min.js.
    rm -rf "$R/usr/share/prometheus/web/static/moment-timezone/data"
fi
for d in consoles console_libraries; do
    if [ -d "/etc/prometheus/$d" ]; then
        cp -rL "/etc/prometheus/$d" "$R/etc/prometheus/$d"
    else
        mkdir -p "$R/etc/prometheus/$d"
    fi
done
cp "$ROOT/deploy/prometheus/prometheus.yml" "$ROOT/deploy/prometheus/alerts.yml" "$R/etc/prometheus/"
# glibc's resolver (cgo) reads this; Go's own falls back to the same order without it.
printf 'hosts: files dns\n' >"$R/etc/nsswitch.conf"

previous=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
log "docker build -t $IMAGE"
docker build -q -t "$IMAGE" \
    --label "org.opencontainers.image.title=neo-prometheus" \
    --label "org.opencontainers.image.version=$("$BIN" --version 2>&1 | awk 'NR == 1 { print $3 }')" \
    --label "org.opencontainers.image.revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
    "$CTX" >/dev/null

id=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [ -n "$previous" ] && [ "$previous" != "$id" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
printf 'image %s\nid %s\nsize %s bytes (%s MiB)\n' \
    "$IMAGE" "$id" "$size" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')"
