# dropguard: multi-stage build, slim Debian runtime, non-root.
#
# Runtime libraries: `ldd target/release/dropguard` lists libc, libm, libgcc_s and
# libz (librdkafka's compression), all part of debian:bookworm-slim, so the runtime
# stage installs nothing but CA certificates (for https webhooks). Re-check with ldd
# when a -sys crate is added. librdkafka is built from source by rdkafka-sys with its
# own configure and make, against zlib's headers.

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends make zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY tests ./tests
RUN cargo build --release --locked --bin dropguard \
 && strip target/release/dropguard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dropguard \
 && useradd --system --uid 10001 --gid dropguard --home-dir /var/lib/dropguard --shell /usr/sbin/nologin dropguard \
 && install -d -o dropguard -g dropguard -m 0700 /var/lib/dropguard \
 && install -d -m 0755 /etc/dropguard
COPY --from=build /src/target/release/dropguard /usr/local/bin/dropguard
COPY config/dropguard.example.toml config/production.toml /etc/dropguard/

USER dropguard:dropguard
ENV DROPGUARD_CONFIG=/etc/dropguard/dropguard.toml
# The state (journal, outbox, checkpoints, local vault) must outlive the
# container; the configuration is mounted read-only at /etc/dropguard.
VOLUME ["/var/lib/dropguard"]
# Inside a container the server must listen beyond loopback: set
# server.listen = "0.0.0.0:9187" in the mounted config.
EXPOSE 9187
# No curl in the image: bash's /dev/tcp is enough for a GET. Assumes the default port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9187 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/dropguard"]
CMD ["run"]
