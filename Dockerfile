# The worker image, and a `tools` target for the local stand-ins that docker-compose.yml runs.
#
#   docker build -t fraud-detection-worker:local .                      # the worker (last stage)
#   docker build --target tools -t fraud-detection-tools:local .        # poller, Slack stand-in, init
#
# Stages: builder (wheels; the only stage with a C compiler) -> base (python slim, no compiler,
# the project and its pinned dependencies installed from those wheels alone) -> tools, worker.
#
# Pins. The base image by exact tag and by the digest of its multi-architecture index (refresh
# both together: `docker buildx imagetools inspect python:3.11.X-slim-bookworm`). Every Python
# package by exact version in requirements.lock (setup.cfg's pins and everything they pull in,
# from `python -m infra.checks.containers lock`); pip installs with --no-index, so a package
# missing from the lock fails the build instead of being resolved from PyPI.
#
# Needs BuildKit (RUN --mount; the default builder since Docker 23 and in Compose v2).
# `make test` lints this file (hadolint and infra/checks/containers.py); no image is built there.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Every locked package has a manylinux wheel for amd64, but on arm64 faust-streaming and
# hdrhistogram build from source. Debian's versions are not pinned: bookworm drops superseded
# ones, and nothing of this stage but the wheels reaches the image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY requirements.lock /wheels/
RUN pip wheel --no-deps --wheel-dir /wheels -r /wheels/requirements.lock
COPY pyproject.toml setup.cfg README.md ./
COPY app ./app
COPY tables ./tables
COPY agents ./agents
COPY lambdas ./lambdas
RUN pip wheel --no-deps --wheel-dir /wheels/project .

FROM ${PYTHON_IMAGE} AS base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1
# A fixed UID/GID (10001), so volume ownership is the same on every host. The data
# directories exist in the image with that owner, so a fresh named volume inherits it.
RUN groupadd --system --gid 10001 fraud \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fraud \
    && mkdir -p /var/lib/fraud-detection/worker /var/lib/fraud-detection/archive \
    && chown -R 10001:10001 /var/lib/fraud-detection
# The wheels are bind-mounted, not copied, so no layer keeps them. Only the wheel
# directories are indexes: the versions there are the locked ones.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels --find-links=/wheels/project \
        -c /wheels/requirements.lock fraud-detection
ENV PYTHONDONTWRITEBYTECODE=1 \
    FRAUD_DATADIR=/var/lib/fraud-detection/worker \
    FRAUD_ARCHIVE_URL=/var/lib/fraud-detection/archive \
    FRAUD_WEB_BIND=0.0.0.0 \
    FRAUD_WEB_PORT=6066
WORKDIR /srv/fraud-detection

# The notifier's stream poller (`python -m infra.local.stream_poller`, standing in for Lambda's
# event source mapping), the local Slack receiver and compose's one-shot provisioning. infra/
# is not an installed package (setup.cfg), so it is copied here and run from the working
# directory, with the `lambda` extra the Lambda bundles. A separate target keeps both out of
# the worker image.
FROM base AS tools
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels --find-links=/wheels/project \
        -c /wheels/requirements.lock "fraud-detection[lambda]"
COPY infra/__init__.py ./infra/
COPY infra/local ./infra/local
USER 10001:10001
CMD ["python", "-m", "infra.local.stream_poller"]

# The default target. FRAUD_WEB_BIND=0.0.0.0 makes the port reachable through the container's
# interface; publish it on 127.0.0.1 (docker-compose.yml does). With several workers, set
# Faust's WEB_HOST to a name the other workers can reach (the app advertises 127.0.0.1 for a
# 0.0.0.0 bind), so each one's canonical URL is its own.
FROM base AS worker
VOLUME ["/var/lib/fraud-detection/worker", "/var/lib/fraud-detection/archive"]
USER 10001:10001
EXPOSE 6066
# No curl in the slim image: Python's urllib. A 503 (unhealthy) or no answer exits 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FRAUD_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["faust", "-A", "app"]
CMD ["worker", "-l", "info"]
