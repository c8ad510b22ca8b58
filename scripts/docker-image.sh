#!/usr/bin/env bash
# Builds the image neo-node:latest FROM scratch (no base image can be pulled here).
#
#   bash scripts/docker-image.sh
#
# 1. cargo builds `neo-node` and the `neo` CLI in release mode as static glibc binaries
#    (-C target-feature=+crt-static --target x86_64-unknown-linux-gnu), in
#    $CARGO_TARGET_DIR (default ./target) under x86_64-unknown-linux-gnu/release/.
# 2. It checks that they are static (no NEEDED entry, `ldd`: not dynamic). If the static
#    build fails, or NEO_IMAGE_LINK=dynamic, it builds ordinary binaries instead and
#    copies the shared libraries `ldd` lists (and the loader) into the image.
# 3. docker builds docker/Dockerfile in a temporary context and prints the image id and
#    size.
#
# Environment: CARGO_TARGET_DIR (honoured), NEO_IMAGE (default neo-node:latest),
# NEO_IMAGE_LINK=static|dynamic (default static), RUSTFLAGS (extended, not replaced),
# NEO_IMAGE_PROFILE=release|debug (default release). `debug` puts the dev-profile
# binaries of the host build (target/debug, dynamic) in the image: no second compile of
# the workspace after `cargo test`, for CI's chaos runs (.ci/run); images for use are
# release builds.
# A static glibc binary in a scratch image has no loadable NSS modules (only what glibc
# >= 2.34 builds in): configure nodes with IP literals (docker-compose.yml does).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=x86_64-unknown-linux-gnu
IMAGE=${NEO_IMAGE:-neo-node:latest}
LINK=${NEO_IMAGE_LINK:-static}
PROFILE=${NEO_IMAGE_PROFILE:-release}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BINS=(neo-node neo)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'docker-image.sh: %s\n' "$*" >&2; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported (the image is $TARGET)"
command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer (docker info)"
case $LINK in static | dynamic) ;; *) die "NEO_IMAGE_LINK must be static or dynamic" ;; esac
case $PROFILE in
release) ;;
debug) LINK=dynamic ;; # the host build: no crt-static, so its libraries go in too
*) die "NEO_IMAGE_PROFILE must be release or debug" ;;
esac

# cargo build of both binaries; $1 = extra RUSTFLAGS.
build() {
    if [ "$PROFILE" = debug ]; then
        # The host target and the package set of .ci/run's `cargo build` (features are
        # unified over the packages named): after it, this compiles nothing.
        cargo build -p neo-chaos -p neo-node -p neo-client
    else
        RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$1" cargo build --release --target "$TARGET" \
            -p neo-node -p neo-client --bin neo-node --bin neo
    fi
}

# True if the ELF file $1 needs no shared library (static or static-pie).
is_static() {
    ! readelf -d "$1" 2>/dev/null | grep -q '(NEEDED)' &&
        ! ldd "$1" 2>/dev/null | grep -q '=>'
}

start=$(date +%s)
if [ "$PROFILE" = debug ]; then
    log "cargo build (debug, dynamic, host target, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
else
    log "cargo build (release, $LINK, target $TARGET, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
fi
if [ "$LINK" = static ] && ! build "-C target-feature=+crt-static"; then
    log "static build failed: falling back to a dynamic build plus the libraries ldd lists"
    LINK=dynamic
fi
if [ "$LINK" = dynamic ]; then
    # Different RUSTFLAGS than the static build: cargo rebuilds everything once.
    build "" || die "cargo build failed"
fi
if [ "$PROFILE" = debug ]; then
    OUT=$CARGO_TARGET_DIR/debug
else
    OUT=$CARGO_TARGET_DIR/$TARGET/release
fi
built=$(date +%s)
log "binaries built in $((built - start)) s"

CTX=$(mktemp -d "${TMPDIR:-/tmp}/neo-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/rootfs/usr/local/bin" "$CTX/data"
cp "$ROOT/docker/Dockerfile" "$CTX/Dockerfile"
for b in "${BINS[@]}"; do
    f=$OUT/$b
    [ -x "$f" ] || die "$f missing after the build"
    cp "$f" "$CTX/rootfs/usr/local/bin/$b"
    # Line tables are kept in release builds (profiles); the image does not need them.
    strip --strip-debug "$CTX/rootfs/usr/local/bin/$b" 2>/dev/null || true
    if [ "$LINK" = static ]; then
        is_static "$f" || die "$f is not static: $(file -b "$f")"
        log "$b: $(file -b "$f")"
    else
        # Copy every library ldd resolves, and the loader, at the same paths.
        ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(0x/ { print $1 }' |
            while read -r lib; do
                mkdir -p "$CTX/rootfs$(dirname "$lib")"
                cp -L "$lib" "$CTX/rootfs$lib"
            done
        log "$b: dynamic, with $(ldd "$f" | grep -c '/') libraries"
    fi
done

previous=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
log "docker build -t $IMAGE"
docker build -q -t "$IMAGE" \
    --label "org.opencontainers.image.title=neo-node" \
    --label "org.opencontainers.image.revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
    --label "neo.link=$LINK" \
    --label "neo.profile=$PROFILE" \
    "$CTX" >/dev/null
end=$(date +%s)

id=$(docker image inspect -f '{{.Id}}' "$IMAGE")
# The image this build replaced, now untagged: remove it unless a container uses it.
if [ -n "$previous" ] && [ "$previous" != "$id" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "built in $((end - start)) s (cargo $((built - start)) s, docker $((end - built)) s)"
printf 'image %s\nid %s\nsize %s bytes (%s MiB)\nlink %s\nprofile %s\n' \
    "$IMAGE" "$id" "$size" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" "$LINK" "$PROFILE"
