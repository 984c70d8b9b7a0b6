# syntax=docker/dockerfile:1.7
#
# pixelfarm scheduler image (no CUDA).
#
# Build from the repository root (the build context must be the workspace):
#   docker build -f deploy/docker/scheduler.Dockerfile -t pixelfarm-scheduler:dev .
# BuildKit picks up deploy/docker/scheduler.Dockerfile.dockerignore automatically.
#
# The same image runs the API/scheduler (`pixelfarm-scheduler serve`, the
# default), the migration hook (`pixelfarm-scheduler migrate`) and tenant
# administration (`pixelfarm-scheduler tenant create NAME`). It also carries
# the `pixelfarm` CLI for in-cluster debugging.

ARG RUST_VERSION=1.88
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# sqlx compile-time checks must not need a live database inside the build.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
COPY . .
# Cache mounts keep the registry and target dir between builds; binaries are
# copied out of the cached target dir inside the same RUN.
# LOCKED is deliberately unquoted: it is empty until Cargo.lock is committed.
# hadolint ignore=SC2086
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    LOCKED=""; if [ -f Cargo.lock ]; then LOCKED="--locked"; fi \
    && cargo build --release ${LOCKED} -p pixelfarm-scheduler -p pixelfarm-cli \
    && mkdir -p /out \
    && cp target/release/pixelfarm-scheduler target/release/pixelfarm /out/

# distroless/cc ships glibc, libgcc, CA certificates and a `nonroot` user
# (uid/gid 65532); there is no shell, so probes must be httpGet.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="pixelfarm-scheduler" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
COPY --from=builder --chown=0:0 /out/pixelfarm-scheduler /usr/local/bin/pixelfarm-scheduler
COPY --from=builder --chown=0:0 /out/pixelfarm /usr/local/bin/pixelfarm
# Only the documented defaults: config/local.yaml (the developer setup, with its `dev-key`
# tenant) must never be active in a container. Deployments mount their layer next to it
# (PIXELFARM_ENV=kubernetes); scripts/check-deploy asserts this.
COPY --chown=0:0 config/base.yaml /app/config/base.yaml
COPY --chown=0:0 migrations/ /app/migrations/
ENV PIXELFARM_CONFIG_DIR=/app/config \
    RUST_LOG=info
USER 65532:65532
EXPOSE 8080 50051
ENTRYPOINT ["/usr/local/bin/pixelfarm-scheduler"]
CMD ["serve"]
