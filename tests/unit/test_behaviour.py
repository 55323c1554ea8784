"""The behavioural suite: its cases, its scoring, and its thresholds against the `best` model
fitted on the packaged training split, and against models that lack a capability."""

import re
from collections import Counter
from functools import partial
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from model.preprocess import clean_text
from model.sentiment_model import SentimentModel
from model.signature import SIGNATURE
from pipelines import behaviour
from pipelines.behaviour import CAPABILITIES, INTENSIFIER, NEGATIVE, POSITIVE, Case
from pipelines.data import load_reviews, split
from pipelines.features import PRESETS, fit_pipeline
from tests.fitted import fitted

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def training():
    """The packaged training and validation splits (seed 42), cleaned as training cleans them."""
    splits = split(load_reviews(), 42)
    return tuple(
        ([clean_text(t) for t in part["text"].tolist()], part["label"].to_numpy())
        for part in (splits.train, splits.val)
    )


@pytest.fixture(scope="module")
def best(training, pytestconfig):
    """The `best` preset fitted as `make train` fits it: on train, calibrated on validation
    (about 40 s of CPU, then cached)."""
    train, validation = training
    build = partial(fit_pipeline, PRESETS["best"], seed=42)
    return fitted(pytestconfig, "best", build, *train, validation=validation)


def served(pipeline):
    """The pipeline's answers as the scoring server gives them."""
    model = SentimentModel(pipeline)
    return behaviour.answers_scorer(lambda frame: model.predict(None, frame))


def below(outcomes) -> dict[str, str]:
    return {
        name: f"{o.rate:.1%} < {o.threshold:.0%}"
        for name, o in outcomes.items()
        if o.rate < o.threshold
    }


def test_the_suite_is_the_same_every_time_and_sized_per_capability():
    built = (
        *behaviour.negation(),
        *behaviour.contrast(),
        *behaviour.intensifiers(),
        *behaviour.invariance(),
        *behaviour.short(),
        *behaviour.domains(),
    )
    assert tuple(dict.fromkeys(built)) == behaviour.suite()
    built = behaviour.suite()
    sizes = Counter(c.capability for c in built)
    assert set(sizes) == set(CAPABILITIES)
    assert all(30 <= n <= 250 for n in sizes.values()), sizes
    for name, capability in CAPABILITIES.items():
        cases = [c for c in built if c.capability == name]
        if capability.test == "MFT":
            labels = Counter(c.expected for c in cases)
            assert min(labels[POSITIVE], labels[NEGATIVE]) >= 0.4 * len(cases), (name, labels)
            assert all(c.changed is None for c in cases)
        else:
            assert all(c.changed and c.changed != c.text for c in cases)


def test_the_domains_cases_hold_no_film_vocabulary_and_are_balanced():
    """Products, restaurants and services only: a film word would let movie reviews decide."""
    cases = [c for c in behaviour.suite() if c.capability == "domains"]
    film = re.compile(
        r"\b(movies?|films?|actors?|acting|plots?|scripts?|cast|director|scenes?|shows?)\b"
    )
    assert not [c.text for c in cases if film.search(c.text.lower())]
    positive = sum(c.expected == POSITIVE for c in cases) / len(cases)
    assert 0.4 <= positive <= 0.6, positive


def test_templates_fill_every_slot_with_proper_articles():
    texts = list(behaviour.fill("what a {adj} {movie}!", adj=["good", "awful"], movie=["film"]))
    assert texts == ["What a good film!", "What an awful film!"]
    pairs = behaviour.fill("the {pair[0]} and the {pair[1]}.", pair=[("cast", "plot")])
    assert list(pairs) == ["The cast and the plot."]
    assert not [c.text for c in behaviour.suite() if "{" in c.text or "}" in c.text]


def test_each_text_is_scored_once_and_pass_rates_become_metrics():
    scored = []

    def constant(texts):
        scored.extend(texts)
        return np.full(len(texts), 0.7)

    outcomes = behaviour.run(constant)
    assert len(scored) == len(set(scored))
    assert set(scored) == {t for c in behaviour.suite() for t in (c.text, c.changed) if t}
    # Always "positive" with the same probability: every case passes but the negative MFT ones.
    for name, o in outcomes.items():
        cases = [c for c in behaviour.suite() if c.capability == name]
        mft = CAPABILITIES[name].test == "MFT"
        expected = sum(not (mft and c.expected == NEGATIVE) for c in cases)
        assert (o.passed, o.cases) == (expected, len(cases)), name
    metrics = behaviour.metrics(outcomes)
    assert metrics["behaviour_negation"] == outcomes["negation"].rate
    assert metrics["behaviour_short_cases"] == outcomes["short"].cases
    assert set(metrics) == {f"behaviour_{n}{s}" for n in CAPABILITIES for s in ("", "_cases")}


