"""The evaluation's slices: the calibration error, the short segments and the two halves of
the critic sentences."""

import numpy as np
import pandas as pd
import pytest

from model.preprocess import clean_text
from pipelines import evaluate, segments
from pipelines.data import CHOOSE, REPORT, load_reviews, rotten_tomatoes

pytestmark = pytest.mark.unit


def test_ece_is_the_row_weighted_gap_between_confidence_and_accuracy():
    # Two bins: 0.9 stated, 3 of 4 right (gap 0.15); 0.6 stated, 1 of 2 right (gap 0.1).
    p = np.array([0.9, 0.9, 0.1, 0.1, 0.6, 0.4])
    y = np.array([1, 1, 0, 1, 1, 1])
    assert evaluate.ece(y, p) == pytest.approx((4 * 0.15 + 2 * 0.1) / 6)
    assert evaluate.ece(y, np.where(y == 1, 1.0, 0.0)) == 0.0
    assert np.isnan(evaluate.ece([], []))


def test_a_calibrated_scorer_has_a_small_ece_and_an_overconfident_one_a_large_one():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)  # right as often as it says
    assert evaluate.ece(y, p) < 0.02
    overconfident = np.where(p >= 0.5, 0.99, 0.01)
    assert evaluate.ece(y, overconfident) > 0.2


def test_the_halves_are_fixed_disjoint_balanced_and_never_the_imdb_rows():
    choose, report = rotten_tomatoes(CHOOSE), rotten_tomatoes(REPORT)
    assert len(choose) == len(report) > 4000
    assert not set(choose["text"]) & set(report["text"])
    assert abs(choose["label"].mean() - 0.5) < 0.01
    assert not (set(choose["text"]) | set(report["text"])) & set(load_reviews()["text"])
    pd.testing.assert_frame_equal(rotten_tomatoes(CHOOSE), choose)  # the same every call
    with pytest.raises(ValueError, match="half must be"):
        rotten_tomatoes("train")


def test_training_sentences_inherit_their_review_label_and_skip_fragments():
    texts, labels = segments.sentences(["great fun film | ok | awful boring dull ending"], [1])
    assert texts == ["great fun film", "awful boring dull ending"]
    assert labels.tolist() == [1, 1]


def test_a_closing_segment_is_the_shortest_ending_that_states_an_opinion():
    review = (
        "I saw it on a Sunday with my brother. The cinema was full. "
        "It was a wonderful surprise and a great night out. We left at ten."
    )
    found = segments.closing_segments([review, "Plot. Cast. Runtime."], [1, 0])
    # "We left at ten." holds no polar word; with the sentence before it, it does.
    assert found.to_dict("records") == [
        {"text": "It was a wonderful surprise and a great night out. We left at ten.", "label": 1}
    ]


def test_a_cleaned_review_gives_the_same_closing_segment_cleaned():
    review = "I saw it on a Sunday. It was a wonderful surprise and a great night out. We left."
    raw = segments.closing_segments([review], [1])["text"].tolist()
    cleaned = segments.closing_segments([clean_text(review)], [1])["text"].tolist()
    # The break clean_text writes stays between the segment's sentences.
    assert (
        cleaned
        == [clean_text(raw[0])]
        == ["it was a wonderful surprise and a great night out | we left"]
    )
