"""Feedback rules on real SQLite files (monitoring/log_store's SQLiteFiles): which answer a label
is for, one label each, the accuracy as last counted, and a store that does not answer."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.logs import REQUEST_ID
from gateway.observability import feedback as feedback_module
from gateway.observability.feedback import (
    IN_FLIGHT,
    AlreadyLabelled,
    Busy,
    FeedbackStore,
    NotInLog,
    NotTheAnsweredText,
    StoreUnavailable,
)
from gateway.observability.prediction_log import PredictionLog
from gateway.serving.registry import Registry
from gateway.settings import Settings
from monitoring.log_store.files import SQLiteFiles
from monitoring.log_store.tables import iso
from tests.unit.log_files import pre_digest_file, wait_for

POSITIVE = {"sentiment": "positive", "confidence": 0.8}
NEGATIVE = {"sentiment": "negative", "confidence": 0.7}
LIMITS = {"max_bytes": 50_000_000, "max_age": 86_400.0}


def make_log(folder: Path, replica: str, **options) -> PredictionLog:
    return PredictionLog(SQLiteFiles(folder, replica, **LIMITS), replica, **options)


@pytest.fixture
def logged(tmp_path):
    """A started log per replica; ``answer(id, version, rows, texts)`` records one answer."""
    logs: dict[str, PredictionLog] = {}

    def answer(request_id, version, rows, texts=None, replica="gw", keep_texts=False):
        if replica not in logs:
            logs[replica] = make_log(tmp_path, replica, keep_texts=keep_texts)
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


@pytest.fixture
def feedback_stores():
    """``of(log)``: the feedback store of the log's gateway (sharing its log store, as the
    live monitor does); closed after the test."""
    made, own = [], []

    def of(log: PredictionLog | None, store: SQLiteFiles | None = None) -> FeedbackStore:
        if store is not None:
            own.append(store)
        made.append(FeedbackStore(store if store is not None else log.store, log))
        return made[-1]

    yield of
    for feedback in made:
        feedback.close()
    for store in own:
        store.close()


def labels(path: Path) -> dict[str, str | None]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT request_id || ':' || item, text FROM feedback"))


def test_a_label_is_stored_with_what_the_model_answered(logged, feedback_stores):
    store = feedback_stores(logged("r1", "v2", [POSITIVE, NEGATIVE]))
    right = store.submit("r1", 0, "positive", None)
    wrong = store.submit("r1", 1, "positive", None)
    assert (right.model_version, right.sentiment, right.correct) == ("v2", "positive", True)
    assert (wrong.sentiment, wrong.correct) == ("negative", False)
    assert wrong.confidence == 0.7 and wrong.replica == "gw"
    assert store.accuracy() == {"v2": (2, 1)}, "its own labels are counted at once"


def test_a_label_sent_right_after_its_answer_finds_it(logged, feedback_stores):
    # No flush here: the store waits for its own replica's writer.
    for index in range(50):
        log = logged(f"r{index}", "v1", [POSITIVE] * 20)
    assert feedback_stores(log).submit("r49", 19, "negative", None).correct is False


def test_unknown_ids_and_items_are_not_in_the_log(logged, feedback_stores):
    store = feedback_stores(logged("r1", "v1", [POSITIVE]))
    with pytest.raises(NotInLog):
        store.submit("nope", 0, "positive", None)
    with pytest.raises(NotInLog):
        store.submit("r1", 1, "positive", None)
    assert store.accuracy() == {}


def test_a_second_label_is_refused(logged, feedback_stores):
    store = feedback_stores(logged("r1", "v1", [POSITIVE]))
    store.submit("r1", 0, "positive", None)
    with pytest.raises(AlreadyLabelled):
        store.submit("r1", 0, "negative", None)
    assert store.accuracy() == {"v1": (1, 1)}


def test_an_answer_of_another_replica_can_be_labelled(logged, feedback_stores):
    other = logged("elsewhere", "v3", [NEGATIVE], replica="gateway-2")
    assert other.flush()
    here = logged("here", "v3", [POSITIVE], replica="gateway-1")
    record = feedback_stores(here).submit("elsewhere", 0, "negative", None)
    assert record.replica == "gateway-2" and record.correct


def test_text_is_stored_only_when_sent_or_logged(logged, feedback_stores):
    log = logged("r1", "v1", [POSITIVE, POSITIVE], ["first review", "second review"])
    store = feedback_stores(log)
    store.submit("r1", 0, "positive", None)
    store.submit("r1", 1, "positive", "second review")
    kept = logged("r2", "v1", [POSITIVE], ["kept review"], replica="texts", keep_texts=True)
    feedback_stores(kept).submit("r2", 0, "negative", None)
    assert labels(log.store.feedback_path) == {
        "r1:0": None,
        "r1:1": "second review",
        "r2:0": "kept review",
    }


@pytest.mark.parametrize("keep_texts", [False, True])
def test_a_label_with_any_other_text_than_the_answered_one_is_refused(
    logged, feedback_stores, keep_texts
):
    """What retraining learns from can only be what the model answered: a key holder cannot
    label texts of their own choosing."""
    log = logged("r1", "v1", [POSITIVE], ["the answered review"], keep_texts=keep_texts)
    store = feedback_stores(log)
    for other in ("an attacker's text", "the answered review ", "The answered review"):
        with pytest.raises(NotTheAnsweredText):
            store.submit("r1", 0, "negative", other)
    assert store.accuracy() == {}, "nothing was stored"
    assert store.submit("r1", 0, "negative", "the answered review").text == "the answered review"


def test_text_cannot_be_checked_against_a_log_written_before_digests(tmp_path, feedback_stores):
    row = (iso(time.time()), "r1", 0, "/predict", "old", "v1", "positive", 0.8, 8, None, None)
    pre_digest_file(tmp_path, row)
    store = feedback_stores(None, SQLiteFiles(tmp_path, None, **LIMITS))
    with pytest.raises(NotTheAnsweredText):
        store.submit("r1", 0, "positive", "a review")
    assert store.submit("r1", 0, "positive", None).text is None


def test_accuracy_is_per_version(logged, feedback_stores):
    logged("a", "v1", [POSITIVE] * 4)
    store = feedback_stores(logged("b", "v2", [NEGATIVE] * 2))
    for item, label in enumerate(["positive", "positive", "positive", "negative"]):
        store.submit("a", item, label, None)
    store.submit("b", 0, "positive", None)
    store.submit("b", 1, "positive", None)
    assert store.accuracy() == {"v1": (4, 3), "v2": (2, 0)}


def test_no_store_file_means_no_feedback_and_counting_creates_none(tmp_path, feedback_stores):
    store = feedback_stores(None, SQLiteFiles(tmp_path / "missing", None, **LIMITS))
    store._count()
    assert store.accuracy() == {}
    assert not (tmp_path / "missing").exists()


def test_ids_and_texts_sqlite_cannot_encode_are_handled(logged, feedback_stores):
    store = feedback_stores(logged("r1", "v1", [POSITIVE]))
    with pytest.raises(NotInLog):
        store.submit("\ud800", 0, "positive", None)
    lone = logged("r2", "v1", [POSITIVE], ["lone \udfff"])
    assert feedback_stores(lone).submit("r2", 0, "positive", "lone \udfff").text == "lone ?"


def test_accuracy_is_the_last_count_and_a_thread_counts_other_replicas_labels(
    logged, feedback_stores, monkeypatch
):
    """A scrape reads accuracy() on the event loop: it makes no database call, so another
    replica's label shows only once the counting thread has counted it."""
    monkeypatch.setattr(feedback_module, "COUNT_EVERY", 0.05)
    log = logged("a", "v1", [POSITIVE] * 3)
    here, other = (
        feedback_stores(log),
        feedback_stores(log, SQLiteFiles(log.store.root, None, **LIMITS)),
    )
    here.submit("a", 0, "positive", None)
    other.submit("a", 1, "negative", None)
    assert here.accuracy() == {"v1": (1, 1)}, "not counted yet: no database call"
    here.start()
    assert wait_for(lambda: here.accuracy() == {"v1": (2, 1)}), here.accuracy()
    other.submit("a", 2, "positive", None)
    assert wait_for(lambda: here.accuracy() == {"v1": (3, 2)}), here.accuracy()


