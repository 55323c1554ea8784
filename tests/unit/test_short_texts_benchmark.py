"""The short-texts benchmark: its stand-in for the old cleaning and its table."""

import pytest

from benchmarks import short_texts as bench
from model import sentiment_model
from model.preprocess import clean_text

pytestmark = pytest.mark.unit


def test_a_variant_without_function_words_cleans_as_the_model_did_before():
    old = bench.cleaner(bench.VARIANTS[0])
    assert old("I didn't like it, but the cast is great.") == "not not_like but cast great"
    assert bench.cleaner(bench.VARIANTS[-1]) is clean_text


def test_the_served_model_cleans_as_the_variant_only_inside_the_block():
    with bench.cleaning(str.upper):
        assert sentiment_model.clean_text is str.upper
    assert sentiment_model.clean_text is clean_text


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
