# syntax=docker/dockerfile:1

# Build and runtime stages are both bookworm so the binary links against the
# same glibc it was built with.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# Dependencies change far less often than the code: compile them against a
# dummy crate first so this layer stays cached across source-only edits.
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names a benchmark target, so its file must exist for cargo to read the manifest.
RUN mkdir src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/throughput.rs \
 && cargo build --release --locked \
 && rm -rf src benches

COPY src ./src
COPY benches ./benches
# COPY keeps the files' original mtimes, which can be older than the dummy
# build; without the touch cargo would consider the crate fresh and ship the
# dummy binary.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked


FROM debian:bookworm-slim

# ca-certificates: TLS to LinkedIn and to amqps:// brokers. Nothing else: the
# health check is done by the binary itself, so no curl.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 job-closer \
 && useradd --uid 10001 --gid job-closer \
      --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin job-closer

COPY --from=build /src/target/release/job-closer /usr/local/bin/job-closer

# Numeric, so orchestrators enforcing runAsNonRoot can verify it without
# reading /etc/passwd.
USER 10001:10001

# The default 127.0.0.1 would be unreachable from outside the container.
ENV METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464

ENTRYPOINT ["job-closer"]
CMD ["run"]