def test_counts_add_what_arrived_since_the_last_count_and_start_again_on_a_new_store(
    logged, feedback_stores
):
    """Each count reads the labels past the last id counted. A feedback.sqlite replaced by a
    new one (its highest id lower than the last counted) is counted again from nothing, and
    written to: the old file's connections are not kept."""
    log = logged("a", "v1", [POSITIVE] * 3)
    store = feedback_stores(log)
    for item, label in enumerate(["positive", "negative", "positive"]):
        store.submit("a", item, label, None)
    assert store.accuracy() == {"v1": (3, 2)}
    path = log.store.feedback_path
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    store.submit("a", 0, "negative", None)
    assert store.accuracy() == {"v1": (1, 0)}
    assert labels(path) == {"a:0": None}, "the label is in the new file"


def test_a_label_that_commits_after_a_higher_one_was_counted_is_seen_by_the_full_count(
    logged, feedback_stores, monkeypatch
):
    """On PostgreSQL ids are handed out before commit: a label may appear below the last id
    counted. The incremental count misses it; the full count every RECOUNT_EVERY does not."""
    monkeypatch.setattr(feedback_module, "COUNT_EVERY", 0.05)
    monkeypatch.setattr(feedback_module, "RECOUNT_EVERY", 0.2)
    log = logged("a", "v1", [POSITIVE] * 2)
    store = feedback_stores(log)
    store.submit("a", 0, "positive", None)
    row = "?, 'late', 0, 'negative', NULL, '2026-01-01', 'v1', 'positive', 0.9, 'gw'"
    with sqlite3.connect(log.store.feedback_path) as db:
        db.execute(f"INSERT INTO feedback VALUES ({row})", (5,))
    store._count()
    assert store.accuracy() == {"v1": (2, 1)}
    with sqlite3.connect(log.store.feedback_path) as db:
        db.execute(f"INSERT INTO feedback VALUES ({row.replace('late', 'later')})", (3,))
    store._count()
    assert store.accuracy() == {"v1": (2, 1)}, "below the last id counted: missed"
    store.start()
    assert wait_for(lambda: store.accuracy() == {"v1": (3, 1)}), store.accuracy()


