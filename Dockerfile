# syntax=docker/dockerfile:1
# fraudstream worker / CLI image.
#
#   docker build -t fraudstream:local .
#   docker run --rm fraudstream:local --help
#   docker compose up        # the whole stack: see docker-compose.yml
#
# The package finds its JSON Schemas at <repo root>/schemas, computed from the location of
# fraudstream/core/messages.py. So the source tree lives in /app (fraudstream/, schemas/, models/ side by
# side) and is installed in editable mode: imports resolve to /app/fraudstream, and /app/schemas is
# found. A plain `pip install .` would put `fraudstream` in site-packages, away from schemas/.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: XGBoost's OpenMP runtime, absent from the slim base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user; /data holds the worker's RocksDB table state (a volume in compose, which
# inherits this ownership when it is first created).
RUN groupadd --system --gid 10001 fraud \
    && useradd --system --uid 10001 --gid fraud --home-dir /home/fraud --create-home fraud \
    && mkdir -p /data \
    && chown fraud:fraud /data

WORKDIR /app

# Dependencies first, in their own layer, so that a source change does not reinstall them:
# install the project from a skeleton package, then remove the project itself.
COPY pyproject.toml README.md ./
RUN mkdir -p fraudstream \
    && touch fraudstream/__init__.py \
    && pip install . \
    && pip uninstall -y fraudstream \
    && rm -rf fraudstream build ./*.egg-info

COPY fraudstream ./fraudstream
COPY schemas ./schemas
# Owned by the runtime user: the compose stack trains the champion into this directory (a volume)
# when the build context carried none.
COPY --chown=fraud:fraud models ./models

# Editable install of the real source (no dependency changes); fail the build here, not at run
# time, if the schemas would not be found or the entry point is missing.
RUN pip install --no-deps -e . \
    && python -c "from pathlib import Path; from fraudstream.core.messages import SCHEMA_DIR; \
assert SCHEMA_DIR == Path('/app/schemas') and SCHEMA_DIR.is_dir(), SCHEMA_DIR" \
    && fraudstream --help > /dev/null

# Inside a container the web server must listen on all interfaces: 127.0.0.1 would be the
# container's own loopback, unreachable from nginx, Prometheus and the published port. The
# host-side exposure stays loopback-only through the compose port bindings (127.0.0.1:...).
ENV FRAUD_WEB_HOST=0.0.0.0 \
    FRAUD_WEB_PORT=6066 \
    FRAUD_MODELS_DIR=/app/models \
    FRAUD_DATA_DIR=/data/worker \
    FRAUD_LOG_JSON=true

USER fraud
EXPOSE 6066

ENTRYPOINT ["fraudstream"]
CMD ["worker"]