def test_the_three_kinds_of_test():
    mft = Case("negation", "Not good.", NEGATIVE)
    assert behaviour.passes(mft, 0.2, None) and not behaviour.passes(mft, 0.6, None)
    up = Case("intensifiers", "Good.", POSITIVE, "Very good.")
    assert behaviour.passes(up, 0.70, 0.66) and not behaviour.passes(up, 0.70, 0.64)
    down = Case("intensifiers", "Bad.", NEGATIVE, "Very bad.")
    assert behaviour.passes(down, 0.30, 0.34) and not behaviour.passes(down, 0.30, 0.36)
    same = Case("invariance", "Great.", changed="Great!")
    assert behaviour.passes(same, 0.52, 0.56)
    assert not behaviour.passes(same, 0.52, 0.49)  # the label flips
    assert not behaviour.passes(same, 0.90, 0.80)  # the probability moves too far


def test_the_best_model_meets_every_threshold(best):
    outcomes = behaviour.run(served(best))
    assert not below(outcomes), behaviour.report(outcomes)
    # The scikit-learn pipeline and the served answers agree on every case.
    plain = behaviour.run(behaviour.pipeline_scorer(best))
    assert {n: o.passed for n, o in plain.items()} == {n: o.passed for n, o in outcomes.items()}


def test_a_model_without_negation_scope_fails_negation(training):
    """Unigrams with the ``not_`` marks removed: "not good" is "not" + "good" (33% measured)."""
    (texts, labels), _ = training
    unmark = lambda text: text.replace("not_", "").replace("|", " ")  # noqa: E731
    model = make_pipeline(TfidfVectorizer(min_df=2, sublinear_tf=True), LogisticRegression(C=4))
    model.fit([unmark(t) for t in texts], labels)
    outcomes = behaviour.run(
        lambda batch: model.predict_proba([unmark(clean_text(t)) for t in batch])[:, 1]
    )
    assert "negation" in below(outcomes), behaviour.report(outcomes)


def test_an_always_positive_model_fails_negation_short_and_domains():
    outcomes = behaviour.run(lambda texts: np.full(len(texts), 0.99))
    assert {"negation", "short", "domains"} <= set(below(outcomes)), behaviour.report(outcomes)


def test_reading_only_the_first_clause_fails_contrast(best):
    first = behaviour.pipeline_scorer(best)
    outcomes = behaviour.run(lambda texts: first([t.split(" but ")[0] for t in texts]))
    assert "contrast" in below(outcomes), behaviour.report(outcomes)


def test_weakening_on_an_intensifier_fails_intensifiers(best):
    """A model for which "very good" is less sure than "good"."""
    score = behaviour.pipeline_scorer(best)

    def hedged(texts):
        p = score(texts)
        weak = np.array([any(f" {w} " in t for w in INTENSIFIER) for t in texts])
        return np.where(weak, 0.5 + (p - 0.5) / 2, p)

    outcomes = behaviour.run(hedged)
    assert "intensifiers" in below(outcomes), behaviour.report(outcomes)


def test_reacting_to_exclamation_marks_fails_invariance(best):
    score = behaviour.pipeline_scorer(best)
    outcomes = behaviour.run(
        lambda texts: np.clip(score(texts) + 0.1 * np.array([t.count("!") for t in texts]), 0, 1)
    )
    assert "invariance" in below(outcomes), behaviour.report(outcomes)


def test_the_benchmark_table_has_a_column_per_capability():
    rows = [{"preset": "p", **{f"behaviour_{n}": 0.5 for n in CAPABILITIES}}]
    head, rule, row = behaviour.table(rows).splitlines()
    assert head.startswith("| preset | negation (MFT, 200, ≥58%) | contrast (MFT, ")
    assert rule.count("---:") == len(CAPABILITIES)
    assert row == "| p |" + " 50.0% |" * len(CAPABILITIES)


def test_the_command_scores_a_logged_model(best, tmp_path, monkeypatch, capsys):
    """`python -m pipelines.behaviour <model uri>`: the table of the model as MLflow loads it."""
    joblib.dump(best, tmp_path / "pipeline.joblib")
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=str(ROOT / "model" / "sentiment_model.py"),
        artifacts={"pipeline": str(tmp_path / "pipeline.joblib")},
        code_paths=[str(ROOT / "model")],
        signature=SIGNATURE,
        pip_requirements=[],  # not inferred: that starts a Python process, and is not tested here
    )
    monkeypatch.setattr("sys.argv", ["behaviour", str(tmp_path / "model"), "--failures", "1"])
    behaviour.main()
    shown = capsys.readouterr().out
    expected = behaviour.run(served(best))
    for name, o in expected.items():
        c = CAPABILITIES[name]
        assert f"| {name} | {c.title} | {c.test} | {o.cases} | {o.rate:.1%} |" in shown
    assert shown.count(" fails: ") == sum(1 for o in expected.values() if o.failures)
