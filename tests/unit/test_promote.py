"""The champion/challenger rule, with plain values: what is compared, on what, and when not."""

import contextlib
from types import SimpleNamespace

import mlflow
import mlflow.pyfunc  # the module itself, not mlflow's lazy stand-in, is patched
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from model.names import LABELS
from pipelines import model_card, promote
from pipelines.promote import Champion, TrainedOn, decide, find_champion

HERE = TrainedOn(data_digest="5f2a9c1e0b7d4a66", split_seed=42, max_rows=2000)


def champion(trained_on: TrainedOn | None = HERE, val_f1: float | None = 0.85, **kw) -> Champion:
    return Champion(version="3", trained_on=trained_on, val_f1=val_f1, **kw)


def test_without_a_champion_the_challenger_is_promoted():
    decision = decide("if_better", 0.80, HERE, None)
    assert decision.promote
    assert decision.reason == "no production model yet"


@pytest.mark.parametrize(("challenger", "promoted"), [(0.86, True), (0.85, True), (0.84, False)])
def test_like_with_like_is_decided_on_validation_f1_ties_to_the_newer(challenger, promoted):
    decision = decide("if_better", challenger, HERE, champion(val_f1=0.85))
    assert decision.promote is promoted
    assert "validation F1" in decision.reason and "test" not in decision.reason
    assert f"{challenger:.4f}" in decision.reason and "0.8500" in decision.reason
    assert "production v3" in decision.reason


@pytest.mark.parametrize(
    ("other", "named"),
    [
        (TrainedOn("5f2a9c1e0b7d4a66", 7, 2000), "seed 7"),
        (TrainedOn("0000000000000000", 42, 2000), "data 0000000000000000"),
        (TrainedOn("5f2a9c1e0b7d4a66", 42, 0), "max_rows 0"),
        (TrainedOn("5f2a9c1e0b7d4a66", 42, 2000, split="stratified 80/10/10"), "80/10/10"),
    ],
    ids=["seed", "data", "sample", "split"],
)
def test_a_champion_trained_on_other_data_is_not_compared_and_not_replaced(other, named):
    # Even a champion that looks much worse: its score on these rows means nothing.
    decision = decide("if_better", 0.99, HERE, champion(trained_on=other, val_f1=None))
    assert not decision.promote
    assert decision.reason.startswith("production v3 was trained on other data (")
    assert named in decision.reason
    assert "not comparable; use promote=always or the promote entry point" in decision.reason


def test_a_champion_that_does_not_record_its_training_data_is_not_comparable():
    decision = decide("if_better", 0.99, HERE, champion(trained_on=None, val_f1=None))
    assert not decision.promote
    assert "does not record what it was trained on" in decision.reason
    assert "not comparable" in decision.reason


def test_a_score_from_other_data_is_ignored_even_if_given():
    decision = decide(
        "if_better", 0.99, HERE, champion(trained_on=TrainedOn("x", 7, 0), val_f1=0.5)
    )
    assert not decision.promote and "not comparable" in decision.reason


def test_a_comparable_champion_that_cannot_score_loses():
    decision = decide("if_better", 0.80, HERE, champion(val_f1=None, error="no module named x"))
    assert decision.promote
    assert "could not be scored" in decision.reason and "no module named x" in decision.reason


def test_a_comparable_champion_must_have_been_scored():
    with pytest.raises(ValueError):
        decide("if_better", 0.80, HERE, champion(val_f1=None))


@pytest.mark.parametrize("other", [None, HERE, TrainedOn("x", 7, 0)])
def test_never_and_always_ignore_the_champion(other):
    assert not decide("never", 0.99, HERE, champion(trained_on=other)).promote
    assert decide("always", 0.01, HERE, champion(trained_on=other)).promote
    assert decide("always", 0.01, HERE, None).reason == "promotion forced (promote=always)"


