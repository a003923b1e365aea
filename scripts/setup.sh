#!/usr/bin/env bash
# Installs what tidings needs on a fresh Debian machine. Idempotent: every step checks first
# and skips what is already there, so it is cheap to run before every build.
#
#   libclang-dev  bindgen, for librocksdb-sys (and foundationdb-sys with --features fdb)
#   fastavro      the Python Avro library the schema interop tests use (plain Avro readers
#                 and writers must accept tidings' .avsc files)
#   confluent-kafka  the Python Kafka client the cross-language pipeline test produces with
#   tansu 0.6.0   the local Kafka-API broker (crates.io; ~10 min on 2 cores, once per machine)
set -euo pipefail

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if ((${#need_apt[@]})); then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  log "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import fastavro' >/dev/null 2>&1; then
  log "installing fastavro (PyPI) for the schema interop tests"
  python3 -m pip install --quiet --disable-pip-version-check fastavro \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages fastavro
fi

if ! python3 -c 'import confluent_kafka' >/dev/null 2>&1; then
  log "installing confluent-kafka (PyPI) for the cross-language pipeline test"
  python3 -m pip install --quiet --disable-pip-version-check confluent-kafka \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages confluent-kafka
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install a Rust toolchain (rustup) first"
  exit 1
fi

# The broker. Installed into the cargo bin directory; its build gets its own target directory
# (kept, so a reinstall after a cache wipe is incremental) and never blocks tidings' builds.
TANSU_VERSION=0.6.0
if ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  log "installing tansu $TANSU_VERSION, the local Kafka-API broker (about 10 minutes on 2 cores, once)"
  CARGO_TARGET_DIR="$HOME/.cache/tidings-tansu-build" \
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --quiet
fi
log "ready"
