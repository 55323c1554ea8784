"""The reference a model version is watched against: its validation rows as the model answers
them, summarised (``reference.json``, what the gateway and the monitor job compare with) and
kept row by row without their text (``reference_rows.csv``, the drift report's reference).

Both travel inside the logged model (pyfunc artifacts), so whoever has the model has them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from model.names import LABELS
from monitoring import drift

REFERENCE = "reference"
REFERENCE_ROWS = "reference_rows"
FILES = {REFERENCE: "reference.json", REFERENCE_ROWS: "reference_rows.csv"}
COLUMNS = ("text_length", "known_term_ratio", "confidence", "sentiment", "label", "correct")


def scored_rows(pipeline, texts: Sequence[str], labels: Sequence[int]) -> pd.DataFrame:
    """Per text: its length in characters and the served model's answer, against its label."""
    from model.sentiment_model import SentimentModel  # executes set_model: only when needed

    texts = list(texts)
    answers = SentimentModel(pipeline).predict(None, pd.DataFrame({"text": texts}))
    label = np.asarray(LABELS, dtype=object)[np.asarray(labels, dtype=int)]
    return pd.DataFrame(
        {
            "text_length": np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)),
            "known_term_ratio": answers["known_term_ratio"].to_numpy(float),
            "confidence": answers["confidence"].to_numpy(float),
            "sentiment": answers["sentiment"].to_numpy(object),
            "label": label,
            "correct": (answers["sentiment"].to_numpy(object) == label).astype(np.int64),
        },
        columns=list(COLUMNS),
    )


def summary(rows: pd.DataFrame, accuracy: Mapping[str, float]) -> dict:
    return drift.summarise(
        rows["text_length"],
        rows["known_term_ratio"],
        rows["confidence"],
        (rows["sentiment"] == LABELS[1]).astype(float),
        rows["correct"],
        accuracy,
    )


def write(
    directory: Path, pipeline, texts: Sequence[str], labels: Sequence[int], test_accuracy: float
) -> dict[str, str]:
    """Both files for ``pipeline`` on its validation split; returns them as pyfunc artifacts."""
    rows = scored_rows(pipeline, texts, labels)
    accuracy = {"validation": float(rows["correct"].mean()), "test": float(test_accuracy)}
    paths = {key: Path(directory) / name for key, name in FILES.items()}
    paths[REFERENCE].write_text(json.dumps(summary(rows, accuracy), indent=1))
    rows.to_csv(paths[REFERENCE_ROWS], index=False)
    return {key: str(path) for key, path in paths.items()}


def read(model_dir: Path) -> dict | None:
    """A downloaded model's reference; None for a version logged without one."""
    path = Path(model_dir) / "artifacts" / FILES[REFERENCE]
    return json.loads(path.read_text()) if path.is_file() else None


def read_rows(model_dir: Path) -> pd.DataFrame | None:
    path = Path(model_dir) / "artifacts" / FILES[REFERENCE_ROWS]
    return pd.read_csv(path) if path.is_file() else None
