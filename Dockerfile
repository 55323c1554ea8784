# The service's images, one target each (docker build --target <name>):
#   tracking  the MLflow tracking server (registry, UI, proxied artifacts)   port 5000
#   gateway   the gateway and the `mlflow models serve` scoring servers it starts   port 8000
#   trainer   `mlflow run .`: training, tuning, promotion, the monitor job
#   batch     `mlflow run . -e batch_score`: the trainer with Spark and Java 17
# Each runtime image holds one pinned virtual environment built in a stage of its own
# (byte-compiled there, so a start compiles nothing), the code it runs and nothing else: no
# compiler, no pip cache, no test tools. They run as the unprivileged user `app` (uid 1000).
#
# PYTHON_IMAGE: any Debian-based image with python3.11 and its venv module. The default is
# the official one, at the newest 3.11 patch release and on Debian 12 like the tests' local
# base (the same file builds on a local Debian base where no registry is reached).
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm
# The OCI labels of every image: its repository, the commit it was built from
# (`--build-arg REVISION=$(git rev-parse HEAD)`) and the project's version (pyproject.toml).
ARG SOURCE=unknown
ARG REVISION=unknown
ARG VERSION=0.1.0

# ---- Virtual environments: model.txt first (the heavy, shared part), then each image's own.
# Each file is a lock (`make lock`): every package pinned, at one version across the files,
# with the hashes of its files. pip installs exactly those (--require-hashes, and --no-deps:
# the lock already lists every dependency; `pip check` proves it).
FROM ${PYTHON_IMAGE} AS venv-model
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python3.11 -m venv /opt/venv
COPY requirements/model.txt /tmp/requirements/
# The test suites that numpy, scipy, pandas, pyarrow and scikit-learn ship (about 100 MB)
# are never imported by the service.
RUN pip install --require-hashes --no-deps -r /tmp/requirements/model.txt && pip check \
    && cd /opt/venv/lib/python3.11/site-packages \
    && find numpy scipy pandas pyarrow sklearn -depth -type d -name tests -exec rm -rf {} +

FROM venv-model AS venv-tracking
COPY requirements/tracking.txt /tmp/requirements/
# The tracking and gateway images install nothing at run time: pip and setuptools (about
# 23 MB) leave their venvs, which then hold exactly their lock's pins.
RUN pip install --require-hashes --no-deps -r /tmp/requirements/tracking.txt && pip check \
    && pip uninstall --quiet --yes pip setuptools

FROM venv-model AS venv-gateway
COPY requirements/gateway.txt /tmp/requirements/
RUN pip install --require-hashes --no-deps -r /tmp/requirements/gateway.txt && pip check \
    && pip uninstall --quiet --yes pip setuptools

FROM venv-model AS venv-trainer
COPY requirements/training.txt /tmp/requirements/
# pip stays in the trainer's venv: MLflow records its version in every model it logs.
RUN pip install --require-hashes --no-deps -r /tmp/requirements/training.txt && pip check

# ---- The MLproject and the code its entry points run (the trainer and batch images).
FROM scratch AS project
COPY MLproject conda.yaml /app/
COPY model /app/model
COPY monitoring /app/monitoring
COPY pipelines /app/pipelines

# ---- What every runtime image shares. MLflow's usage telemetry is off in every process of
# every image (MLflow reads both variables); to turn it on, run a container with
# MLFLOW_DISABLE_TELEMETRY=false and DO_NOT_TRACK=false (docs/deployment.md#telemetry).
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin app \
    && mkdir -p /data && chown app /data
WORKDIR /app
# Secrets come as files in /run/secrets: each NAME_FILE naming one becomes NAME, then the
# command runs. Through sh, the script needs no mode bit, whatever checkout it comes from.
COPY deploy/docker/secrets-entrypoint.sh /usr/local/bin/secrets-entrypoint.sh
ENTRYPOINT ["/bin/sh", "/usr/local/bin/secrets-entrypoint.sh"]

FROM runtime AS tracking
LABEL org.opencontainers.image.title="sentiment-mlops-tracking" \
      org.opencontainers.image.description="The MLflow tracking server: registry, UI and proxied artifacts"
COPY --from=venv-tracking /opt/venv /opt/venv
# What runs before the server (`python -m tracking_server.prepare`: the schema, the registry's
# accounts), with the names it shares with the rest of the system.
COPY model/__init__.py model/names.py ./model/
COPY tracking_server ./tracking_server
USER app
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD \
    ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:5000/health', timeout=3)"]
# The stores come from MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION.
CMD ["mlflow", "server", "--serve-artifacts", "--host", "0.0.0.0", "--port", "5000", "--workers", "1"]
# Where the image comes from: last, so that a new revision rebuilds no layer.
ARG SOURCE
ARG REVISION
ARG VERSION
LABEL org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.version="$VERSION"

FROM runtime AS gateway
LABEL org.opencontainers.image.title="sentiment-mlops-gateway" \
      org.opencontainers.image.description="The sentiment gateway and the MLflow scoring servers it supervises"
COPY --from=venv-gateway /opt/venv /opt/venv
# The code belongs to root: the user that runs it cannot change it.
COPY model ./model
COPY monitoring ./monitoring
COPY gateway ./gateway
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD \
    ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GATEWAY_PORT', '8000'), timeout=3)"]
CMD ["python", "-m", "gateway"]
# Where the image comes from: last, so that a new revision rebuilds no layer.
ARG SOURCE
ARG REVISION
ARG VERSION
LABEL org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.version="$VERSION"

FROM runtime AS trainer
LABEL org.opencontainers.image.title="sentiment-mlops-trainer" \
      org.opencontainers.image.description="mlflow run .: training, tuning, promotion and the monitor job"
COPY --from=venv-trainer /opt/venv /opt/venv
COPY --from=project /app ./
USER app
# A one-shot job: it has no port to check. Its exit status is its health.
HEALTHCHECK NONE
CMD ["mlflow", "run", ".", "--env-manager", "local", "--experiment-name", "Sentiment-Analysis"]
# Where the image comes from: last, so that a new revision rebuilds no layer.
ARG SOURCE
ARG REVISION
ARG VERSION
LABEL org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.version="$VERSION"

# ---- Batch scoring on Spark: last, so that building the other targets never builds it.
FROM venv-trainer AS venv-batch
COPY requirements/batch.txt /tmp/requirements/
RUN pip install --require-hashes --no-deps -r /tmp/requirements/batch.txt && pip check

FROM runtime AS batch
LABEL org.opencontainers.image.title="sentiment-mlops-batch" \
      org.opencontainers.image.description="mlflow run . -e batch_score: batch scoring on Spark"
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY --from=venv-batch /opt/venv /opt/venv
COPY --from=project /app ./
USER app
HEALTHCHECK NONE
ENTRYPOINT ["mlflow", "run", ".", "-e", "batch_score", "--env-manager", "local"]
# Where the image comes from: last, so that a new revision rebuilds no layer.
ARG SOURCE
ARG REVISION
ARG VERSION
LABEL org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.version="$VERSION"
