# The tidings binary with the FoundationDB adapter, for docker-compose.yml.
#
#   docker build -t tidings:latest .
#
# Build stage: Rust on Debian with libclang (bindgen, for librocksdb-sys and foundationdb-sys)
# and the FoundationDB client package (libfdb_c, linked by the `fdb` feature).
FROM rust:1-bookworm AS build
ARG FDB_VERSION=7.3.43
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev clang cmake ca-certificates curl \
 && curl -fsSL -o /tmp/fdb-clients.deb \
      "https://github.com/apple/foundationdb/releases/download/${FDB_VERSION}/foundationdb-clients_${FDB_VERSION}-1_amd64.deb" \
 && dpkg -i /tmp/fdb-clients.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/fdb-clients.deb
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tidings-tools --features fdb \
 && cp target/release/tidings /usr/local/bin/tidings

# Run stage: the binary and libfdb_c only.
FROM debian:bookworm-slim
ARG FDB_VERSION=7.3.43
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL -o /tmp/fdb-clients.deb \
      "https://github.com/apple/foundationdb/releases/download/${FDB_VERSION}/foundationdb-clients_${FDB_VERSION}-1_amd64.deb" \
 && dpkg -i /tmp/fdb-clients.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/fdb-clients.deb \
 && useradd --system --create-home tidings \
 && mkdir -p /var/lib/tidings /var/log/tidings \
 && chown tidings /var/lib/tidings /var/log/tidings
COPY --from=build /usr/local/bin/tidings /usr/local/bin/tidings
USER tidings
ENV TIDINGS_LOG=info
ENTRYPOINT ["tidings"]
CMD ["--help"]
