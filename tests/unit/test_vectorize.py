"""The fast vectorizer gives scikit-learn's features exactly, and so the same answers."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from model import vectorize as vectorize_module
from model.ngrams import SentenceNgrams
from model.preprocess import clean_text, function_words
from model.sentiment_model import SentimentModel
from model.vectorize import Vectorize
from pipelines.data import load_reviews, split
from pipelines.features import PRESETS, fit_pipeline, slim
from tests.fitted import fitted as cached_fit

EDGE_CASES = [
    "",
    " ",
    "|",
    "| | |",
    "great",
    "x",
    "x y z",
    "good | good | good good good good",
    "not not_good | not not_good not not_good",
    "a b | c d",
    "great film|bad plot",
    "very very very very good good good very good",
]


@pytest.fixture(scope="module")
def data(pytestconfig):
    """A model fitted on a sample, and every review of the packaged test split, cleaned."""
    splits = split(load_reviews(), 42)
    train = splits.train.sample(4000, random_state=0)
    fitted = [clean_text(text) for text in train["text"].tolist()]
    test = [clean_text(text) for text in splits.test["text"].tolist()]
    labels = train["label"].to_numpy()
    pipeline = slim(
        cached_fit(
            pytestconfig,
            "vectorize-4000",
            lambda t, y: fit_pipeline(PRESETS["best"], t, y),
            fitted,
            labels,
        )
    )
    return pipeline, fitted, splits.test["text"].tolist(), test + EDGE_CASES


def assert_same(fast, slow):
    assert fast.shape == slow.shape and fast.dtype == slow.dtype
    assert fast.has_sorted_indices and slow.has_sorted_indices
    assert fast.indices.dtype == slow.indices.dtype and fast.indptr.dtype == slow.indptr.dtype
    np.testing.assert_array_equal(fast.indptr, slow.indptr)
    np.testing.assert_array_equal(fast.indices, slow.indices)
    np.testing.assert_array_equal(fast.data, slow.data)


def test_the_features_of_every_test_review_are_scikit_learns(data):
    pipeline, _, _, texts = data
    vectorize = Vectorize(pipeline[0])
    assert vectorize.fast and vectorize.prune  # trigrams only where both bigrams are known
    features, words = vectorize(texts)
    assert_same(features, pipeline[0].transform(texts))
    assert words.tolist() == [len(SentenceNgrams().words(text)) for text in texts]


def test_the_answers_to_every_test_review_are_the_pipelines(data):
    pipeline, _, raw, texts = data
    out = SentimentModel(pipeline).predict(None, pd.DataFrame({"text": raw}))
    expected = pipeline.predict_proba(texts[: len(raw)])[:, 1]
    read = out["known_terms"].to_numpy() > 0
    assert read.all()
    assert out["sentiment"].tolist() == np.where(expected >= 0.5, "positive", "negative").tolist()
    confidence = np.where(expected >= 0.5, expected, 1.0 - expected)
    np.testing.assert_array_equal(out["confidence"].to_numpy(), confidence)


@pytest.mark.parametrize(
    "params",
    [
        {"binary": True},
        {"sublinear_tf": False},
        {"norm": "l1"},
        {"norm": None},
        {"use_idf": False},
        {"smooth_idf": False},
        {"dtype": np.float64},
        {"analyzer": SentenceNgrams((1, 2))},
        {"analyzer": SentenceNgrams((2, 3))},
        {"analyzer": SentenceNgrams((1, 1))},
        {"analyzer": SentenceNgrams((1, 4)), "binary": True, "min_df": 1},
        # The seed preset's: function words skipped before n-grams are built.
        {"analyzer": SentenceNgrams((1, 3), skip=function_words())},
        {"max_df": 0.5, "max_features": 2000},
    ],
    ids=str,
)
def test_every_vectorizer_setting_gives_scikit_learns_features(data, params):
    pipeline, fitted, _, texts = data
    vectorizer = clone(pipeline[0]).set_params(**params).fit(fitted[:1000])
    vectorize = Vectorize(vectorizer)
    assert vectorize.fast
    # Pruning the longest n-grams' lookups is exact only for a vocabulary pruned by min_df.
    assert vectorize.prune == ("max_df" not in params and vectorizer.analyzer.ngram_range[1] >= 3)
    assert_same(
        vectorize(texts[:500] + EDGE_CASES)[0], vectorizer.transform(texts[:500] + EDGE_CASES)
    )


def test_a_count_vectorizer_gives_its_counts(data):
    _, fitted, _, texts = data
    vectorizer = CountVectorizer(analyzer=SentenceNgrams((1, 3)), min_df=2).fit(fitted[:1000])
    assert Vectorize(vectorizer).fast
    assert_same(Vectorize(vectorizer)(texts[:500])[0], vectorizer.transform(texts[:500]))


@pytest.mark.parametrize(
    "vectorizer",
    [
        TfidfVectorizer(),
        TfidfVectorizer(ngram_range=(1, 2)),
        TfidfVectorizer(analyzer=SentenceNgrams((1, 2)), vocabulary=["great", "great film"]),
    ],
    ids=["default-analyzer", "default-bigrams", "given-vocabulary"],
)
def test_anything_else_goes_through_scikit_learn(data, vectorizer):
    _, fitted, _, texts = data
    vectorizer.fit(fitted[:1000])
    vectorize = Vectorize(vectorizer)
    assert not vectorize.fast
    features, words = vectorize(texts[:200])
    assert words is None
    assert_same(features, vectorizer.transform(texts[:200]))


def terms_of(vectorizer, words: int) -> list[str]:
    """The vocabulary's terms of ``words`` words, in column order."""
    return sorted(
        (term for term in vectorizer.vocabulary_ if term.count(" ") == words - 1),
        key=vectorizer.vocabulary_.get,
    )