def test_what_a_version_was_trained_on_round_trips_through_its_tags():
    tags = HERE.tags()
    assert tags == {
        "data_digest": "5f2a9c1e0b7d4a66",
        "split_seed": "42",
        "max_rows": "2000",
        "split": "stratified 70/15/15",
    }
    assert TrainedOn.from_tags({**tags, "preset": "best"}) == HERE


@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"data_digest": "ab12cd34", "test_f1": "0.9"},  # what older versions record
        {**HERE.tags(), "split_seed": "seven"},
    ],
    ids=["none", "older-version", "garbled"],
)
def test_incomplete_tags_mean_unknown_training_data(tags):
    assert TrainedOn.from_tags(tags) is None


class Registry:
    """The two registry calls find_champion makes, for one production version."""

    def __init__(self, tags: dict[str, str], val_f1: float):
        self.version = SimpleNamespace(version="3", run_id="r3", tags=tags)
        self.val_f1 = val_f1

    def get_model_version_by_alias(self, name, alias):
        return self.version

    def get_run(self, run_id):
        assert run_id == "r3"
        return SimpleNamespace(data=SimpleNamespace(metrics={"val_f1": self.val_f1}))


class Memorised:
    """A production model that answers every row it trained on right, as a refit model
    nearly does on its validation rows."""

    def __init__(self, val: pd.DataFrame):
        self.answers = dict(zip(val["text"], val["label"], strict=True))

    def predict(self, frame):
        return pd.DataFrame(
            {"sentiment": [LABELS[self.answers[t]] for t in frame["text"]], "confidence": 0.9}
        )


VAL = pd.DataFrame({"text": [f"review {i}" for i in range(8)], "label": [0, 1] * 4})


@pytest.fixture
def loads(monkeypatch):
    loaded = []

    def load_model(uri):
        loaded.append(uri)
        return Memorised(VAL)

    monkeypatch.setattr(mlflow.pyfunc, "load_model", load_model)
    return loaded


def test_a_champion_refitted_on_train_and_val_is_compared_by_its_recorded_validation_f1(loads):
    # Re-scored on the validation rows it trained on, it would score 1.0 and keep its place.
    registry = Registry({**HERE.tags(), "fit_on": "train+val", "val_f1": "0.8800"}, 0.87654321)
    found = find_champion(registry, "SentimentClassifier", HERE, VAL)
    assert found.val_f1 == 0.87654321 and found.recorded and loads == []
    decision = decide("if_better", 0.88, HERE, found)
    assert decision.promote
    assert "0.8800 >= production v3's 0.8765 on the same validation rows" in decision.reason
    assert "its recorded validation F1: it was refitted on train+val" in decision.reason


def test_a_refitted_champion_without_a_run_falls_back_to_its_tag(loads):
    registry = Registry({**HERE.tags(), "fit_on": "train+val", "val_f1": "0.8800"}, 0.0)
    registry.get_run = lambda run_id: (_ for _ in ()).throw(MlflowException("deleted"))
    found = find_champion(registry, "SentimentClassifier", HERE, VAL)
    assert found.val_f1 == 0.88 and found.recorded and loads == []


@pytest.mark.parametrize("fit_on", [None, "train"])
def test_a_champion_fitted_on_train_only_is_re_scored_on_the_validation_rows(loads, fit_on):
    tags = {**HERE.tags(), "val_f1": "0.8800", **({"fit_on": fit_on} if fit_on else {})}
    found = find_champion(Registry(tags, 0.88), "SentimentClassifier", HERE, VAL)
    assert loads == ["models:/SentimentClassifier/3"]
    assert found.val_f1 == 1.0 and not found.recorded
    assert "(re-scored)" in decide("if_better", 0.88, HERE, found).reason


