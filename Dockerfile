# syntax=docker/dockerfile:1
#
# S3 encryption gateway image.
#
#   docker build -t s3-encryption-gateway .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /tmp \
#       -v "$PWD/gateway.yaml:/etc/s3gw/gateway.yaml:ro" s3-encryption-gateway
#
# The configuration is read from /etc/s3gw/gateway.yaml ($S3GW_CONFIG); any
# key can be overridden with S3GW_* environment variables, and secrets can be
# mounted as files and named with the *_file keys (see the README). Secret
# files readable by all users or writable by others are refused: give them mode
# 0400/0600 owned by uid 10001, or 0440/0640 with group 10001 (Swarm secrets:
# mode: 0400, uid: "10001"; Kubernetes: defaultMode 0440 with fsGroup 10001).

ARG PYTHON_IMAGE=python:3.12-slim

# --- build: the gateway's wheel and wheels of all its dependencies ----------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY crypto ./crypto
COPY addons ./addons
RUN pip wheel --wheel-dir /wheels .

# --- runtime: no compilers, no sources, no build files -----------------------
FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="s3-encryption-gateway" \
      org.opencontainers.image.description="Transparent encryption proxy for S3-compatible storage (mitmproxy addons)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# HOME=/tmp: mitmproxy keeps its state (~/.mitmproxy) under the home directory,
# and /tmp is the only place that must be writable (a tmpfs or emptyDir when
# the root filesystem is read-only).
# S3GW_LISTEN__HOST: inside a container the gateway must listen on all
# interfaces, whatever the configuration file says.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HOME=/tmp \
    S3GW_CONFIG=/etc/s3gw/gateway.yaml \
    S3GW_LISTEN__HOST=0.0.0.0

RUN groupadd --system --gid 10001 s3gw \
    && useradd --system --uid 10001 --gid s3gw --no-create-home \
        --home-dir /tmp --shell /usr/sbin/nologin s3gw \
    && mkdir -p /etc/s3gw

# The wheels are bind-mounted from the build stage, so they never become a layer.
# `run` starts Python with -O (ADR 0011), which reads .opt-1.pyc files: compiled
# here, since the runtime user cannot write them (a second of start-up otherwise).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels \
        /wheels/s3_encryption_gateway-*.whl \
    && python -O -m compileall -q -j 0 \
        "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8080/healthz', timeout=4); sys.exit(r.status != 200)"]

ENTRYPOINT ["s3-encryption-gateway", "run"]
CMD ["--config", "/etc/s3gw/gateway.yaml"]
