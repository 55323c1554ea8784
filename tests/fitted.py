"""Pipelines the unit tests fit, kept in pytest's cache between runs while what fits them is
unchanged: the texts and labels, the model's and the presets' code, and the libraries."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The code a fitted pipeline depends on: its steps and the presets that configure them.
SOURCES = [
    *sorted((ROOT / "model").glob("*.py")),
    ROOT / "pipelines" / "features.py",
    ROOT / "pipelines" / "segments.py",
]
LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib")


def fitted(
    config: pytest.Config,
    name: str,
    build: Callable[..., Any],
    texts: Sequence[str],
    labels: np.ndarray,
    validation: tuple[Sequence[str], np.ndarray] | None = None,
):
    """``build(texts, labels)``, a fitted pipeline (with ``validation=`` when given: the rows a
    length-aware classifier calibrates on), from the cache if it holds this fit."""

    def fit():
        return build(texts, labels, **({"validation": validation} if validation else {}))

    cache = getattr(config, "cache", None)  # None with `-p no:cacheprovider`
    if cache is None:
        return fit()
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    for library in LIBRARIES:
        digest.update(f"{library}=={version(library)}\n".encode())
    digest.update("\0".join(texts).encode())
    digest.update(np.ascontiguousarray(labels).tobytes())
    if validation is not None:
        digest.update(("\1" + "\0".join(validation[0])).encode())
        digest.update(np.ascontiguousarray(validation[1]).tobytes())
    path = cache.mkdir("fitted") / f"{name}-{digest.hexdigest()[:24]}.joblib"
    if path.exists():
        return joblib.load(path)
    for stale in path.parent.glob(f"{name}-*.joblib"):
        stale.unlink()
    pipeline = fit()
    joblib.dump(pipeline, path)
    return pipeline