@pytest.mark.parametrize("pruned", [False, True], ids=["few-texts", "large-batch"])
def test_n_grams_stop_at_unknown_words_breaks_and_the_end_of_a_review(data, pruned):
    pipeline, _, _, reviews = data
    vectorizer = pipeline[0]
    trigrams = terms_of(vectorizer, 3)[:40]
    a, b, c = trigrams[0].split()
    unknown = "zzzqx"
    assert unknown not in vectorizer.vocabulary_
    texts = [
        # A trigram would straddle two reviews, cut after its first or its second word.
        f"{a} {b}",
        c,
        a,
        f"{b} {c}",
        # An unknown word, a sentence break, or a single character inside it.
        f"{a} {unknown} {b} {c}",
        f"{a} {b} | {c}",
        f"{a} {b}|{c} {a}",
        f"{a} x {b} y {c} z",
        # Breaks at the start and at the end, a one-word review, nothing but unknown words.
        f"| {a} {b} {c} |",
        f"|{a} {b} {c}|",
        b,
        f"{unknown} {unknown}x {unknown}",
        *trigrams,
    ]
    if pruned:  # enough tokens for the lookups level by level, where pruning allows
        texts += reviews[:40]
    tokens = sum(len(text.replace("|", " | ").split()) for text in texts)
    assert (tokens >= vectorize_module._PRUNE_FROM) == pruned
    vectorize = Vectorize(vectorizer)
    features, words = vectorize(texts)
    assert_same(features, vectorizer.transform(texts))
    assert words.tolist() == [len(SentenceNgrams().words(text)) for text in texts]
    has_trigram = features[:, vectorizer.vocabulary_[trigrams[0]]].toarray().ravel() > 0
    # Single characters are no tokens: they cut nothing.
    assert has_trigram[:10].tolist() == [False] * 7 + [True] * 3


@pytest.mark.parametrize("texts", [[], [""], ["|"], ["x"], ["great"]], ids=str)
def test_tiny_batches_give_scikit_learns_counts(data, texts):
    pipeline, _, _, _ = data
    vectorize = Vectorize(pipeline[0])
    counts, words = vectorize.counts(texts)
    assert_same(counts, CountVectorizer.transform(pipeline[0], texts))
    assert words.tolist() == [len(SentenceNgrams().words(text)) for text in texts]


def test_keys_too_long_for_64_bits_go_through_scikit_learn(data):
    _, fitted, _, texts = data
    vectorizer = TfidfVectorizer(analyzer=SentenceNgrams((1, 7))).fit(fitted[:100])
    vectorize = Vectorize(vectorizer)
    words = {word for term in vectorizer.vocabulary_ for word in term.split()}
    assert (len(words) + 1) ** 7 > 2**63
    assert not vectorize.fast
    features, words = vectorize(texts[:50])
    assert words is None
    assert_same(features, vectorizer.transform(texts[:50]))
