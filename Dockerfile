# syntax=docker/dockerfile:1
# One multi-target Dockerfile for the three images of pingpong-operator:
#
#   docker build --target operator -t ghcr.io/pingpong-operator/operator:0.1.0 .
#   docker build --target ping     -t ghcr.io/pingpong-operator/ping:0.1.0 .
#   docker build --target pong     -t ghcr.io/pingpong-operator/pong:0.1.0 .
#
# Stage `build` compiles all three release binaries in one step; BuildKit reuses that layer for
# the other two targets, and the cache mounts keep the cargo registry and the compiled
# dependencies (target/) between builds, so a source change recompiles only our crates.
# Runtime images are distroless (glibc + libgcc, no shell, no package manager) and run as the
# numeric non-root user 65532.
#
# Build arguments (the defaults are the public images; images/build.sh, behind `make cluster`,
# builds on a machine without a registry):
#   RUST_VERSION   Rust toolchain of the build stage (rust:<version>-bookworm)
#   BUILD_IMAGE    image of the build stage (default rust:${RUST_VERSION}-bookworm)
#   RUNTIME_IMAGE  base of the three runtime images (default distroless cc-debian12:nonroot; any
#                  image with glibc and libgcc of Debian 12 or newer works)
#   BINARIES       build (default): compile in the image; prebuilt: take ping, pong and
#                  pingpong-operator from prebuilt/ in the build context (release binaries built
#                  on a Debian 12 host, as images/build.sh does)

ARG RUST_VERSION=1.95
ARG BUILD_IMAGE=rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=build

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Only what cargo needs: the workspace manifest, the lock file and the member crates.
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY operator ./operator
COPY services ./services
RUN --mount=type=cache,id=pingpong-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=pingpong-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=pingpong-target,target=/src/target,sharing=locked \
    cargo build --release --locked \
      -p pingpong-operator --bin pingpong-operator \
      -p pingpong-ping --bin ping \
      -p pingpong-pong --bin pong \
 && mkdir -p /out \
 && cp target/release/pingpong-operator target/release/ping target/release/pong /out/

FROM scratch AS prebuilt
COPY prebuilt/ping prebuilt/pong prebuilt/pingpong-operator /out/

# The stage the runtime images copy their binary from: `build` or `prebuilt`.
FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.source="https://github.com/pingpong-operator/pingpong-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 65532:65532

FROM runtime AS ping
LABEL org.opencontainers.image.title="pingpong ping" \
      org.opencontainers.image.description="POST /ping: publishes to RabbitMQ, answers after the publisher confirm"
COPY --from=binaries --chown=0:0 --chmod=0755 /out/ping /usr/local/bin/ping
ENV LISTEN_ADDR=0.0.0.0:8001 LOG_FORMAT=json
EXPOSE 8001
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ping"]

FROM runtime AS pong
LABEL org.opencontainers.image.title="pingpong pong" \
      org.opencontainers.image.description="Consumes the queue, stores messages, GET /pong"
COPY --from=binaries --chown=0:0 --chmod=0755 /out/pong /usr/local/bin/pong
ENV LISTEN_ADDR=0.0.0.0:8002 LOG_FORMAT=json
EXPOSE 8002
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pong"]

# Last stage = the default target of a plain `docker build .`.
FROM runtime AS operator
LABEL org.opencontainers.image.title="pingpong-operator" \
      org.opencontainers.image.description="Reconciles PingPongStack custom resources"
COPY --from=binaries --chown=0:0 --chmod=0755 /out/pingpong-operator /usr/local/bin/pingpong-operator
ENV LOG_FORMAT=json
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pingpong-operator"]
CMD ["run"]
