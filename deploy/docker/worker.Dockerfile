# syntax=docker/dockerfile:1.7
#
# pixelfarm GPU worker image.
#
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile \
#     --build-arg CUDA_COMPUTE_CAP=89 -t pixelfarm-worker:dev-sm89 .
# CUDA_COMPUTE_CAP is the GPU's compute capability without the dot
# (75 = T4, 80 = A100, 86 = A10/A40, 89 = L4/L40S, 90 = H100/H200).
# Build one image per GPU generation you run and point each worker pool at
# the matching tag. BuildKit picks up worker.Dockerfile.dockerignore.

ARG CUDA_VERSION=12.4.1
ARG UBUNTU_RELEASE=22.04
ARG RUST_VERSION=1.88

# Only used to copy a Rust toolchain out of; nothing from it runs here.
FROM rust:${RUST_VERSION}-bookworm AS rust

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_RELEASE} AS builder
ARG CUDA_COMPUTE_CAP=89
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/cuda/bin:${PATH} \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /src
COPY . .
# LOCKED is deliberately unquoted: it is empty until Cargo.lock is committed.
# hadolint ignore=SC2086
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    LOCKED=""; if [ -f Cargo.lock ]; then LOCKED="--locked"; fi \
    && cargo build --release ${LOCKED} -p pixelfarm-worker --features cuda \
    && mkdir -p /out \
    && cp target/release/pixelfarm-worker /out/

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_RELEASE} AS runtime
ARG CUDA_COMPUTE_CAP=89
LABEL org.opencontainers.image.title="pixelfarm-worker" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai.pixelfarm.cuda-compute-cap="${CUDA_COMPUTE_CAP}"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 pixelfarm \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin pixelfarm \
    && mkdir -p /var/cache/pixelfarm/models \
    && chown -R 65532:65532 /var/cache/pixelfarm
WORKDIR /app
COPY --from=builder --chown=0:0 /out/pixelfarm-worker /usr/local/bin/pixelfarm-worker
# Only the documented defaults: config/local.yaml (the developer setup, with its `dev-key`
# tenant) must never be active in a container. Deployments mount their layer next to it
# (PIXELFARM_ENV=kubernetes); scripts/check-deploy asserts this.
COPY --chown=0:0 config/base.yaml /app/config/base.yaml
ENV PIXELFARM_CONFIG_DIR=/app/config \
    RUST_LOG=info \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HF_HOME=/var/cache/pixelfarm/models \
    XDG_CACHE_HOME=/var/cache/pixelfarm
USER 65532:65532
EXPOSE 9091
# Workers drain on SIGTERM (finish the job in hand within drain_grace_seconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pixelfarm-worker"]
