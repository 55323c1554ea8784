"""Feedback rules on real SQLite files: which answer a label is for, one label each, accuracy."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest

from gateway.logs import REQUEST_ID
from gateway.observability.feedback import (
    COUNT_SINCE,
    EXPIRE,
    IN_FLIGHT,
    AlreadyLabelled,
    Busy,
    FeedbackStore,
    NotInLog,
    NotTheAnsweredText,
)
from gateway.observability.prediction_log import PredictionLog
from gateway.serving.registry import Registry
from gateway.settings import Settings

POSITIVE = {"sentiment": "positive", "confidence": 0.8}
NEGATIVE = {"sentiment": "negative", "confidence": 0.7}


@pytest.fixture
def logged(tmp_path):
    """A started log; ``answer(id, version, rows, texts)`` records one answer."""
    logs: dict[str, PredictionLog] = {}

    def answer(request_id, version, rows, texts=None, replica="gw", keep_texts=False):
        if replica not in logs:
            logs[replica] = PredictionLog(tmp_path, replica, keep_texts=keep_texts)
            logs[replica].start()
        token = REQUEST_ID.set(request_id)
        try:
            logs[replica].record("/predict/batch", version, rows, texts or ["t"] * len(rows))
        finally:
            REQUEST_ID.reset(token)
        return logs[replica]

    yield answer
    for log in logs.values():
        log.close()


def test_a_label_is_stored_with_what_the_model_answered(tmp_path, logged):
    log = logged("r1", "v2", [POSITIVE, NEGATIVE])
    store = FeedbackStore(tmp_path, log)
    right = store.submit("r1", 0, "positive", None)
    wrong = store.submit("r1", 1, "positive", None)
    assert (right.model_version, right.sentiment, right.correct) == ("v2", "positive", True)
    assert (wrong.sentiment, wrong.correct) == ("negative", False)
    assert wrong.confidence == 0.7 and wrong.replica == "gw"
    assert store.accuracy() == {"v2": (2, 1)}


def test_a_label_sent_right_after_its_answer_finds_it(tmp_path, logged):
    # No flush here: the store waits for its own replica's writer.
    for index in range(50):
        log = logged(f"r{index}", "v1", [POSITIVE] * 20)
    store = FeedbackStore(tmp_path, log)
    assert store.submit("r49", 19, "negative", None).correct is False


def test_unknown_ids_and_items_are_not_in_the_log(tmp_path, logged):
    log = logged("r1", "v1", [POSITIVE])
    store = FeedbackStore(tmp_path, log)
    with pytest.raises(NotInLog):
        store.submit("nope", 0, "positive", None)
    with pytest.raises(NotInLog):
        store.submit("r1", 1, "positive", None)
    assert store.accuracy() == {}


def test_a_second_label_is_refused(tmp_path, logged):
    store = FeedbackStore(tmp_path, logged("r1", "v1", [POSITIVE]))
    store.submit("r1", 0, "positive", None)
    with pytest.raises(AlreadyLabelled):
        store.submit("r1", 0, "negative", None)
    assert store.accuracy() == {"v1": (1, 1)}


def test_an_answer_of_another_replica_can_be_labelled(tmp_path, logged):
    other = logged("elsewhere", "v3", [NEGATIVE], replica="gateway-2")
    assert other.flush()
    here = logged("here", "v3", [POSITIVE], replica="gateway-1")
    record = FeedbackStore(tmp_path, here).submit("elsewhere", 0, "negative", None)
    assert record.replica == "gateway-2" and record.correct


def test_text_is_stored_only_when_sent_or_logged(tmp_path, logged):
    log = logged("r1", "v1", [POSITIVE, POSITIVE], ["first review", "second review"])
    store = FeedbackStore(tmp_path, log)
    store.submit("r1", 0, "positive", None)
    store.submit("r1", 1, "positive", "second review")
    kept = logged("r2", "v1", [POSITIVE], ["kept review"], replica="texts", keep_texts=True)
    FeedbackStore(tmp_path, kept).submit("r2", 0, "negative", None)
    db = sqlite3.connect(store.path)
    texts = dict(db.execute("SELECT request_id || ':' || item, text FROM feedback"))
    db.close()
    assert texts == {"r1:0": None, "r1:1": "second review", "r2:0": "kept review"}


@pytest.mark.parametrize("keep_texts", [False, True])
def test_a_label_with_any_other_text_than_the_answered_one_is_refused(tmp_path, logged, keep_texts):
    """What retraining learns from can only be what the model answered: a key holder cannot
    label texts of their own choosing."""
    log = logged("r1", "v1", [POSITIVE], ["the answered review"], keep_texts=keep_texts)
    store = FeedbackStore(tmp_path, log)
    for other in ("an attacker's text", "the answered review ", "The answered review"):
        with pytest.raises(NotTheAnsweredText):
            store.submit("r1", 0, "negative", other)
    assert store.accuracy() == {}, "nothing was stored"
    assert store.submit("r1", 0, "negative", "the answered review").text == "the answered review"


def test_text_cannot_be_checked_against_a_log_written_before_digests(tmp_path, logged):
    log = logged("r1", "v1", [POSITIVE], ["a review"])
    log.flush(2)
    with sqlite3.connect(log.path) as db:  # as the log's files were before the digest column
        db.execute("ALTER TABLE predictions DROP COLUMN text_digest")
    store = FeedbackStore(tmp_path, log)
    with pytest.raises(NotTheAnsweredText):
        store.submit("r1", 0, "positive", "a review")
    assert store.submit("r1", 0, "positive", None).text is None


def test_the_latest_answer_by_time_is_labelled_when_a_request_id_repeats(tmp_path, logged):
    """A file is named by when it was opened: an answer logged later can be in a file whose
    name sorts first."""
    first = logged("other", "v1", [POSITIVE], replica="opened-first")
    first.flush(2)
    time.sleep(1.1)  # file names have a resolution of one second
    logged("same", "v1", [POSITIVE], replica="opened-later").flush(2)
    time.sleep(0.01)
    logged("same", "v2", [NEGATIVE], replica="opened-first").flush(2)
    assert FeedbackStore(tmp_path).submit("same", 0, "negative", None).model_version == "v2"


def test_accuracy_is_per_version(tmp_path, logged):
    logged("a", "v1", [POSITIVE] * 4)
    log = logged("b", "v2", [NEGATIVE] * 2)
    store = FeedbackStore(tmp_path, log)
    for item, label in enumerate(["positive", "positive", "positive", "negative"]):
        store.submit("a", item, label, None)
    store.submit("b", 0, "positive", None)
    store.submit("b", 1, "positive", None)
    assert store.accuracy() == {"v1": (4, 3), "v2": (2, 0)}


def test_no_store_file_means_no_feedback(tmp_path):
    store = FeedbackStore(tmp_path / "missing")
    assert store.accuracy() == {}
    assert not store.path.exists()


def test_ids_and_texts_sqlite_cannot_encode_are_handled(tmp_path, logged):
    store = FeedbackStore(tmp_path, logged("r1", "v1", [POSITIVE]))
    with pytest.raises(NotInLog):
        store.submit("\ud800", 0, "positive", None)
    lone = logged("r2", "v1", [POSITIVE], ["lone \udfff"])
    assert FeedbackStore(tmp_path, lone).submit("r2", 0, "positive", "lone \udfff").text == "lone ?"


def test_counts_read_only_what_arrived_since_the_last_count(tmp_path, logged):
    """Every replica writes the store: a count adds the rows past the last one it counted
    (a rowid range, not a scan of every label) and starts again on a new file."""
    log = logged("a", "v1", [POSITIVE] * 3)
    store = FeedbackStore(tmp_path, log)
    store.submit("a", 0, "positive", None)
    assert store.accuracy() == {"v1": (1, 1)}
    other = FeedbackStore(tmp_path, log)  # another replica
    other.submit("a", 1, "negative", None)
    other.submit("a", 2, "positive", None)
    assert store.accuracy() == {"v1": (3, 2)}
    with sqlite3.connect(store.path) as db:
        plan = " | ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {COUNT_SINCE}", (0,)))
    assert "INTEGER PRIMARY KEY (rowid>?)" in plan, plan
    store.path.unlink()
    FeedbackStore(tmp_path, log).submit("a", 0, "negative", None)
    assert store.accuracy() == {"v1": (1, 0)}


def test_a_flood_of_labels_is_refused_at_once_and_never_delays_the_registry(tmp_path, monkeypatch):
    store = FeedbackStore(tmp_path)
    release = threading.Event()
    monkeypatch.setattr(store, "submit", lambda *args: release.wait(10))
    registry = Registry(Settings(tracking_uri="http://127.0.0.1:9"))
    found = SimpleNamespace(version="3")
    monkeypatch.setattr(registry._client, "get_model_version_by_alias", lambda *args: found)

    async def flood() -> str:
        labels = [
            asyncio.create_task(store.label("r", i, "positive", None)) for i in range(IN_FLIGHT + 5)
        ]
        await asyncio.sleep(0.2)
        refused = [t for t in labels if t.done() and isinstance(t.exception(), Busy)]
        assert len(refused) == 5
        # The labels hold the store's threads; the alias poll has threads of its own.
        version = await asyncio.wait_for(registry.resolve(), 2)
        release.set()
        await asyncio.gather(*(t for t in labels if t not in refused))
        return version

    assert asyncio.run(flood()) == "3"


def test_label_texts_are_forgotten_past_the_prediction_logs_retention(tmp_path, logged):
    log = logged("r1", "v1", [POSITIVE, NEGATIVE], ["old review", "recent review"])
    store = FeedbackStore(tmp_path, log)
    store.submit("r1", 0, "positive", "old review")
    store.submit("r1", 1, "negative", "recent review")
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE feedback SET time = '2020-01-01T00:00:00.000+00:00' WHERE item = 0")
    store.expire(time.time() - 30 * 86_400)
    with sqlite3.connect(store.path) as db:
        texts = dict(db.execute("SELECT item, text FROM feedback"))
    assert texts == {0: None, 1: "recent review"}
    assert store.accuracy() == {"v1": (2, 2)}, "the labels stay"


def test_expiry_reads_the_kept_texts_by_time_not_the_whole_table(tmp_path, logged):
    store = FeedbackStore(tmp_path, logged("r1", "v1", [POSITIVE], ["a review"]))
    store.submit("r1", 0, "positive", "a review")
    with sqlite3.connect(store.path) as db:
        ((*_, plan),) = db.execute(f"EXPLAIN QUERY PLAN {EXPIRE}", ("2020",)).fetchall()
    assert plan.startswith("SEARCH feedback USING INDEX feedback_text_time"), plan
