"""Prometheus: request counts, errors and latency, plus the rollout state read at scrape time."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.serving.rollout import Controller
from gateway.serving.scoring import Scorer

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """Prometheus series for requests, plus the rollout state read at scrape time."""

    def __init__(self, rollout: Controller, scorer: Scorer):
        self.registry = CollectorRegistry()
        labels = ["endpoint", "method", "status"]
        self.requests = Counter(
            "gateway_requests", "HTTP requests answered.", labels, registry=self.registry
        )
        self.errors = Counter(
            "gateway_errors",
            "HTTP requests answered with 4xx or 5xx.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer, by endpoint.",
            ["endpoint"],
            buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.registry.register(_State(rollout, scorer))
        self._series: dict[tuple[str, str, int], tuple] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        # The series of each (endpoint, method, status) are looked up once: `.labels()` costs
        # more than the increment itself.
        key = (endpoint, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(endpoint, method, status),
                self.errors.labels(endpoint, method, status) if status >= 400 else None,
                self.latency.labels(endpoint),
            )
        requests, errors, latency = series
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _State:
    def __init__(self, rollout: Controller, scorer: Scorer):
        self.rollout, self.scorer = rollout, scorer

    def collect(self):
        live = self.rollout.live
        version = int(live.version) if live and live.version.isdigit() else 0
        yield GaugeMetricFamily(
            "gateway_model_version", "Registry version being served (0: none).", value=version
        )
        rollouts = CounterMetricFamily(
            "gateway_rollouts",
            "Attempts to bring a version up, and crashes.",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), count in self.rollout.outcomes.items():
            rollouts.add_metric([kind, outcome], count)
        yield rollouts
        yield CounterMetricFamily(
            "gateway_scoring_calls", "Calls made to /invocations.", value=self.scorer.calls
        )
        yield CounterMetricFamily(
            "gateway_scoring_rows", "Reviews sent to /invocations.", value=self.scorer.rows
        )
        yield GaugeMetricFamily(
            "gateway_batch_waiting",
            "Texts waiting for a call slot (at GATEWAY_MAX_QUEUE, /predict answers 503).",
            value=self.scorer.waiting,
        )
