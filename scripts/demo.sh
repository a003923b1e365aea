#!/usr/bin/env bash
# The main job: installs what is missing, builds tidings (release) and runs the demo on the
# embedded default store. Extra arguments go to `tidings demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
cargo build --release --locked --bin tidings
exec "$CARGO_TARGET_DIR/release/tidings" demo "$@"
