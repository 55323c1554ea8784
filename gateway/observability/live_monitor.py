"""The gateway's live monitor: the last predictions of each version, and what they say at
scrape time (the monitoring job, pipelines/monitoring_job.py, judges whole periods from the
prediction log; both use the statistics in monitoring/).

The prediction log's writer hands every row it writes to a sliding window per model version
(GATEWAY_MONITOR_WINDOW rows). Gauges are computed when /metrics or /info is read: plain
figures of the window, drift and a label-free accuracy estimate against the reference the
version carries inside its model (`artifacts/reference.json`, read from the gateway's local
copy), and the accuracy measured from feedback (all replicas). A version without a reference
gets the plain figures only.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.observability.feedback import FeedbackStore
from gateway.observability.prediction_log import PredictionLog
from gateway.settings import Settings
from monitoring import drift
from monitoring.log_store.store import Discard, LogStore, open_store
from monitoring.log_store.tables import Prediction

log = logging.getLogger("gateway.monitor")

REFERENCE = Path("artifacts") / "reference.json"
VERDICT_TAGS = ("monitoring.verdict", "monitoring.checked_at", "monitoring.run_id")


class Window:
    """The last ``size`` predictions of each version: (length, known-term ratio, confidence,
    positive), NaN where a value is unknown. Fed by the log's writer thread."""

    def __init__(self, size: int):
        self.size = size
        self._rows: dict[str, deque[tuple[float, float, float, float]]] = {}
        self._lock = threading.Lock()

    def add(self, predictions: list[Prediction]) -> None:
        with self._lock:
            for p in predictions:
                rows = self._rows.get(p.model_version)
                if rows is None:
                    rows = self._rows[p.model_version] = deque(maxlen=self.size)
                rows.append(
                    (
                        math.nan if p.text_length is None else float(p.text_length),
                        math.nan if p.known_term_ratio is None else p.known_term_ratio,
                        p.confidence,
                        1.0 if p.sentiment == "positive" else 0.0,
                    )
                )

    def versions(self) -> list[str]:
        with self._lock:
            return list(self._rows)

    def columns(self, version: str) -> dict[str, np.ndarray]:
        with self._lock:
            rows = list(self._rows.get(version, ()))
        array = np.array(rows, dtype=float).reshape(-1, 4)
        return dict(zip(drift.FEATURES, array.T, strict=True))


@dataclass
class Figures:
    """What monitoring says about one version (the gauges, and /info's `monitoring`)."""

    model_version: str
    window_size: int = 0
    positive_ratio: float | None = None
    confidence_mean: float | None = None
    known_term_ratio: float | None = None
    reference: bool = False
    drift_score: float | None = None
    drift_detected: bool | None = None
    drift_by_feature: dict[str, float] = field(default_factory=dict)
    drift_threshold: float | None = None
    estimated_accuracy: float | None = None
    feedback_total: int = 0
    feedback_accuracy: float | None = None


class References:
    """Each version's reference, read once from its local model copy (None: it has none)."""

    def __init__(self, rollout: Any):
        self._rollout = rollout
        self._loaded: dict[str, dict | None] = {}

    def get(self, label: str) -> dict | None:
        if label in self._loaded:
            return self._loaded[label]
        folder = self._model_dir(label.removeprefix("v"))
        if folder is None:
            return None  # not on disk (yet): asked again next time
        path = folder / REFERENCE
        reference = None
        if path.is_file():
            try:
                reference = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                log.warning("%s: unreadable reference: %s", label, error)
        self._loaded[label] = reference
        return reference

    def _model_dir(self, version: str) -> Path | None:
        """The version's copy in the rollout's model cache; none with an external scoring
        server."""
        cache = getattr(self._rollout, "cache", None)
        return cache.known(version) if cache is not None else None


