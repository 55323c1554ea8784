"""The drift statistic, its threshold and the label-free accuracy estimate, on synthetic data."""

import json

import numpy as np
import pytest

from monitoring.drift import MIN_ROWS, THRESHOLD, drift, estimated_accuracy, psi, summarise


def reviews(rng, rows, *, length=(6.5, 0.6), known=(12, 2), positive=0.5):
    """Rows that look like scored IMDB reviews: log-normal lengths, most words known, and a
    model whose confidence is calibrated (right with probability equal to its confidence)."""
    confidence = rng.uniform(0.5, 1.0, rows)
    return {
        "text_length": np.round(rng.lognormal(*length, rows)),
        "known_term_ratio": rng.beta(*known, rows),
        "confidence": confidence,
        "positive": (rng.random(rows) < positive).astype(float),
        "correct": (rng.random(rows) < confidence).astype(float),
    }


@pytest.fixture(scope="module")
def reference():
    rows = reviews(np.random.default_rng(0), 4000)
    summary = summarise(
        rows["text_length"],
        rows["known_term_ratio"],
        rows["confidence"],
        rows["positive"],
        rows["correct"],
        {"validation": float(rows["correct"].mean()), "test": 0.75},
    )
    return json.loads(json.dumps(summary))  # as read back from reference.json


def test_the_reference_has_the_designed_layout(reference):
    assert reference["format"] == 1 and reference["rows"] == 4000
    assert reference["drift"] == {"statistic": "psi", "threshold": THRESHOLD}
    for name in ("text_length", "known_term_ratio", "confidence"):
        feature = reference["features"][name]
        assert len(feature["proportions"]) == len(feature["edges"]) + 1 == 10
        assert sum(feature["proportions"]) == pytest.approx(1.0)
    assert reference["features"]["positive"]["proportions"] == pytest.approx([0.5, 0.5], abs=0.03)
    curve = reference["calibration"]
    assert np.all(np.diff(curve["confidence"]) >= 0) and np.all(np.diff(curve["accuracy"]) >= 0)


@pytest.mark.parametrize("seed", range(1, 6))
def test_a_window_from_the_same_distribution_is_not_flagged(reference, seed):
    window = reviews(np.random.default_rng(seed), 1000)
    result = drift(reference, window)
    assert not result.detected
    assert result.score < THRESHOLD / 4, result.by_feature
    assert set(result.by_feature) == {"text_length", "known_term_ratio", "confidence", "positive"}


@pytest.mark.parametrize(
    ("shift", "feature"),
    [
        ({"length": (4.5, 0.6)}, "text_length"),  # one-line product reviews
        ({"known": (2, 6)}, "known_term_ratio"),  # another language: few known words
        ({"positive": 0.9}, "positive"),  # the class balance flipped to mostly positive
    ],
    ids=["shifted lengths", "unknown vocabulary", "flipped class balance"],
)
def test_a_shifted_window_is_flagged_on_the_feature_that_moved(reference, shift, feature):
    result = drift(reference, reviews(np.random.default_rng(7), 1000, **shift))
    assert result.detected
    assert result.score == result.by_feature[feature] > THRESHOLD
    others = {k: v for k, v in result.by_feature.items() if k != feature}
    assert max(others.values()) < THRESHOLD / 4


def test_a_small_window_gets_a_score_but_no_flag(reference):
    window = reviews(np.random.default_rng(8), MIN_ROWS - 1, positive=0.9)
    result = drift(reference, window)
    assert result.score > THRESHOLD and not result.detected and result.rows == MIN_ROWS - 1


def test_missing_features_are_skipped_not_failed(reference):
    window = reviews(np.random.default_rng(9), 1000)
    window["known_term_ratio"] = np.full(1000, np.nan)  # a version that does not report it
    del window["text_length"]
    result = drift(reference, window)
    assert set(result.by_feature) == {"confidence", "positive"}
    assert drift(reference, {"known_term_ratio": [None, None]}).score is None
    assert drift(reference, {}).score is None and not drift(reference, {}).detected


def test_psi_is_zero_for_equal_shares_and_finite_for_empty_bins():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert 0 < psi([1.0, 0.0], [0.0, 1.0]) < 20


@pytest.mark.parametrize("low", [0.5, 0.7, 0.85])
def test_the_estimated_accuracy_of_a_calibrated_model_is_its_true_accuracy(reference, low):
    # Confidence shifts (harder or easier traffic); P(correct | confidence) stays the same.
    rng = np.random.default_rng(int(low * 100))
    confidence = rng.uniform(low, 1.0, 5000)
    correct = rng.random(5000) < confidence
    assert estimated_accuracy(reference, confidence) == pytest.approx(correct.mean(), abs=0.02)


def test_no_predictions_give_no_estimate(reference):
    assert estimated_accuracy(reference, np.empty(0)) is None
