#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
cargo test --workspace --locked "$@"
