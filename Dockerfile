# One image for every service: tracking server, trainer and gateway (+ scoring server).
FROM python:3.11.7-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN useradd --create-home --uid 1000 app && mkdir -p /data && chown app /data
COPY --chown=app MLproject conda.yaml ./
COPY --chown=app model ./model
COPY --chown=app pipelines ./pipelines
COPY --chown=app gateway ./gateway
USER app

EXPOSE 8000 5001-5003
CMD ["python", "-m", "gateway"]
