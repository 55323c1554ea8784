"""Scoring a served model's answers the way the champion is scored."""

import pandas as pd
import pytest

from pipelines.evaluate import score, score_answers


def test_answers_are_scored_on_the_labels_they_give():
    # The last text had no known term: the intercept's label at confidence 0.5. Read as
    # P(positive) = 0.5 and thresholded, it would count as positive.
    answers = pd.DataFrame(
        {
            "sentiment": ["positive", "negative", "positive", "negative"],
            "confidence": [0.9, 0.8, 0.6, 0.5],
        }
    )
    scores = score_answers([1, 0, 0, 0], answers)
    assert scores["accuracy"] == 0.75
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["roc_auc"] == score([1, 0, 0, 0], [0.9, 0.2, 0.6, 0.5])["roc_auc"]
