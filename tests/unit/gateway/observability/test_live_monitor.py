"""The live windows and what the gauges and /info say from them, against a reference read from
a model copy on disk (a stand-in for the rollout's model cache: only `known()` is asked)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.logs import REQUEST_ID
from gateway.observability.live_monitor import LiveMonitor, Window
from gateway.settings import Settings
from monitoring import drift
from monitoring.log_store.files import SQLiteFiles
from monitoring.log_store.tables import Prediction

RNG = np.random.default_rng(3)


def prediction(version="v3", length=800, ratio=0.9, confidence=0.9, sentiment="positive"):
    return Prediction("t", "r", 0, "/predict", "gw", version, sentiment, confidence, length, ratio)


def reference() -> dict:
    """Validation-like rows: long texts, mostly known words, a calibrated model."""
    rows = 2000
    confidence = RNG.uniform(0.5, 1.0, rows)
    return drift.summarise(
        text_length=RNG.lognormal(6.8, 0.6, rows),
        known_term_ratio=RNG.beta(20, 2, rows),
        confidence=confidence,
        positive=RNG.integers(0, 2, rows),
        correct=RNG.random(rows) < confidence,
        accuracy={"validation": 0.75, "test": 0.75},
    )


@pytest.fixture
def monitor(tmp_path):
    """Versions 3 (with a reference) and 4 (without) in a model cache folder."""
    root = tmp_path / "models"
    for version, ref in (("3", reference()), ("4", None)):
        copy = root / f"{version}-0123456789abcdef"
        (copy / "artifacts").mkdir(parents=True)
        (copy / "MLmodel").write_text("flavors: {}\n")
        if ref is not None:
            (copy / "artifacts" / "reference.json").write_text(json.dumps(ref))
    settings = Settings(_env_file=None, monitor_dir=tmp_path / "monitoring", monitor_window=400)

    def known(version: str) -> Path | None:
        return next((p for p in root.glob(f"{version}-*") if (p / "MLmodel").is_file()), None)

    router = SimpleNamespace(cache=SimpleNamespace(known=known))
    watched = LiveMonitor(settings, router)
    watched.start()
    yield watched
    watched.close()


def in_domain(version: str, rows: int) -> list[Prediction]:
    return [
        prediction(
            version,
            length=int(RNG.lognormal(6.8, 0.6)),
            ratio=float(RNG.beta(20, 2)),
            confidence=float(RNG.uniform(0.5, 1.0)),
            sentiment=str(RNG.choice(["positive", "negative"])),
        )
        for _ in range(rows)
    ]


def samples(monitor: LiveMonitor) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(monitor)
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found[sample.name, sample.labels.get("model_version", "")] = sample.value
    return found


def test_the_window_keeps_the_last_predictions_of_each_version():
    window = Window(3)
    window.add([prediction("v1", length=n) for n in range(5)] + [prediction("v2", ratio=None)])
    assert list(window.columns("v1")["text_length"]) == [2, 3, 4]
    assert np.isnan(window.columns("v2")["known_term_ratio"]).all()
    assert window.columns("v9")["confidence"].size == 0
    assert sorted(window.versions()) == ["v1", "v2"]


def test_traffic_like_the_reference_is_not_drift(monitor):
    monitor.window.add(in_domain("v3", 400))
    figures = monitor.figures("v3")
    assert figures.reference and figures.window_size == 400
    assert figures.drift_score < drift.THRESHOLD and figures.drift_detected is False
    assert figures.estimated_accuracy == pytest.approx(0.75, abs=0.05)


def test_short_texts_of_unknown_words_are_drift(monitor):
    monitor.window.add(in_domain("v3", 400))
    monitor.window.add([prediction("v3", length=40, ratio=0.3) for _ in range(400)])
    figures = monitor.figures("v3")
    assert figures.drift_detected is True
    assert figures.drift_by_feature["text_length"] > drift.THRESHOLD
    assert figures.drift_by_feature["known_term_ratio"] > drift.THRESHOLD
    assert samples(monitor)["sentiment_drift_detected", "v3"] == 1


def test_a_version_without_reference_gets_the_plain_gauges_only(monitor):
    monitor.window.add([prediction("v4", confidence=0.8, sentiment="negative")] * 10)
    seen = samples(monitor)
    assert seen["sentiment_window_size", "v4"] == 10
    assert seen["sentiment_positive_ratio", "v4"] == 0
    assert seen["sentiment_confidence_mean", "v4"] == pytest.approx(0.8)
    assert ("sentiment_drift_score", "v4") not in seen
    assert ("sentiment_estimated_accuracy", "v4") not in seen
    info = monitor.info("v4", {})
    assert info["reference"] is False and "no monitoring reference" in info["note"]
    assert info["drift_score"] is None and info["verdict"] is None


def test_an_external_scoring_server_has_no_reference(tmp_path):
    settings = Settings(_env_file=None, monitor_dir=tmp_path)
    monitor = LiveMonitor(settings, SimpleNamespace())  # the External controller has no cache
    monitor.window.add([prediction("unknown")])
    assert monitor.figures("unknown").reference is False


def test_feedback_and_the_verdict_show(monitor):
    answer = [{"sentiment": "positive", "confidence": 0.9}] * 4
    token = REQUEST_ID.set("labelled")
    try:
        monitor.log.record("/predict/batch", "v3", answer, ["t"] * 4)
    finally:
        REQUEST_ID.reset(token)
    for item, label in enumerate(["positive", "positive", "positive", "negative"]):
        monitor.feedback.submit("labelled", item, label, None)
    seen = samples(monitor)
    assert seen["sentiment_feedback_total", "v3"] == 4
    assert seen["sentiment_feedback_accuracy", "v3"] == 0.75
    assert seen["sentiment_prediction_log_dropped_total", ""] == 0
    assert seen["sentiment_prediction_log_buffered", ""] == 0
    info = monitor.info("v3", {"monitoring.verdict": "drift", "monitoring.checked_at": "t"})
    assert (info["verdict"], info["feedback_total"], info["window_size"]) == ("drift", 4, 4)
    assert (info["prediction_log_dropped"], info["prediction_log_buffered"]) == (0, 0)


def test_the_log_store_and_its_files_are_where_the_settings_say(monitor, tmp_path):
    assert isinstance(monitor.store, SQLiteFiles)
    assert monitor.feedback.store is monitor.store and monitor.log.store is monitor.store
    monitor.log.record("/predict", "v3", [{"sentiment": "positive", "confidence": 0.9}], ["t"])
    assert monitor.log.flush()
    assert monitor.store.path.is_relative_to(tmp_path / "monitoring" / "predictions")


def test_answers_held_while_the_store_refuses_writes_show_until_written(monitor, tmp_path):
    """A database restart or a full disk: the answers wait in memory, and the gauge and /info
    say how many, so that an operator sees the store is down before anything is dropped."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    folder, monitor.store.folder = monitor.store.folder, blocker / "predictions"
    for _ in range(3):
        monitor.log.record("/predict", "v3", [{"sentiment": "positive", "confidence": 0.9}], ["t"])
    assert monitor.log.flush()
    assert samples(monitor)["sentiment_prediction_log_buffered", ""] == 3
    assert monitor.info("v3", {})["prediction_log_buffered"] == 3
    assert samples(monitor)["sentiment_prediction_log_dropped_total", ""] == 0
    monitor.store.folder = folder  # the store answers again: the writer retries on its own
    deadline = time.monotonic() + 10
    while monitor.log.buffered and time.monotonic() < deadline:
        time.sleep(0.05)
    assert samples(monitor)["sentiment_prediction_log_buffered", ""] == 0
    assert len(list(folder.glob("*.sqlite"))) == 1


def test_a_missing_model_copy_is_looked_for_again(monitor, tmp_path):
    assert monitor.references.get("v5") is None
    copy = Path(tmp_path / "models" / "5-fedcba9876543210")
    (copy / "artifacts").mkdir(parents=True)
    (copy / "MLmodel").write_text("flavors: {}\n")
    (copy / "artifacts" / "reference.json").write_text(json.dumps(reference()))
    assert monitor.references.get("v5") is not None
