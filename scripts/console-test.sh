#!/usr/bin/env bash
# Browser test of the web console (tests/console/console_test.py): 3 real nodes,
# headless Chromium via selenium. Needs the debug binaries (neo-node, neo) under
# $CARGO_TARGET_DIR (default ./target), python3 with selenium, /usr/bin/chromium and
# /usr/bin/chromedriver (Debian: apt-get install chromium chromium-driver; pip install
# selenium). Extra arguments go to the test (e.g. --screenshots docs/console).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
for bin in neo-node neo; do
  if [[ ! -x "$target/debug/$bin" ]]; then
    echo "error: $target/debug/$bin missing: cargo build -p neo-node -p neo-client --bins" >&2
    exit 2
  fi
done
exec python3 tests/console/console_test.py --bin-dir "$target/debug" "$@"
