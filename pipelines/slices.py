"""Where a model is measured beyond the test split as a whole: the slices every run logs and
every model card shows.

- the test reviews by length in tokens (``TOKENS``);
- short segments cut from the test reviews (``pipelines.segments.closing_segments``);
- the packaged Rotten Tomatoes critic sentences: the ``choose`` half, which promotion's
  short-text rule compares on, and the ``report`` half, measured once per registered version
  and used for nothing else (``pipelines.data.rotten_tomatoes``);
- on each, the expected calibration error of ``confidence`` (``evaluate.ece``), and a
  reliability diagram of all of them as the run's artifact ``evaluation/reliability.png``.

Nothing here is trained on: the test split, its segments and both halves are unseen rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines import evaluate, segments
from pipelines.data import CHOOSE, REPORT, rotten_tomatoes

# Test reviews by whitespace tokens, inclusive bounds; None: no upper bound.
TOKENS = ((0, 20), (21, 100), (101, None))
# The slice promotion's short-text rule compares on (its metric is ``<name>_accuracy``).
SHORT = "rt_choose"
TITLES = {
    "test": "test reviews",
    "segments": "closing segments of the test reviews",
    "rt_choose": "Rotten Tomatoes sentences, choose half",
    "rt_report": "Rotten Tomatoes sentences, report half",
}


def tokens_slice(low: int, high: int | None) -> str:
    return f"test_tokens_{low}_{high}" if high is not None else f"test_tokens_{low}_up"


@dataclass
class Measured:
    """Per slice, its labels and P(positive); ``metrics`` are what the run logs."""

    labels: dict[str, np.ndarray]
    p_positive: dict[str, np.ndarray]
    metrics: dict[str, float]


def measure(
    predict: Callable[[list[str]], np.ndarray], texts: list[str], labels, p_test
) -> Measured:
    """Score the slices with ``predict`` (raw texts -> P(positive)); ``p_test`` is the test
    split's, already computed."""
    y_test, p_test = np.asarray(labels), np.asarray(p_test)
    metrics: dict[str, float] = {}
    sizes = np.array([len(text.split()) for text in texts])
    for low, high in TOKENS:
        inside = (sizes >= low) & (sizes <= high if high is not None else True)
        metrics |= _figures(tokens_slice(low, high), y_test[inside], p_test[inside])
    frames = {
        "segments": segments.closing_segments(texts, y_test),
        "rt_choose": rotten_tomatoes(CHOOSE),
        "rt_report": rotten_tomatoes(REPORT),
    }
    found = {"test": y_test}
    scores = {"test": p_test}
    metrics["test_ece"] = evaluate.ece(y_test, p_test)
    for name, frame in frames.items():
        found[name] = frame["label"].to_numpy()
        scores[name] = np.asarray(predict(frame["text"].tolist()))
        metrics |= _figures(name, found[name], scores[name])
    return Measured(found, scores, metrics)


def _figures(name: str, y_true: np.ndarray, p_positive: np.ndarray) -> dict[str, float]:
    figures: dict[str, float] = {f"{name}_rows": len(y_true)}
    if len(y_true):
        figures[f"{name}_accuracy"] = float(np.mean((p_positive >= 0.5) == y_true))
        figures[f"{name}_ece"] = evaluate.ece(y_true, p_positive)
    return figures


def log(measured: Measured) -> None:
    """The reliability diagram of every slice, as one figure of the active run."""
    evaluate.log_reliability(
        {TITLES[name]: (measured.labels[name], measured.p_positive[name]) for name in TITLES}
    )
