# One image for every service: tracking server, trainer and gateway (+ scoring servers).
# It installs what training, the gateway and the tracking server need (requirements/
# training.txt, gateway.txt and tracking.txt, each on top of model.txt), and no test tools.
FROM python:3.11.7-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements/model.txt requirements/training.txt requirements/gateway.txt \
     requirements/tracking.txt requirements/
RUN pip install -r requirements/training.txt -r requirements/gateway.txt \
    -r requirements/tracking.txt

RUN useradd --create-home --uid 1000 app && mkdir -p /data && chown app /data
COPY --chown=app MLproject conda.yaml ./
COPY --chown=app model ./model
COPY --chown=app pipelines ./pipelines
COPY --chown=app gateway ./gateway
COPY --chown=app monitoring ./monitoring
USER app

# The tracking server (5000) and the gateway (8000). The scoring servers listen on the
# gateway container's loopback only: they are reached through the gateway.
EXPOSE 5000 8000
CMD ["python", "-m", "gateway"]
