"""The short-texts benchmark: its variants and its table."""

import pytest

from benchmarks import short_texts as bench
from model.ngrams import SentenceNgrams
from model.preprocess import clean_text, function_words
from pipelines.features import PRESETS, build_pipeline

pytestmark = pytest.mark.unit


def test_a_variant_without_function_words_reads_what_the_model_read_before():
    # The cleaning of 2026-12-06 made "not not_like but cast great" of this review.
    review = "I didn't like it, but the cast is great."
    analyzer = build_pipeline(PRESETS["best"] | bench.BEFORE)[0].analyzer
    assert analyzer(clean_text(review)) == SentenceNgrams((1, 3))("not not_like but cast great")
    assert analyzer.skip == function_words()
    assert not build_pipeline(PRESETS["best"])[0].analyzer.skip


def test_the_table_has_a_row_per_variant_against_the_first():
    row = {
        "variant": "v",
        **dict.fromkeys(["val_accuracy", "segments_accuracy", "rt_choose_accuracy"], 0.9),
        **dict.fromkeys(["val_ece", "rt_choose_ece"], 0.01),
        "rt_choose_positive": 0.5,
        **{f"behaviour_{name}": 1.0 for name in bench.CAPABILITIES},
        "vocabulary": 10,
    }
    table = bench.markdown([row | {"us_per_review": 100.0}, row | {"us_per_review": 150.0}])
    head, rule, first, second = table.splitlines()
    assert head.count("|") == rule.count("|") == first.count("|")
    assert first.endswith("| 100 | 1.00 | 10 |") and second.endswith("| 150 | 1.50 | 10 |")
