"""The pyfunc's predict, on a small model fitted here with the default preset."""

import pandas as pd
import pytest

from model.preprocess import clean_text
from model.sentiment_model import SentimentModel
from model.signature import INPUT_EXAMPLE
from pipelines.data import load_reviews
from pipelines.features import PRESETS, build_pipeline, slim


@pytest.fixture(scope="module")
def model():
    frame = load_reviews(max_rows=3000)
    pipeline = build_pipeline(PRESETS["best"]).fit(
        [clean_text(t) for t in frame["text"]], frame["label"].to_numpy()
    )
    return SentimentModel(slim(pipeline))


def test_predicts_the_input_example(model):
    out = model.predict(None, INPUT_EXAMPLE)
    assert list(out.columns) == ["sentiment", "confidence"]
    assert out["sentiment"].tolist() == ["positive", "negative"]
    assert ((out["confidence"] > 0.5) & (out["confidence"] <= 1.0)).all()


@pytest.mark.parametrize("text", ["", "   ", "!!!", "12 34", "这部电影很好", "Ce film est magnifique"])
def test_degenerate_text_still_gets_a_prediction(model, text):
    out = model.predict(None, pd.DataFrame({"text": [text]}))
    assert out["sentiment"].iloc[0] in {"positive", "negative"}
    assert 0.5 <= out["confidence"].iloc[0] <= 1.0


def test_explain_names_the_terms_that_pushed_the_decision(model):
    out = model.predict(None, INPUT_EXAMPLE, params={"explain": True, "top_terms": 3})
    positive, negative = out["explanation"]
    assert 0 < len(positive) <= 3 and 0 < len(negative) <= 3
    assert positive[0]["weight"] > 0 and negative[0]["weight"] < 0
    assert all(set(item) == {"term", "weight"} for item in positive + negative)
    weights = [abs(item["weight"]) for item in positive]
    assert weights == sorted(weights, reverse=True)


def test_explain_on_text_with_no_known_terms_is_empty(model):
    out = model.predict(None, pd.DataFrame({"text": [""]}), params={"explain": True})
    assert out["explanation"].iloc[0] == []


def test_slim_drops_the_pruned_terms(model):
    assert not hasattr(model.pipeline.named_steps["tfidf"], "stop_words_")
