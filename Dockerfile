# syntax=docker/dockerfile:1
# fraudstream worker / CLI image.
#
#   docker build -t fraudstream:local .
#   docker run --rm fraudstream:local --help
#   docker compose up        # the whole stack: see docker-compose.yml
#
# The image holds the project as a user gets it: a normal (non-editable) install of the package,
# its JSON Schemas and other data inside it, dependencies from the runtime lock
# (requirements/runtime.txt: exact versions and hashes). models/ is the registry the image starts
# with (FRAUD_MODELS_DIR=/app/models; a volume in compose).
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

# Dependencies first, in their own layer, so that a source change does not reinstall them.
COPY requirements/runtime.txt /tmp/src/requirements/runtime.txt
RUN pip install --require-hashes -r /tmp/src/requirements/runtime.txt

# The project itself, without dependencies (the lock has them); the source is removed again so
# that nothing can import it from anywhere but site-packages. Fail the build here, not at run time,
# if package data or the entry point is missing.
COPY pyproject.toml README.md LICENSE /tmp/src/
COPY fraudstream /tmp/src/fraudstream
RUN pip install --no-deps /tmp/src \
    && pip check \
    && rm -rf /tmp/src \
    && cd / && fraudstream --version \
    && python -c "from fraudstream.core.messages import SCHEMA_NAMES, load_schema; \
[load_schema(n) for n in SCHEMA_NAMES]"

WORKDIR /app
# Owned by the runtime user: the compose stack trains the champion into this directory (a volume)
# when the build context carried none.
COPY --chown=fraud:fraud models ./models

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
