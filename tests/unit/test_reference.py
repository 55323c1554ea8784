"""The reference each model version carries: its validation rows as the model answers them."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.preprocess import clean_text
from monitoring import drift, reference
from pipelines.data import load_reviews, split
from pipelines.features import PRESETS, fit_pipeline, slim


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    splits = split(load_reviews(max_rows=1500), 42)
    pipeline = fit_pipeline(
        PRESETS["best"],
        [clean_text(t) for t in splits.train["text"]],
        splits.train["label"].to_numpy(),
    )
    folder = tmp_path_factory.mktemp("reference")
    paths = reference.write(folder, slim(pipeline), splits.val["text"], splits.val["label"], 0.8)
    return paths, splits.val


def test_both_files_are_written_as_the_model_artifacts_the_design_names(written):
    paths, val = written
    assert {key: p.rsplit("/", 1)[1] for key, p in paths.items()} == {
        "reference": "reference.json",
        "reference_rows": "reference_rows.csv",
    }
    summary = json.loads(Path(paths["reference"]).read_text())
    assert summary["rows"] == len(val) and summary["format"] == 1
    assert summary["accuracy"]["test"] == 0.8
    assert set(summary["features"]) == {"text_length", "known_term_ratio", "confidence", "positive"}


def test_the_rows_hold_statistics_and_labels_but_no_text(written):
    paths, val = written
    rows = pd.read_csv(paths["reference_rows"])
    assert list(rows.columns) == list(reference.COLUMNS)
    assert rows["text_length"].tolist() == [len(t) for t in val["text"]]
    assert set(rows["label"]) == set(rows["sentiment"]) == {"positive", "negative"}
    assert (rows["correct"] == (rows["label"] == rows["sentiment"])).all()
    summary = json.loads(Path(paths["reference"]).read_text())
    assert summary["accuracy"]["validation"] == pytest.approx(rows["correct"].mean())
    text = Path(paths["reference_rows"]).read_text() + Path(paths["reference"]).read_text()
    assert not any(review[:40] in text for review in val["text"])


def test_the_validation_rows_are_not_drift_and_estimate_their_own_accuracy(written):
    paths, _ = written
    summary = json.loads(Path(paths["reference"]).read_text())
    rows = pd.read_csv(paths["reference_rows"])
    window = {
        "text_length": rows["text_length"].to_numpy(float),
        "known_term_ratio": rows["known_term_ratio"].to_numpy(float),
        "confidence": rows["confidence"].to_numpy(float),
        "positive": (rows["sentiment"] == "positive").to_numpy(float),
    }
    result = drift.drift(summary, window)
    assert not result.detected and result.score < 0.01
    # Isotonic calibration fitted on these rows reproduces their accuracy exactly.
    estimate = drift.estimated_accuracy(summary, window["confidence"])
    assert estimate == pytest.approx(rows["correct"].mean(), abs=1e-9)
    assert np.isfinite(estimate)
