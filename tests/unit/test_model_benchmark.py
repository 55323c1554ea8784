"""The model benchmark compares like with like: the same answers before and after."""

import pandas as pd

from benchmarks import model as bench
from model.preprocess import clean_text
from model.sentiment_model import SentimentModel
from pipelines.data import load_reviews
from pipelines.features import PRESETS, fit_pipeline, slim


def test_before_is_scikit_learns_transform_with_the_same_answers():
    frame = load_reviews(max_rows=400)
    texts = frame["text"].tolist()
    pipeline = fit_pipeline(
        PRESETS["best"], [clean_text(text) for text in texts], frame["label"].to_numpy()
    )
    old = bench.before(slim(pipeline))
    assert not old._vectorize.fast
    reviews = pd.DataFrame({"text": texts[:50]})
    after = SentimentModel(pipeline).predict(None, reviews)
    pd.testing.assert_frame_equal(old.predict(None, reviews), after)


def test_cpu_us_is_per_row_and_the_best_of_the_runs():
    calls = []
    us = bench.cpu_us({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 10, 3)
    assert calls == ["a", "b"] * 3  # interleaved
    assert set(us) == {"a", "b"} and all(value >= 0 for value in us.values())