class LiveMonitor:
    """The prediction log, the live windows, the feedback store and their gauges."""

    def __init__(self, settings: Settings, rollout: Any):
        self.window = Window(settings.monitor_window)
        uri = settings.prediction_log_uri
        self.store: LogStore = (
            open_store(
                uri.get_secret_value() if uri else None,
                settings.monitor_dir,
                settings.replica,
                max_bytes=settings.monitor_log_max_bytes,
                max_age=settings.monitor_log_max_age,
            )
            if settings.prediction_log
            else Discard()
        )
        self.log = PredictionLog(
            self.store,
            settings.replica,
            keep_texts=settings.log_texts,
            retention=settings.monitor_log_retention_days * 86_400.0,
            queue_size=settings.monitor_queue,
            buffer=settings.monitor_log_buffer,
            listeners=[self.window.add],
        )
        self.feedback = FeedbackStore(self.store, self.log)
        self.references = References(rollout)

    def start(self) -> None:
        log.info("prediction log and feedback: %r", self.store)
        self.log.start()
        self.feedback.start()

    def close(self) -> None:
        self.feedback.close()
        self.log.close()

    def figures(self, version: str, measured: dict[str, tuple[int, int]] | None = None) -> Figures:
        figures = Figures(version)
        columns = self.window.columns(version)
        figures.window_size = int(columns["confidence"].size)
        if figures.window_size:
            figures.positive_ratio = float(np.mean(columns["positive"]))
            figures.confidence_mean = float(np.mean(columns["confidence"]))
            ratios = columns["known_term_ratio"][np.isfinite(columns["known_term_ratio"])]
            figures.known_term_ratio = float(np.mean(ratios)) if ratios.size else None
        reference = self.references.get(version)
        if reference is not None:
            figures.reference = True
            result = drift.drift(reference, columns)
            figures.drift_threshold = result.threshold
            if result.score is not None:
                figures.drift_score = result.score
                figures.drift_detected = result.detected
                figures.drift_by_feature = result.by_feature
            figures.estimated_accuracy = drift.estimated_accuracy(reference, columns["confidence"])
        measured = self._measured() if measured is None else measured
        total, right = measured.get(version, (0, 0))
        figures.feedback_total = total
        figures.feedback_accuracy = right / total if total else None
        return figures

    def info(self, version: str, tags: dict[str, str]) -> dict[str, Any]:
        """/info's `monitoring`: the live version's figures and the monitor job's verdict."""
        figures = self.figures(version)
        answer: dict[str, Any] = dict(figures.__dict__)
        answer["window_limit"] = self.window.size
        answer["prediction_log_dropped"] = self.log.dropped
        answer["prediction_log_buffered"] = self.log.buffered
        answer["verdict"] = tags.get("monitoring.verdict")
        answer["checked_at"] = tags.get("monitoring.checked_at")
        if not figures.reference:
            answer["note"] = (
                f"{version} carries no monitoring reference (artifacts/reference.json): "
                "no drift score or estimated accuracy"
            )
        return answer

    def _measured(self) -> dict[str, tuple[int, int]]:
        return self.feedback.accuracy()

    def collect(self):
        """Prometheus collector: the gauges, computed now."""
        measured = self._measured()
        gauges = {
            "positive_ratio": "Share of positive answers in the window.",
            "confidence_mean": "Mean confidence in the window.",
            "known_term_ratio": "Mean share of a text's words the model knows, in the window.",
            "drift_score": "Largest PSI of the window's features against the version's reference.",
            "drift_detected": "1 when the drift score is over the reference's threshold (0.2).",
            "estimated_accuracy": "Accuracy expected from the window's calibrated confidence.",
            "window_size": "Predictions in the window (at most GATEWAY_MONITOR_WINDOW).",
            "feedback_accuracy": "Share of labelled predictions the model got right.",
            "feedback_total": "Predictions labelled through /feedback (all replicas).",
        }
        families = {
            name: GaugeMetricFamily(f"sentiment_{name}", text, labels=["model_version"])
            for name, text in gauges.items()
        }
        for version in sorted(set(self.window.versions()) | set(measured)):
            values = self.figures(version, measured).__dict__
            for name, family in families.items():
                value = values[name]
                if value is not None:
                    family.add_metric([version], float(value))
        yield from families.values()
        yield CounterMetricFamily(
            "sentiment_prediction_log_dropped",
            "Answers whose predictions were not written to the prediction log "
            "(its queue was full, or the store refused writes for longer than its buffer).",
            value=self.log.dropped,
        )
        yield GaugeMetricFamily(
            "sentiment_prediction_log_buffered",
            "Answers held in memory because the store refused a write; written once it answers.",
            value=self.log.buffered,
        )
