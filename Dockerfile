# The tracebridge binary (relay, demo, trace view) on Debian slim.
#   docker build -t tracebridge .
#   docker run --rm tracebridge check --config /etc/tracebridge/compose.toml
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY patches ./patches
COPY src ./src
COPY benches ./benches
COPY examples ./examples
COPY README.md ./
RUN cargo build --release --locked --bin tracebridge

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tracebridge /usr/local/bin/tracebridge
COPY bridge-config /etc/tracebridge
WORKDIR /work
ENTRYPOINT ["tracebridge"]
CMD ["run", "--config", "/etc/tracebridge/compose.toml"]
