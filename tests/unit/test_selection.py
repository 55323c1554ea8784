"""Model selection's shortcuts: a fold's features from the cached counts are the features the
served pipeline would make, and the McNemar test counts the right reviews."""

import numpy as np
import pytest
from scipy import sparse

from benchmarks import selection
from model.nb_weighting import NaiveBayesWeighting
from pipelines.data import load_reviews, split
from pipelines.features import build_pipeline
from pipelines.training import clean


@pytest.fixture(scope="module")
def cached():
    splits = split(load_reviews(max_rows=800), 42)
    cleaned = clean(splits)
    texts = cleaned["train"] + cleaned["val"]
    labels = np.concatenate([splits.train["label"].to_numpy(), splits.val["label"].to_numpy()])
    counts = selection.count(texts, labels)
    return texts, counts, selection.folds(counts)[0]


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"binary": True, "nb_norm": True},
        {"ngram_range": (1, 2), "min_df": 3, "sublinear_tf": False},
        {"max_df": 0.5, "nb_alpha": 1.0},
    ],
)
def test_a_folds_features_are_those_of_the_pipeline_fitted_on_its_training_rows(cached, change):
    texts, counts, fold = cached
    params = {**selection.PREVIOUS, **change}
    x_train, x_test = selection.features(params, counts, fold)
    pipeline = build_pipeline(params)[:-1]
    expected_train = pipeline.fit_transform(
        [texts[i] for i in fold.train], counts.labels[fold.train]
    )
    expected_test = pipeline.transform([texts[i] for i in fold.test])
    for got, expected in ((x_train, expected_train), (x_test, expected_test)):
        assert got.shape == expected.shape
        assert abs(sparse.csr_matrix(got) - expected).max() < 1e-5


def test_mcnemar_counts_the_reviews_only_one_model_gets_right():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
    before = np.array([1, 0, 0, 0, 0, 1, 1, 0, 1, 0])
    after = np.array([1, 1, 1, 1, 0, 0, 0, 1, 1, 0])
    result = selection.mcnemar(truth, before, after)
    assert (result["only_after_right"], result["only_before_right"]) == (5, 1)
    assert result["p_value"] == pytest.approx(0.21875)  # 2 * P(X <= 1), X ~ Bin(6, 1/2)


def test_nb_norm_gives_unit_rows_with_the_same_direction():
    x = sparse.csr_matrix(np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 4.0]]))
    y = np.array([1, 0])
    plain = NaiveBayesWeighting(alpha=1.0).fit(x, y).transform(x).toarray()
    unit = NaiveBayesWeighting(alpha=1.0, norm=True).fit(x, y).transform(x).toarray()
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0)
    assert np.allclose(unit * np.linalg.norm(plain, axis=1, keepdims=True), plain)


def test_the_choice_is_the_best_mean_and_the_earlier_candidate_on_a_tie():
    rows = [
        {"candidate": "previous best", "cv": {"mean": 0.91, "sd": 0.01}},
        {"candidate": "a", "cv": {"mean": 0.9138, "sd": 0.01}},
        {"candidate": "b", "cv": {"mean": 0.9138 + 1e-9, "sd": 0.001}},
        {"candidate": "c", "cv": {"mean": 0.9120, "sd": 0.0}},
    ]
    assert selection.choose(rows)["candidate"] == "a"


def test_the_learning_curve_keeps_the_held_out_rows_and_counts_only_the_kept_ones(cached):
    _, counts, fold = cached
    (smaller,) = selection.subsample([fold], counts, 0.5)
    assert np.array_equal(smaller.test, fold.test)
    assert len(smaller.train) == round(0.5 * len(fold.train))
    assert set(smaller.train) <= set(fold.train)
    assert (smaller.df <= fold.df).all() and smaller.df.sum() < fold.df.sum()
