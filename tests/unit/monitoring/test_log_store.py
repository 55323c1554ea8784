"""The log store on real SQLite files (PostgreSQL: tests/reliability/test_log_store.py and the
monitor job's integration test): what the gateways write and the monitoring job reads, one
label per prediction, incremental counts, expiry, and a feedback.sqlite of before versions."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event

from monitoring.log_store import migrate
from monitoring.log_store.files import SQLiteFiles, replica_folder
from monitoring.log_store.store import AlreadyLabelled, open_store
from monitoring.log_store.tables import Feedback, Prediction, digest, iso, storable
from tests.unit.log_files import pre_digest_file

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
LIMITS = {"max_bytes": 50_000_000, "max_age": 86_400.0}
# The feedback table as gateways wrote it before the log store had versions.
OLD_FEEDBACK = """
CREATE TABLE feedback (request_id TEXT NOT NULL, item INTEGER NOT NULL, label TEXT NOT NULL,
    text TEXT, time TEXT NOT NULL, model_version TEXT NOT NULL, sentiment TEXT NOT NULL,
    confidence REAL NOT NULL, replica TEXT NOT NULL, PRIMARY KEY (request_id, item));
CREATE INDEX feedback_text_time ON feedback (time) WHERE text IS NOT NULL;
"""


def prediction(request_id, at=T0, item=0, version="v1", replica="gw-1", **values) -> Prediction:
    return Prediction(
        **{
            "time": iso(at),
            "request_id": request_id,
            "item": item,
            "route": "/predict",
            "replica": replica,
            "model_version": version,
            "sentiment": "positive",
            "confidence": 0.9,
            "text_length": 10,
            "known_term_ratio": 0.8,
            **values,
        }
    )


def label(request_id, item=0, answer="positive", given="positive", version="v1", **values):
    return Feedback(
        **{
            "request_id": request_id,
            "item": item,
            "label": given,
            "text": None,
            "time": iso(T0),
            "model_version": version,
            "sentiment": answer,
            "confidence": 0.9,
            "replica": "gw-1",
            **values,
        }
    )


@pytest.fixture
def stores(tmp_path):
    """``open(replica)``: a store on tmp_path, closed after the test."""
    opened = []

    def open_(replica: str | None = None, folder: Path = tmp_path, **limits) -> SQLiteFiles:
        store = SQLiteFiles(folder, replica, **{**LIMITS, **limits})
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def table(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_without_a_uri_the_store_is_the_files_in_the_folder(tmp_path):
    store = open_store(None, tmp_path, "gw-1", max_bytes=1000, max_age=5.0)
    assert isinstance(store, SQLiteFiles)
    assert (store.folder, store.max_bytes, store.max_age) == (
        tmp_path / "predictions" / "gw-1",
        1000,
        5.0,
    )


def test_replicas_write_their_own_files_and_any_store_finds_every_ones_predictions(stores):
    one, two = stores("gateway:1"), stores("gateway:2")
    one.write([prediction("a", item=0), prediction("a", item=1, sentiment="negative")])
    two.write([prediction("b", replica="gateway:2")])
    assert one.path.parent.name == "gateway_1" and two.path.parent.name == "gateway_2"
    assert len(one.path.stem) == len("20261127T180000Z") and one.path.stem.endswith("Z")
    reader = stores(None)
    assert reader.find("a", 1).sentiment == "negative"
    assert reader.find("b", 0).replica == "gateway:2"
    assert reader.find("a", 2) is None and reader.find("c", 0) is None
    with pytest.raises(RuntimeError, match="only reads"):
        reader.write([prediction("x")])


def test_the_latest_answer_by_time_is_found_when_a_request_id_repeats(stores):
    """A file is named by when it was opened, and replicas write side by side: the answer
    logged last may be in a file that sorts first."""
    one, two = stores("gateway-a"), stores("gateway-b")
    # Each way round, so that no order of reading the files finds both by luck.
    one.write([prediction("x", at=T0, version="v1")])
    two.write([prediction("x", at=T0 + timedelta(seconds=1), version="v2")])
    two.write([prediction("y", at=T0, version="v1")])
    one.write([prediction("y", at=T0 + timedelta(seconds=2), version="v3")])
    reader = stores(None)
    assert (reader.find("x", 0).model_version, reader.find("y", 0).model_version) == ("v2", "v3")


def test_a_prediction_file_of_before_versions_is_read_as_it_is(stores, tmp_path):
    """Files written before the digest column are never written again; the store reads what
    they have (and no digest: a sent text cannot be checked against them)."""
    old = pre_digest_file(
        tmp_path, (iso(T0), "old", 0, "/predict", "old", "v1", "negative", 0.7, 5, None, None)
    )
    found = stores(None).find("old", 0)
    assert (found.sentiment, found.text_digest) == ("negative", None)
    read = stores(None).read_predictions(None, T0)
    assert list(read["request_id"]) == ["old"]
    assert table(old, "SELECT name FROM sqlite_master WHERE name = 'log_store_version'") == []


def test_a_second_label_is_refused(stores):
    store = stores(None)
    store.add_label(label("r1"))
    with pytest.raises(AlreadyLabelled):
        store.add_label(label("r1", given="negative"))
    store.add_label(label("r1", item=1))  # another item of the same request
    with pytest.raises(AlreadyLabelled):
        stores("another-replica").add_label(label("r1", given="negative"))
    assert table(store.feedback_path, "SELECT request_id, item, label FROM feedback") == [
        ("r1", 0, "positive"),
        ("r1", 1, "positive"),
    ]


def test_labels_are_counted_from_the_last_one_counted(stores, tmp_path):
    """Every replica adds labels; each counts only those past the highest id it counted, and
    a store whose highest id is lower than that is a new one (count it all again)."""
    store = stores(None)
    assert store.count_labels(0) == ([], 0), "no feedback.sqlite yet"
    assert not store.feedback_path.exists(), "counting creates nothing"
    store.add_label(label("a", given="positive", version="v1"))
    store.add_label(label("b", given="negative", version="v1"))
    store.add_label(label("c", given="negative", answer="negative", version="v2"))
    rows, top = store.count_labels(0)
    assert sorted(rows) == [("v1", 2, 1, 2), ("v2", 1, 1, 3)] and top == 3
    stores("another-replica").add_label(label("d", version="v2"))
    assert store.count_labels(3) == ([("v2", 1, 1, 4)], 4)
    assert store.count_labels(4) == ([], 4)
    fresh = stores(None, folder=tmp_path / "fresh")
    fresh.add_label(label("e"))
    rows, top = fresh.count_labels(4)
    assert rows == [] and top == 1 < 4


@contextmanager
def statements_run(store: SQLiteFiles, verb: str):
    """The statements starting with ``verb`` the store runs on feedback.sqlite, with their
    parameters (seen on the way to the database: nothing is changed)."""
    seen: list[tuple[str, tuple]] = []

    def capture(connection, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(verb):
            seen.append((statement, tuple(parameters)))

    engine = store._labels()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def query_plan(path: Path, statement: str, parameters: tuple) -> str:
    with sqlite3.connect(path) as db:
        return " | ".join(r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters))


def test_counting_reads_the_labels_past_the_last_id_not_the_whole_table(stores):
    store = stores(None)
    store.add_label(label("a"))
    with statements_run(store, "SELECT") as seen:
        store.count_labels(1)
    [count] = [(sql, params) for sql, params in seen if "GROUP BY" in sql]
    plan = query_plan(store.feedback_path, *count)
    assert "INTEGER PRIMARY KEY (rowid>?)" in plan, plan


def test_expiry_reads_the_kept_texts_by_time_not_the_whole_table(stores):
    store = stores(None)
    store.add_label(label("a", text="a review", time="2019-01-01T00:00:00.000+00:00"))
    with statements_run(store, "UPDATE") as seen:
        store.expire(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
    [expire] = seen
    plan = query_plan(store.feedback_path, *expire)
    assert plan.startswith("SEARCH feedback USING INDEX feedback_text_time"), plan
    assert table(store.feedback_path, "SELECT text FROM feedback") == [(None,)]


def test_expiry_deletes_old_files_keeps_the_current_one_and_forgets_old_label_texts(
    stores, tmp_path
):
    now = time.time()
    writer = stores("gw-1")
    writer.write([prediction("current")])
    gone = stores("gone-replica")  # a replica that no longer runs left its files
    gone.write([prediction("gone", replica="gone-replica")])
    gone.close()
    kept = tmp_path / "predictions" / "gw-1" / "20260101T000000Z.sqlite"
    sqlite3.connect(kept).close()
    for path, age in ((writer.path, 3), (gone.path, 3), (kept, 1)):
        os.utime(path, (now - age * 86_400,) * 2)
    writer.add_label(label("old", text="an old review", time=iso(now - 3 * 86_400)))
    writer.add_label(label("new", text="a new review", time=iso(now - 86_400)))

    writer.expire(now - 2 * 86_400)

    assert writer.path.exists(), "the file being written stays, whatever its age"
    assert not gone.path.exists() and not gone.path.parent.exists()
    assert kept.exists()
    assert sorted(table(writer.feedback_path, "SELECT request_id, text FROM feedback")) == [
        ("new", "a new review"),
        ("old", None),
    ], "the labels stay, for the accuracy; only the old text goes"
    writer.write([prediction("after")])
    assert stores(None).find("after", 0) is not None


def test_a_period_is_read_since_exclusive_until_inclusive(stores):
    writer = stores("gw-1")
    at = [T0 + timedelta(minutes=minute) for minute in range(5)]
    writer.write([prediction(f"p{n}", at=moment, text="kept") for n, moment in enumerate(at)])
    for n, moment in enumerate(at):
        writer.add_label(label(f"p{n}", time=iso(moment), text=f"text {n}"))
    reader = stores(None)
    period = reader.read_predictions(at[1], at[3])
    assert list(period["request_id"]) == ["p2", "p3"]
    assert "text" not in period.columns, "the monitoring job never reads review text"
    assert list(reader.read_predictions(None, at[3])["request_id"]) == ["p0", "p1", "p2", "p3"]
    labels = reader.read_feedback(at[1], at[3])
    assert list(labels["request_id"]) == ["p2", "p3"]
    assert list(labels["text"]) == ["text 2", "text 3"]
    assert list(reader.read_feedback(None, at[0])["request_id"]) == ["p0"]


def test_nothing_written_reads_as_empty_frames_with_the_columns(stores):
    reader = stores(None)
    predictions, labels = reader.read_predictions(None, T0), reader.read_feedback(None, T0)
    assert predictions.empty and "model_version" in predictions.columns
    assert labels.empty and "label" in labels.columns
    assert "text" not in predictions.columns


def test_a_feedback_file_of_before_versions_is_migrated_keeping_its_rows_in_order(stores):
    store = stores(None)
    store.root.mkdir(parents=True, exist_ok=True)
    rows = [  # not in key order: the order they were written in is what counts
        ("r2", 0, "negative", "second review", iso(T0), "v1", "positive", 0.6, "gw"),
        ("r1", 1, "positive", None, iso(T0), "v1", "positive", 0.9, "gw"),
        ("r1", 0, "positive", None, iso(T0), "v2", "negative", 0.8, "gw"),
    ]
    with sqlite3.connect(store.feedback_path) as db:
        db.executescript(OLD_FEEDBACK)
        db.executemany("INSERT INTO feedback VALUES (?,?,?,?,?,?,?,?,?)", rows)

    assert store.count_labels(1) == ([("v1", 1, 1, 2), ("v2", 1, 0, 3)], 3)

    assert table(store.feedback_path, "SELECT id, request_id, item FROM feedback ORDER BY id") == [
        (1, "r2", 0),
        (2, "r1", 1),
        (3, "r1", 0),
    ]
    names = {name for (name,) in table(store.feedback_path, "SELECT name FROM sqlite_master")}
    assert "feedback_unversioned" not in names and "feedback_text_time" in names
    with pytest.raises(AlreadyLabelled):
        store.add_label(label("r1", item=1))
    store.add_label(label("r3"))
    assert store.count_labels(3)[1] == 4
    engine = create_engine(f"sqlite:///{store.feedback_path}")
    with engine.connect() as connection:
        assert migrate.current(connection) == migrate.head()


def test_the_newest_version_is_0001_and_an_upgraded_store_is_at_it(tmp_path):
    assert migrate.head() == "0001"
    engine = create_engine(f"sqlite:///{tmp_path / 'new.sqlite'}")
    with engine.connect() as connection:
        assert migrate.current(connection) is None
    migrate.upgrade(engine)
    migrate.upgrade(engine)  # again: nothing to do
    with engine.connect() as connection:
        assert migrate.current(connection) == migrate.head()
        tables = {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master")}
    assert {"predictions", "feedback", migrate.VERSION_TABLE} <= tables
    engine.dispose()


def test_a_prediction_file_is_at_the_newest_version(stores):
    writer = stores("gw-1")
    writer.write([prediction("a")])
    assert table(writer.path, f"SELECT version_num FROM {migrate.VERSION_TABLE}") == [("0001",)]


def test_a_text_with_a_nul_and_a_lone_surrogate_is_stored_as_storable_makes_it(stores):
    """A lone surrogate is valid JSON that UTF-8 cannot encode; PostgreSQL's text refuses NUL.
    Both become "?", the same on both backends, and the digest is of what is stored."""
    raw = "a\x00b\ud800c"
    kept = storable(raw)
    assert kept == "a?b?c"
    assert digest(raw) == hashlib.sha256(b"a?b?c").hexdigest() == digest(kept)
    writer = stores("gw-1")
    writer.write([prediction("odd", text=kept, text_digest=digest(raw))])
    writer.add_label(label("odd", text=kept))
    found = stores(None).find("odd", 0)
    assert (found.text, found.text_digest) == ("a?b?c", digest(raw))
    assert list(stores(None).read_feedback(None, T0)["text"]) == ["a?b?c"]
    with pytest.raises(UnicodeEncodeError):  # what storable() is for
        writer.write([prediction("raw", text=raw)])


def test_a_failed_write_reopens_the_same_file_not_a_new_one(stores, tmp_path):
    """The writer closes the store after a failed write; the next write goes to the file it
    was writing, so a full disk does not add a file per try."""
    writer = stores("gw-1")
    writer.write([prediction("a")])
    first = writer.path
    writer.close()
    writer.write([prediction("b")])
    assert writer.path == first
    assert sorted(r for (r,) in table(first, "SELECT request_id FROM predictions")) == ["a", "b"]


def test_files_rotate_by_size_and_by_age(stores):
    by_size = stores("size", max_bytes=8_000)
    for n in range(6):
        by_size.write([prediction(f"s{n}-{i}", replica="size", text="x" * 200) for i in range(20)])
    files = sorted(by_size.folder.glob("*.sqlite"))
    assert len(files) > 1
    total = sum(table(p, "SELECT COUNT(*) FROM predictions")[0][0] for p in files)
    assert total == 120
    by_age = stores("age", max_age=0.05)
    by_age.write([prediction("a", replica="age")])
    first = by_age.path
    time.sleep(0.1)  # the age the rotation is about
    by_age.write([prediction("b", replica="age")])
    assert by_age.path != first and len(list(by_age.folder.glob("*.sqlite"))) == 2


def test_replica_folder_names():
    assert replica_folder("host:8000") == "host_8000"
    assert replica_folder("gateway-1") == "gateway-1"
    assert replica_folder("a/b@c") == "a_b_c"
    assert replica_folder("") == "_"
