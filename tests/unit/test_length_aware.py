"""The length-aware classifier: two heads and a calibration, linear end to end."""

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from model.length_aware import LONG, Calibration, LengthAwareClassifier
from model.preprocess import clean_text
from pipelines.data import load_reviews
from pipelines.features import PRESETS, build_pipeline, fit_pipeline

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def fitted():
    frame = load_reviews(max_rows=1500)
    texts = [clean_text(t) for t in frame["text"]]
    return fit_pipeline(PRESETS["best"], texts, frame["label"].to_numpy()), texts


def test_the_best_preset_is_length_aware_and_the_seed_preset_is_not():
    assert isinstance(build_pipeline(PRESETS["best"])[-1], LengthAwareClassifier)
    assert not isinstance(build_pipeline(PRESETS["seed"])[-1], LengthAwareClassifier)


def test_each_answer_is_the_calibration_of_both_heads_and_the_length(fitted):
    pipeline, texts = fitted
    classifier = pipeline[-1]
    rows = texts[:50] + ["great", "awful acting | boring"]
    X = pipeline[:-1].transform(rows)
    inputs = classifier.inputs(X)
    t = np.minimum(np.log1p(np.diff(X.indptr)) / np.log1p(LONG), 1)
    np.testing.assert_allclose(inputs[:, 4], t)
    np.testing.assert_allclose(inputs[:, 0] + inputs[:, 1], classifier.review.decision_function(X))
    weights = classifier.calibration.coef_.ravel()
    assert (weights[:4] >= 0).all()  # no head counts against its own sign
    expected = expit(inputs @ weights + classifier.calibration.intercept_[0])
    np.testing.assert_allclose(pipeline.predict_proba(rows)[:, 1], expected)
    np.testing.assert_allclose(classifier.predict_proba(X).sum(axis=1), 1.0)


def test_the_term_contributions_add_up_to_the_answer_less_what_only_length_sets(fitted):
    pipeline, texts = fitted
    classifier = pipeline[-1]
    X = pipeline[:-1].transform(texts[:20] + ["a great film", "not good at all"])
    weights = classifier.calibration.coef_.ravel()
    t = np.minimum(np.log1p(np.diff(X.indptr)) / np.log1p(LONG), 1)
    # What no term carries: the review head's intercept as the calibration weighs it at this
    # length (the sentence head has none), the length term and the calibration's intercept.
    constant = (
        (weights[0] * (1 - t) + weights[1] * t) * classifier.review.intercept_[0]
        + weights[4] * t
        + classifier.calibration.intercept_[0]
    )
    summed = np.asarray(classifier.contributions(X).sum(axis=1)).ravel()
    np.testing.assert_allclose(summed + constant, classifier.decision_function(X), atol=1e-9)


def test_the_bounded_calibration_fits_what_an_unbounded_one_would_when_it_may():
    rng = np.random.default_rng(0)
    inputs = np.column_stack([rng.normal(size=(4000, 4)), rng.uniform(size=4000)])
    truth = np.array([0.5, 1.0, 1.5, 0.2, -0.3])
    y = (rng.uniform(size=4000) < expit(inputs @ truth + 0.1)).astype(int)
    fitted = Calibration(alpha=0.0).fit(inputs, y)
    unbounded = LogisticRegression(C=np.inf).fit(inputs, y)
    np.testing.assert_allclose(fitted.coef_, unbounded.coef_, atol=1e-3)
    np.testing.assert_allclose(fitted.intercept_, unbounded.intercept_, atol=1e-3)
    against = Calibration().fit(np.column_stack([-inputs[:, :4], inputs[:, 4]]), y)
    assert (against.coef_.ravel()[:4] == 0).all()  # held at the bound, not below it


def test_an_uncalibrated_classifier_says_so(fitted):
    pipeline, _ = fitted
    bare = LengthAwareClassifier(pipeline[-1].review, pipeline[-1].sentence)
    bare.classes_ = pipeline[-1].classes_
    with pytest.raises(ValueError, match="not calibrated"):
        bare.decision_function(pipeline[:-1].transform(["great"]))
