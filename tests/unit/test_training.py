"""The shared training steps without a tracking server: what `fit` may see, and its errors."""

import time

import pandas as pd
import pytest

from pipelines.data import DataError, fingerprint, load_reviews, split
from pipelines.features import PRESETS
from pipelines.promote import TrainedOn
from pipelines.training import Prepared, clean, fit


def prepared(frame: pd.DataFrame, seed: int = 42) -> Prepared:
    splits = split(frame, seed)
    trained_on = TrainedOn(fingerprint(frame), seed, 0)
    return Prepared(splits, clean(splits), trained_on, time.perf_counter())


def test_fit_scores_on_validation_only():
    data = prepared(load_reviews(max_rows=600))
    fitted = fit(PRESETS["seed"], data, seed=42)
    assert {m for m in fitted.metrics if m != "fit_seconds"} == {
        "val_accuracy",
        "val_f1",
        "val_precision",
        "val_recall",
        "val_roc_auc",
    }
    assert 0.5 < fitted.metrics["val_f1"] <= 1


def test_a_data_set_with_no_shared_term_is_a_data_error():
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    words += ["golf", "hotel", "india", "juliet", "kilo", "lima"]
    frame = pd.DataFrame({"text": words, "label": [1] * 6 + [0] * 6})
    with pytest.raises(DataError, match="No term appears in at least 2 of the 8 training reviews"):
        fit(PRESETS["best"], prepared(frame), seed=42)