def test_the_alias_move_is_the_last_registry_step_of_a_promotion(monkeypatch):
    """A failure after the move would fail a run whose model already serves."""
    steps = []
    monkeypatch.setattr(promote, "check", lambda name, version: None)
    monkeypatch.setattr(promote, "current", lambda client, name: None)
    monkeypatch.setattr(promote, "MlflowClient", lambda: None)
    monkeypatch.setattr(promote.promotion_lock, "held", lambda *args: contextlib.nullcontext())
    monkeypatch.setattr(promote, "record", lambda *args, **kwargs: steps.append("record"))
    monkeypatch.setattr(promote, "move_alias", lambda *args: steps.append("move"))
    decision = promote.champion_challenger("always", "M", "4", 0.9, HERE, VAL)
    assert decision.promote and steps == ["record", "move"]


def test_a_failed_move_leaves_the_run_saying_kept(monkeypatch):
    tags = {}
    monkeypatch.setattr(promote, "check", lambda name, version: None)
    monkeypatch.setattr(promote, "current", lambda client, name: None)
    monkeypatch.setattr(promote, "MlflowClient", lambda: None)
    monkeypatch.setattr(promote.promotion_lock, "held", lambda *args: contextlib.nullcontext())
    monkeypatch.setattr(mlflow, "set_tags", tags.update)
    monkeypatch.setattr(mlflow, "log_metric", lambda *args: None)

    def refused(*args):
        raise MlflowException("registry unavailable")

    monkeypatch.setattr(promote, "move_alias", refused)
    with pytest.raises(MlflowException):
        promote.champion_challenger("always", "M", "4", 0.9, HERE, VAL)
    assert (
        tags["promotion.decision"] == "kept" and "registry unavailable" in tags["promotion.reason"]
    )


def test_the_model_card_cannot_fail_a_run_after_its_decision(monkeypatch, capsys):
    writes = []

    def write(*args):
        writes.append(args)
        if len(writes) > 1:
            raise MlflowException("the tracking server went away")

    monkeypatch.setattr(model_card, "write", write)
    with model_card.written("M", "4", None, None):
        pass  # the decision, and the alias move, happened here
    assert len(writes) == 2
    assert "model card not updated with the decision" in capsys.readouterr().err


def short(accuracy: float, margin: float = 0.01) -> promote.ShortRule:
    return promote.ShortRule(accuracy, VAL, margin)


@pytest.mark.parametrize(
    ("accuracy", "promoted"), [(0.80, True), (0.775, True), (0.7699, False), (0.60, False)]
)
def test_a_challenger_that_loses_on_short_texts_by_more_than_the_margin_is_refused(
    accuracy, promoted
):
    decision = decide("if_better", 0.90, HERE, champion(short_accuracy=0.78), short(accuracy))
    assert decision.promote is promoted
    assert "validation F1 0.9000 >= production v3's 0.8500" in decision.reason
    assert f"short-text accuracy {accuracy:.4f}" in decision.reason
    if not promoted:
        assert "more than the 1 allowed (short_margin)" in decision.reason
        assert decision.reason.count(". ") == 0  # one sentence


def test_the_short_text_margin_is_a_parameter_and_validation_still_decides_first():
    loses_two_points = short(0.76, margin=0.03)
    assert decide("if_better", 0.90, HERE, champion(short_accuracy=0.78), loses_two_points).promote
    better_short = short(0.99)
    assert not decide("if_better", 0.84, HERE, champion(short_accuracy=0.78), better_short).promote
    # A champion that was never scored on short texts is compared on validation alone.
    assert decide("if_better", 0.90, HERE, champion(), short(0.10)).promote


def test_a_refitted_champion_is_scored_on_the_short_texts_by_its_published_model(loads):
    registry = Registry({**HERE.tags(), "fit_on": "train+val", "val_f1": "0.8800"}, 0.87654321)
    found = find_champion(registry, "SentimentClassifier", HERE, VAL, short_texts=VAL)
    assert loads == ["models:/SentimentClassifier/3"]
    assert found.recorded and found.val_f1 == 0.87654321 and found.short_accuracy == 1.0
