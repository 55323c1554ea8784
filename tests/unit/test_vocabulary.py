"""The compact vocabulary loads as the same terms and columns, and so the same model."""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from model.preprocess import clean_text
from model.sentiment_model import SentimentModel, _Words
from model.vocabulary import Vocabulary, compact
from pipelines.data import load_reviews
from pipelines.features import PRESETS, build_pipeline, slim


@pytest.fixture(scope="module")
def fitted():
    frame = load_reviews(max_rows=1500)
    texts = [clean_text(text) for text in frame["text"].tolist()]
    pipeline = slim(build_pipeline(PRESETS["best"]).fit(texts, frame["label"].to_numpy()))
    return pipeline, frame["text"].tolist()


def test_a_compact_pipeline_loads_with_the_same_vocabulary_and_answers(fitted, tmp_path):
    pipeline, texts = fitted
    vocabulary = dict(pipeline[0].vocabulary_)
    words = _Words(pipeline[0]).is_word
    before = SentimentModel(pipeline).predict(None, pd.DataFrame({"text": texts}))
    joblib.dump(compact(pipeline), tmp_path / "pipeline.joblib", compress=3)
    loaded = joblib.load(tmp_path / "pipeline.joblib")
    assert type(loaded[0].vocabulary_) is Vocabulary
    assert loaded[0].vocabulary_ == vocabulary
    np.testing.assert_array_equal(loaded[0].vocabulary_.is_word(), words)
    np.testing.assert_array_equal(_Words(loaded[0]).is_word, words)
    after = SentimentModel(loaded).predict(None, pd.DataFrame({"text": texts}))
    pd.testing.assert_frame_equal(after, before)


def test_the_vocabulary_pickles_as_one_string(fitted):
    vocabulary = Vocabulary(fitted[0][0].vocabulary_)
    _, (terms, count) = vocabulary.__reduce__()
    assert isinstance(terms, str) and count == len(vocabulary) > 1000
    assert len(pickle.dumps(vocabulary)) < len(pickle.dumps(dict(vocabulary)))
    assert pickle.loads(pickle.dumps(vocabulary)) == vocabulary


@pytest.mark.parametrize(
    "vocabulary",
    [
        {},
        {"only": 0},
        {"b": 0, "a": 1, "a b": 2},  # columns not in term order
        {"a": np.int64(0), "b": np.int64(1)},  # as scikit-learn leaves them after max_features
        {"a": 0, "c": 2},  # a gap
        {"two\nlines": 0, "x": 1},  # the separator inside a term
    ],
    ids=["empty", "one", "unsorted", "numpy-columns", "gap", "separator"],
)
def test_any_vocabulary_survives_a_round_trip(vocabulary):
    loaded = pickle.loads(pickle.dumps(Vocabulary(vocabulary)))
    assert type(loaded) is Vocabulary and loaded == vocabulary


def test_compact_leaves_other_vocabularies_alone():
    vectorizer = TfidfVectorizer().fit(["a good film", "a bad film"])
    pipeline = build_pipeline(PRESETS["seed"])
    pipeline.steps[0] = ("tfidf", vectorizer)
    assert type(compact(pipeline)[0].vocabulary_) is Vocabulary
    assert compact(vectorizer) is vectorizer  # not a pipeline: unchanged