def test_a_database_error_while_labelling_is_store_unavailable(tmp_path, logged, feedback_stores):
    (tmp_path / "feedback.sqlite").mkdir()  # no database can be opened there
    store = feedback_stores(logged("r1", "v1", [POSITIVE]))
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.label("r1", 0, "positive", None))
    assert store.accuracy() == {}


def test_labels_are_stored_through_the_stores_threads(logged, feedback_stores):
    store = feedback_stores(logged("r1", "v1", [POSITIVE]))
    record = asyncio.run(store.label("r1", 0, "negative", None))
    assert (record.label, record.correct) == ("negative", False)
    assert store.accuracy() == {"v1": (1, 0)}


def test_a_flood_of_labels_is_refused_at_once_and_never_delays_the_registry(
    logged, feedback_stores, monkeypatch
):
    """The store's threads wait on a database that another writer holds (as a slow disk or
    server would); labels past IN_FLIGHT are refused at once and the registry still
    answers. Once the database is free, the waiting labels are stored."""
    log = logged("r", "v1", [POSITIVE] * (IN_FLIGHT + 5))
    store = feedback_stores(log)
    logged("first", "v1", [POSITIVE])
    store.submit("first", 0, "positive", None)  # feedback.sqlite exists, at its version
    registry = Registry(Settings(tracking_uri="http://127.0.0.1:9"))
    found = SimpleNamespace(version="3")
    monkeypatch.setattr(registry._client, "get_model_version_by_alias", lambda *args: found)
    holder = sqlite3.connect(log.store.feedback_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")

    async def flood() -> str:
        tasks = [
            asyncio.create_task(store.label("r", i, "positive", None)) for i in range(IN_FLIGHT + 5)
        ]
        await asyncio.sleep(0.2)
        refused = [t for t in tasks if t.done() and isinstance(t.exception(), Busy)]
        assert len(refused) == 5
        assert not [t for t in tasks if t.done() and t not in refused], "the database is held"
        # The labels hold the store's threads; the alias poll has threads of its own.
        version = await asyncio.wait_for(registry.resolve(), 2)
        holder.execute("ROLLBACK")
        await asyncio.gather(*(t for t in tasks if t not in refused))
        return version

    try:
        assert asyncio.run(flood()) == "3"
    finally:
        holder.close()
    assert store.accuracy() == {"v1": (IN_FLIGHT + 1, IN_FLIGHT + 1)}


def test_a_gateways_start_forgets_label_texts_past_the_retention_and_keeps_the_labels(
    tmp_path, logged, feedback_stores
):
    log = logged("r1", "v1", [POSITIVE, NEGATIVE], ["old review", "recent review"])
    store = feedback_stores(log)
    store.submit("r1", 0, "positive", "old review")
    store.submit("r1", 1, "negative", "recent review")
    with sqlite3.connect(log.store.feedback_path) as db:
        db.execute("UPDATE feedback SET time = ? WHERE item = 0", (iso(time.time() - 31 * 86_400),))
    restarted = make_log(tmp_path, "gw", retention=30 * 86_400)
    restarted.start()  # expires at once, then at most once a minute
    restarted.close()
    assert labels(log.store.feedback_path) == {"r1:0": None, "r1:1": "recent review"}
    store._count(full=True)
    assert store.accuracy() == {"v1": (2, 2)}, "the labels stay"
