"""How far live traffic has moved from a model's validation data, and how right it likely is.

Imports numpy and the standard library only: the gateway imports this module.

A reference (``reference.json``, logged inside each model) holds, per feature, quantile bin
edges taken from the validation split and the share of validation rows in each bin. A window
of live predictions is binned on the same edges and compared bin by bin with the population
stability index (PSI), per feature; the window's drift score is the largest of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

FORMAT = 1
# PSI rule of thumb: below 0.1 the population is stable, 0.1-0.25 is a moderate shift, above
# 0.25 a major one. 0.2 flags a shift well before it is major while staying far above the
# sampling noise of a 1,000-row window on 10 bins (about 0.01; (bins - 1) / rows in theory).
THRESHOLD = 0.2
# Below this many rows the noise alone nears the threshold ((10 - 1) / 100 = 0.09 on average
# per feature, and the score is the largest of several): a score is given, never a flag.
MIN_ROWS = 200
BINS = 10
# Stands in for an empty bin's share, so that PSI stays finite.
EPSILON = 1e-4
# Per feature, how its raw values are binned: lengths span orders of magnitude.
CONTINUOUS = {"text_length": np.log1p, "known_term_ratio": None, "confidence": None}
FEATURES = (*CONTINUOUS, "positive")


@dataclass(frozen=True)
class Drift:
    """``score`` is None when no feature could be compared (an empty window)."""

    score: float | None
    by_feature: dict[str, float] = field(default_factory=dict)
    detected: bool = False
    rows: int = 0
    threshold: float = THRESHOLD


def summarise(
    text_length,
    known_term_ratio,
    confidence,
    positive,
    correct,
    accuracy: Mapping[str, float],
) -> dict:
    """The content of ``reference.json`` for a model's validation rows.

    ``text_length``'s edges are on ``log1p(length)``: lengths span orders of magnitude.

    The calibration curve is an isotonic fit of correctness on confidence (scikit-learn,
    imported here only: training calls this, the gateway never does), kept as its points so
    that reading it needs nothing but ``np.interp``.
    """
    from sklearn.isotonic import IsotonicRegression

    columns = {
        "text_length": _finite(text_length),
        "known_term_ratio": _finite(known_term_ratio),
        "confidence": _finite(confidence),
    }
    features = {}
    for name, values in columns.items():
        transform = CONTINUOUS[name]
        values = transform(values) if transform else values
        edges = _edges(values)
        features[name] = {"edges": edges.tolist(), "proportions": _shares(values, edges).tolist()}
    features["positive"] = {"proportions": _class_shares(_finite(positive)).tolist()}
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        confidence, correct
    )
    return {
        "format": FORMAT,
        "rows": int(len(confidence)),
        "features": features,
        "calibration": {
            "confidence": isotonic.X_thresholds_.astype(float).tolist(),
            "accuracy": isotonic.y_thresholds_.astype(float).tolist(),
        },
        "accuracy": {name: float(value) for name, value in accuracy.items()},
        "drift": {"statistic": "psi", "threshold": THRESHOLD},
    }


def drift(reference: Mapping, window: Mapping[str, np.ndarray]) -> Drift:
    """Compares a window with a reference, feature by feature.

    ``window`` maps feature names (``text_length``, ``known_term_ratio``, ``confidence``,
    ``positive``: 1 for a positive answer, 0 otherwise) to one value per prediction. Missing
    values (NaN, None: a version that does not report a feature) are dropped; a feature with
    none left, or absent from either side, is skipped. ``detected`` needs the score above the
    threshold and at least ``MIN_ROWS`` rows.
    """
    threshold = float(reference.get("drift", {}).get("threshold", THRESHOLD))
    features = reference.get("features", {})
    by_feature: dict[str, float] = {}
    rows = 0
    for name in FEATURES:
        if name not in features or window.get(name) is None:
            continue
        values = _finite(window[name])
        if values.size == 0:
            continue
        rows = max(rows, int(values.size))
        expected = np.asarray(features[name]["proportions"], dtype=float)
        if name == "positive":
            actual = _class_shares(values)
        else:
            transform = CONTINUOUS[name]
            values = transform(values) if transform else values
            actual = _shares(values, np.asarray(features[name]["edges"], dtype=float))
        by_feature[name] = psi(expected, actual)
    if not by_feature:
        return Drift(score=None, threshold=threshold)
    score = max(by_feature.values())
    return Drift(
        score=score,
        by_feature=by_feature,
        detected=bool(score > threshold and rows >= MIN_ROWS),
        rows=rows,
        threshold=threshold,
    )


def estimated_accuracy(reference: Mapping, confidence) -> float | None:
    """Confidence-based performance estimation (CBPE): the mean of each prediction's
    calibrated probability of being right. Label-free; holds while P(correct | confidence)
    is that of the validation data, that is, under covariate shift but not concept shift.
    None for an empty window."""
    values = _finite(confidence)
    if values.size == 0:
        return None
    curve = reference["calibration"]
    return float(np.mean(np.interp(values, curve["confidence"], curve["accuracy"])))


def psi(expected, actual) -> float:
    """Population stability index of two distributions over the same bins."""
    expected = _floor(np.asarray(expected, dtype=float))
    actual = _floor(np.asarray(actual, dtype=float))
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _finite(values) -> np.ndarray:
    array = np.asarray(
        [np.nan if v is None else v for v in values]
        if not isinstance(values, np.ndarray)
        else values,
        dtype=float,
    ).ravel()
    return array[np.isfinite(array)]


def _edges(values: np.ndarray) -> np.ndarray:
    """Inner cut points at the deciles; ties (a mass at 0.5 or 1.0) merge bins."""
    if values.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin; a value equal to an edge falls in the bin above it."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return counts / max(values.size, 1)


def _class_shares(positive: np.ndarray) -> np.ndarray:
    share = float(np.mean(positive > 0.5)) if positive.size else 0.0
    return np.array([1.0 - share, share])


def _floor(shares: np.ndarray) -> np.ndarray:
    shares = np.maximum(shares, EPSILON)
    return shares / shares.sum()
