# Sourced by the project's scripts: one shared build directory across clones and runs, so
# RocksDB (~8 min on 2 cores) and librdkafka are built once per machine. Safe: cargo keys every
# artifact by its inputs; an empty directory just means a full build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidings-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
