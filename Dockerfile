# dropguard: multi-stage build, slim Debian runtime, non-root.
#
# Runtime libraries: `ldd target/release/dropguard` lists only libc, libm and
# libgcc_s, all part of debian:bookworm-slim, so the runtime stage installs nothing
# but CA certificates (for https webhooks). Re-check with ldd when a -sys crate
# (rdkafka, for instance) is added.

FROM rust:1.95-slim-bookworm AS build
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
COPY config/dropguard.example.toml /etc/dropguard/dropguard.example.toml

USER dropguard:dropguard
ENV DROPGUARD_CONFIG=/etc/dropguard/dropguard.toml
# Inside a container the server must listen beyond loopback: set
# server.listen = "0.0.0.0:9187" in the mounted config.
EXPOSE 9187
# No curl in the image: bash's /dev/tcp is enough for a GET. Assumes the default port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9187 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/dropguard"]
CMD ["run"]
