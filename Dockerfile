# syntax=docker/dockerfile:1
# oidc-gateway: multi-stage build on the slim Python image of the same minor version that
# requirements.lock was compiled for (tests/deploy checks that they agree).
#
#   docker build -t oidc-gateway .
#   docker run --read-only -p 4180:4180 -v "$PWD/config.yaml:/etc/oidc-gateway/config.yaml:ro" oidc-gateway
#
# The runtime image has no compiler, no pip cache and no source tree; it runs as uid 10001, needs
# no writable path (byte code is compiled at build time) and reads /etc/oidc-gateway/config.yaml.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first (a layer that changes only with the lock), every one pinned and hash-checked.
COPY requirements.lock ./
RUN python -m venv /opt/oidc-gateway \
    && /opt/oidc-gateway/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN /opt/oidc-gateway/bin/pip install --no-deps --no-compile . \
    && /opt/oidc-gateway/bin/pip check \
    && /opt/oidc-gateway/bin/python -m compileall -q -j 0 /opt/oidc-gateway/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="oidc-gateway" \
      org.opencontainers.image.description="OpenID Connect reverse-proxy gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 oidc-gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin oidc-gateway
COPY --from=build /opt/oidc-gateway /opt/oidc-gateway
ENV PATH=/opt/oidc-gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OIDC_GATEWAY_CONFIG=/etc/oidc-gateway/config.yaml
USER 10001:10001
EXPOSE 4180
# Liveness from inside the container (no curl in a slim image): the gateway's own /healthz.
# HEALTHCHECK_URL overrides the address when `listen` is not port 4180.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request as u;u.build_opener(u.ProxyHandler({})).open(os.environ.get('HEALTHCHECK_URL','http://127.0.0.1:4180/healthz'),timeout=2)"]
# SIGTERM drains for shutdown_timeout; SIGHUP reloads upstreams and access rules.
STOPSIGNAL SIGTERM
ENTRYPOINT ["oidc-gateway"]
CMD ["run"]
