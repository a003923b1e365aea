#!/usr/bin/env bash
# Installs what tidings needs on a fresh Debian machine. Idempotent: every step checks first
# and skips what is already there, so it is cheap to run before every build.
#
#   libclang-dev  bindgen, for librocksdb-sys (and foundationdb-sys with --features fdb)
#   fastavro      the Python Avro library the schema interop tests use (plain Avro readers
#                 and writers must accept tidings' .avsc files)
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

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install a Rust toolchain (rustup) first"
  exit 1
fi
log "ready"
