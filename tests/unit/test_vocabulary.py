"""The compact vocabulary loads as the same terms and columns, and so the same model."""

import copy
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from model.preprocess import clean_text
from model.sentiment_model import SentimentModel, _Words
from model.vectorize import Vectorize, compact
from model.vocabulary import SEPARATOR, TermKeys, Vocabulary, _from_terms
from pipelines.data import load_reviews
from pipelines.features import PRESETS, build_pipeline, fit_pipeline, slim


@pytest.fixture(scope="module")
def fitted():
    frame = load_reviews(max_rows=1500)
    texts = [clean_text(text) for text in frame["text"].tolist()]
    pipeline = slim(fit_pipeline(PRESETS["best"], texts, frame["label"].to_numpy()))
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


class _PreviousVocabulary(dict):
    """Pickles as the vocabulary did before it carried term keys: terms and count only."""

    def __reduce__(self):
        terms = sorted(self, key=self.__getitem__)
        return (_from_terms, (SEPARATOR.join(terms), len(terms)))


def test_a_pipeline_pickled_before_term_keys_loads_with_the_same_answers(fitted, tmp_path):
    pipeline, texts = fitted
    reviews = pd.DataFrame({"text": texts})
    before = SentimentModel(pipeline).predict(None, reviews)
    previous = copy.deepcopy(pipeline)
    previous[0].vocabulary_ = _PreviousVocabulary(pipeline[0].vocabulary_)
    joblib.dump(previous, tmp_path / "previous.joblib", compress=3)
    loaded = joblib.load(tmp_path / "previous.joblib")
    vocabulary = loaded[0].vocabulary_
    assert type(vocabulary) is Vocabulary and vocabulary.term_keys is None
    assert vocabulary == pipeline[0].vocabulary_
    vectorize = Vectorize(loaded[0])
    assert vectorize.fast and vocabulary.term_keys is vectorize.keys  # built, and kept
    cleaned = [clean_text(text) for text in texts]
    features, _ = vectorize(cleaned)
    assert (features != pipeline[0].transform(cleaned)).nnz == 0
    pd.testing.assert_frame_equal(SentimentModel(loaded).predict(None, reviews), before)


def test_a_compact_pipeline_carries_its_term_keys(fitted, tmp_path):
    pipeline, texts = fitted
    built = TermKeys.build(dict(pipeline[0].vocabulary_))
    joblib.dump(compact(copy.deepcopy(pipeline)), tmp_path / "pipeline.joblib", compress=3)
    loaded = joblib.load(tmp_path / "pipeline.joblib")
    keys = loaded[0].vocabulary_.term_keys
    assert keys is not None and keys.words == built.words
    np.testing.assert_array_equal(keys.keys, built.keys)
    vectorize = Vectorize(loaded[0])
    assert vectorize.keys is keys  # read, not built again
    # The terms' hash table exists before the first call: calls in several threads at once
    # must not race to build it.
    assert "_engine" in vectorize._columns._cache


def test_term_keys_number_words_and_terms():
    keys = TermKeys.build({"a": 0, "b": 1, "a b": 2, "b a b": 3, "b b": 4})
    assert keys.words == ["a", "b"] and keys.base == 3
    assert keys.keys.tolist() == [1, 2, 1 * 3 + 2, (2 * 3 + 1) * 3 + 2, 2 * 3 + 2]  # by column
    assert keys.single.tolist() == [-1, 0, 1, -1]
    loaded = pickle.loads(pickle.dumps(keys))
    assert loaded.numbers == {"a": 1, "b": 2}
    assert loaded.keys.tolist() == keys.keys.tolist() and loaded.single.tolist() == [-1, 0, 1, -1]


@pytest.mark.parametrize(
    "vocabulary",
    [
        {"a  b": 0},  # not words joined by one space
        {" a": 0},
        {"a": 0, "b": 2},  # a gap in the columns
        {" ".join(f"w{i}" for i in range(7)): 0, **{f"x{i}": i + 1 for i in range(700)}},
    ],
    ids=["two-spaces", "leading-space", "gap", "too-long-for-64-bits"],
)
def test_term_keys_refuse_what_they_cannot_number(vocabulary):
    assert TermKeys.build(vocabulary) is None
