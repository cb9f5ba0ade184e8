# The marketd image (S1, S17): one binary, stateless, non-root.
#
#   docker build -t marketd:$(git rev-parse --short HEAD) .
#   docker run --env-file deploy/env/backend.env marketd:TAG            # marketd serve
#   docker run --env-file deploy/env/backend.env marketd:TAG migrate    # same image, embedded migrations
#
# Build stage: Debian 12 with the -dev packages the Makefile links (PKGS) and
# libhiredis-dev for the cache (issue 4). Runtime stage: debian:12-slim with
# only the shared libraries, checked by running `marketd version` at build
# time (a missing library fails the build, not the deploy).
ARG DEBIAN_RELEASE=12

FROM debian:${DEBIAN_RELEASE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config python3 python3-yaml \
      libpq-dev libh2o-evloop-dev libsodium-dev libjansson-dev libssl-dev libhiredis-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what `make build` reads (.dockerignore keeps the rest out), least
# changing first for the layer cache.
COPY Makefile ./
COPY scripts/embed-migrations.sh scripts/embed-seed-data.sh scripts/embed-openapi.py scripts/
COPY api/openapi.yaml api/
COPY migrations/ migrations/
COPY src/ src/
# migrations/*.sql are compiled into the binary (build/gen/migrations_embed.c).
RUN make -j"$(nproc)" build \
 && strip --strip-debug -o /marketd build/release/marketd \
 && /marketd version

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# The runtime halves of the build stage's -dev packages; ca-certificates for
# sslmode=verify-full against managed databases (docs/deploy.md).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libpq5 libh2o-evloop0.13 libsodium23 libjansson4 libssl3 libhiredis0.14 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 marketd \
 && useradd --system --uid 10001 --gid marketd --home-dir /var/lib/marketd --no-create-home \
      --shell /usr/sbin/nologin marketd \
 && install -d -o marketd -g marketd -m 0755 /var/lib/marketd /var/lib/marketd/media
COPY --from=build /marketd /usr/local/bin/marketd
COPY deploy/docker/healthcheck.sh /usr/local/bin/marketd-healthcheck
RUN chmod 0755 /usr/local/bin/marketd-healthcheck \
 && /usr/local/bin/marketd version

# Defaults that suit a container; everything else comes from the
# environment (README.md "Configuration", deploy/env/backend.env.example).
# MEDIA_DIR is a volume shared with nginx (compose) or a ReadWriteMany PVC
# (Kubernetes): the backend itself stays stateless.
ENV LISTEN=0.0.0.0:8080 \
    MEDIA_DIR=/var/lib/marketd/media
WORKDIR /var/lib/marketd
USER 10001:10001
EXPOSE 8080
# SIGTERM drains in-flight requests for up to SHUTDOWN_TIMEOUT_MS (10 s):
# give the container longer than that to stop (compose stop_grace_period,
# Kubernetes terminationGracePeriodSeconds, ECS stopTimeout).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/marketd-healthcheck"]
ENTRYPOINT ["/usr/local/bin/marketd"]
CMD ["serve"]
