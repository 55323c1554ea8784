"""The shared training steps without a tracking server: what `fit` may see, and its errors."""

import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from model.preprocess import clean_text
from pipelines.data import fingerprint, load_reviews, split
from pipelines.errors import DataError
from pipelines.features import PRESETS, fit_pipeline
from pipelines.promote import TrainedOn
from pipelines.training import Prepared, clean, fit, prepare, refit


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
    with pytest.raises(DataError, match="No term appears in at least 3 of the 8 training reviews"):
        fit(PRESETS["best"], prepared(frame), seed=42)


@pytest.fixture(scope="module")
def data():
    return prepared(load_reviews(max_rows=600))


def test_a_preset_that_asks_is_refitted_on_train_and_val_with_its_validation_figures_kept(data):
    params = PRESETS["best"] | {"C": 4.0}  # the recipe; a small C keeps liblinear quick
    fitted = fit(params, data, seed=42)
    published = refit(fitted, data)
    assert published.fit_on == "train+val" and fitted.fit_on == "train"
    # The validation figures (what champion/challenger compares) stay the train-only fit's.
    assert {k: v for k, v in published.metrics.items() if k != "refit_seconds"} == fitted.metrics
    assert published.metrics["refit_seconds"] > 0
    # The monitoring reference is drawn from the fit that never saw the validation rows.
    assert published.unseen_validation is fitted.pipeline
    assert published.pipeline is not fitted.pipeline
    # The same recipe, fitted on the already-cleaned train+val texts.
    labels = np.concatenate([data.splits.train["label"], data.splits.val["label"]])
    # The calibration is the train-only fit's: fitted on validation, which the refit has seen.
    calibration = fitted.pipeline[-1].calibration
    texts = data.cleaned["train"] + data.cleaned["val"]
    expected = fit_pipeline(params, texts, labels, 42, calibration=calibration)
    assert published.pipeline[0].vocabulary_ == expected[0].vocabulary_
    for head in ("review", "sentence"):
        got, want = getattr(published.pipeline[-1], head), getattr(expected[-1], head)
        assert np.array_equal(got.coef_, want.coef_)
    assert published.pipeline[-1].calibration is calibration
    assert refit(published, data) is published  # refitted once


def test_a_preset_that_does_not_ask_publishes_the_train_only_fit(data):
    fitted = fit(PRESETS["seed"], data, seed=42)
    assert refit(fitted, data) is fitted
    assert fitted.unseen_validation is fitted.pipeline and fitted.fit_on == "train"


def test_best_refits_and_seed_keeps_the_original_recipe():
    assert PRESETS["best"]["refit"] is True and PRESETS["seed"]["refit"] is False


def test_reviews_that_clean_alike_are_kept_once_so_none_is_trained_on_and_held_out(tmp_path):
    """Another case, spacing or punctuation: to the model the same review, which compared raw
    could land in training while its twin is scored in validation or test."""
    rows = []
    for i in range(200):
        word = "zq" + "".join(chr(97 + (i // 26**k) % 26) for k in range(2))
        sentiment = "positive" if i % 2 else "negative"
        adjective = "wonderful" if i % 2 else "dreadful"
        rows.append((f"The film {word} was {adjective}.", sentiment))
        rows.append((f"  the FILM {word} was {adjective}!! ", sentiment))
    reviews = tmp_path / "IMDB Dataset.csv"
    pd.DataFrame(rows, columns=["review", "sentiment"]).to_csv(reviews, index=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run(experiment_id="0"):  # not another test's active experiment
            data = prepare(str(reviews))
    finally:
        mlflow.set_tracking_uri(None)
    held_out = set(data.cleaned["val"]) | set(data.cleaned["test"])
    assert not set(data.cleaned["train"]) & held_out
    assert sum(len(part) for part in (data.splits.train, data.splits.val, data.splits.test)) == 200
    assert data.cleaned["train"] == [clean_text(t) for t in data.splits.train["text"]]
