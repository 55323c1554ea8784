"""The prediction log on real SQLite files (monitoring/log_store's SQLiteFiles): what a row holds,
rotation, restarts, drops, and what happens while the store refuses writes."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.logs import REQUEST_ID
from gateway.observability import prediction_log
from gateway.observability.prediction_log import PredictionLog
from monitoring.log_store.files import SQLiteFiles
from monitoring.log_store.tables import Feedback, digest, iso
from tests.unit.log_files import wait_for

ROW = {"sentiment": "positive", "confidence": 0.9, "known_terms": 3, "known_term_ratio": 0.75}
LIMITS = {"max_bytes": 50_000_000, "max_age": 86_400.0}
# What a trigger makes SQLite answer to every insert: the error a full disk gives, for real.
FULL = (
    "CREATE TRIGGER full BEFORE INSERT ON predictions "
    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
)


@contextmanager
def request(request_id: str):
    """Records made inside are for this request id, as inside a request handler."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def rows(path: Path) -> list[dict]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM predictions ORDER BY rowid")]
    finally:
        db.close()


def files(log: PredictionLog) -> list[Path]:
    return sorted(log.store.folder.glob("*.sqlite"))


def logged_ids(folder: Path) -> list[str]:
    return [r["request_id"] for path in sorted(folder.glob("*.sqlite")) for r in rows(path)]


def make_log(folder: Path, replica: str = "gw", **options) -> PredictionLog:
    limits = {name: options.pop(name, value) for name, value in LIMITS.items()}
    return PredictionLog(SQLiteFiles(folder, replica, **limits), replica, **options)


def sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(statement)


def failed_tries(caplog) -> list[float]:
    """The back-off of each failed write, as the writer logged it."""
    found = []
    for record in caplog.records:
        match = re.search(r"held in memory \(next try in ([0-9.]+) s\)", record.getMessage())
        if match:
            found.append(float(match.group(1)))
    return found


def block(log: PredictionLog, tmp_path: Path) -> Path:
    """The disk refuses: no file can be made where the store would make its first one."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    folder, log.store.folder = log.store.folder, blocker / "predictions"
    return folder


@pytest.fixture
def started(tmp_path):
    logs = []

    def start(**options) -> PredictionLog:
        log = make_log(tmp_path, options.pop("replica", "host:8000"), **options)
        log.start()
        logs.append(log)
        return log

    yield start
    for log in logs:
        log.close()


def test_a_batch_is_logged_row_by_row_without_its_text(started, tmp_path):
    log = started()
    with request("req-1"):
        log.record("/predict/batch", "v3", [ROW, {**ROW, "sentiment": "negative"}], ["ab", "abcd"])
    assert log.flush()
    assert log.store.folder == tmp_path / "predictions" / "host_8000"
    [path] = files(log)
    logged = rows(path)
    assert [(r["request_id"], r["item"], r["sentiment"]) for r in logged] == [
        ("req-1", 0, "positive"),
        ("req-1", 1, "negative"),
    ]
    first = logged[0]
    assert first["route"] == "/predict/batch" and first["model_version"] == "v3"
    assert first["replica"] == "host:8000" and first["confidence"] == 0.9
    assert first["text_length"] == 2 and first["known_term_ratio"] == 0.75
    assert first["time"].endswith("+00:00")
    assert [r["text"] for r in logged] == [None, None]
    assert [r["text_digest"] for r in logged] == [digest("ab"), digest("abcd")]
    assert b"abcd" not in path.read_bytes()


def test_texts_are_kept_only_when_asked_for(started):
    log = started(keep_texts=True)
    log.record("/predict", "v1", [ROW], ["a fine film"])
    assert log.flush()
    assert [r["text"] for r in rows(files(log)[0])] == ["a fine film"]


def test_a_version_without_the_ratio_is_logged_with_null(started):
    log = started()
    log.record("/predict", "v1", [{"sentiment": "negative", "confidence": 0.6}], ["text"])
    assert log.flush()
    assert rows(files(log)[0])[0]["known_term_ratio"] is None


@pytest.mark.parametrize(
    "body, content_type, lengths",
    [
        ({"dataframe_split": {"columns": ["text"], "data": [["abc"], ["de"]]}}, "", [3, 2]),
        ({"dataframe_records": [{"text": "abc"}, {"text": "de"}]}, "application/json", [3, 2]),
        ({"inputs": {"text": ["abc", "de"]}}, "application/json", [3, 2]),
        ({"inputs": ["abc", "de"]}, "application/json", [3, 2]),
        ({"instances": [{"text": "abc"}, {"text": "de"}]}, "application/json", [3, 2]),
        ("text\nabc\nde\n", "text/csv", [3, 2]),
        # Formats it cannot read: the predictions are logged all the same, lengths unknown.
        ({"something": ["abc", "de"]}, "application/json", [None, None]),
        ("not json", "application/json", [None, None]),
        ({"dataframe_records": [{"text": "abc"}]}, "application/json", [None, None]),
    ],
)
def test_invocations_rows_are_read_from_every_format(started, body, content_type, lengths):
    log = started()
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    answer = json.dumps({"predictions": [ROW, ROW]}).encode()
    log.record_invocation("v2", raw, content_type, answer)
    assert log.flush()
    logged = rows(files(log)[0])
    assert [r["text_length"] for r in logged] == lengths
    assert {r["route"] for r in logged} == {"/invocations"}
    assert [r["item"] for r in logged] == [0, 1]


def test_an_answer_that_is_not_predictions_is_skipped(started):
    log = started()
    log.record_invocation("v2", b"{}", "application/json", b'{"predictions": 0.5}')
    log.record("/predict", "v2", [ROW], ["x"])
    assert log.flush()
    assert len(rows(files(log)[0])) == 1


def test_the_file_rotates_by_size(started):
    log = started(max_bytes=20_000)
    for _ in range(12):
        log.record("/predict/batch", "v1", [ROW] * 100, ["x" * 50] * 100)
        assert log.flush()
    assert len(files(log)) > 1
    assert sum(len(rows(p)) for p in files(log)) == 1200


def test_a_restart_writes_a_new_file_and_keeps_the_old_one(tmp_path):
    before = make_log(tmp_path, "gw")
    before.start()
    with request("old"):
        before.record("/predict", "v1", [ROW], ["x"])
    before.close()
    after = make_log(tmp_path, "gw")
    after.start()
    with request("new"):
        after.record("/predict", "v1", [ROW], ["x"])
    assert after.flush()
    after.close()
    assert len(files(after)) == 2
    reader = SQLiteFiles(tmp_path, None, **LIMITS)
    assert reader.find("old", 0) is not None and reader.find("new", 0) is not None


def test_replicas_write_side_by_side(started, tmp_path):
    one, two = started(replica="gateway-1"), started(replica="gateway-2")
    with request("a"):
        one.record("/predict", "v1", [ROW], ["x"])
    with request("b"):
        two.record("/predict", "v1", [ROW], ["x"])
    assert one.flush() and two.flush()
    assert one.store.folder != two.store.folder
    reader = SQLiteFiles(tmp_path, None, **LIMITS)
    assert reader.find("a", 0).replica == "gateway-1"
    assert reader.find("b", 0).replica == "gateway-2"
    assert reader.find("c", 0) is None and reader.find("a", 1) is None


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path):
    log = make_log(tmp_path, "gw", queue_size=2)  # not started: nothing drains the queue
    for _ in range(5):
        log.record("/predict", "v1", [ROW], ["x"])  # returns at once: no thread to wait for
    assert log.dropped == 3
    log.start()
    assert log.flush()
    log.close()
    assert len(rows(files(log)[0])) == 2


def test_files_past_the_retention_are_deleted_at_start(tmp_path):
    folder = tmp_path / "predictions" / "gw"
    folder.mkdir(parents=True)
    old, recent = folder / "20200101T000000Z.sqlite", folder / "20990101T000000Z.sqlite"
    for path in (old, recent):
        sqlite3.connect(path).close()
    os.utime(old, (time.time() - 3 * 86_400,) * 2)
    log = make_log(tmp_path, "gw", retention=2 * 86_400)
    log.start()
    log.close()
    assert not old.exists() and recent.exists()


def test_listeners_see_what_was_written(started):
    seen = []
    log = started(listeners=[seen.extend])
    log.record("/predict", "v4", [ROW], ["x"])
    assert log.flush()
    assert [(p.model_version, p.text_length) for p in seen] == [("v4", 1)]


def test_a_text_the_stores_cannot_take_is_kept_with_a_replacement(started):
    """A lone surrogate is valid JSON that UTF-8 refuses, and PostgreSQL refuses NUL: the
    batch must not be lost, and the digest is of the text as kept."""
    log = started(keep_texts=True)
    texts = ["bad \ud800 text", "nul \x00 here", "fine"]
    log.record("/predict/batch", "v1", [ROW, ROW, ROW], texts)
    assert log.flush()
    logged = rows(files(log)[0])
    assert [r["text"] for r in logged] == ["bad ? text", "nul ? here", "fine"]
    assert [r["text_digest"] for r in logged] == [digest(t) for t in texts]
    assert log.dropped == 0 and log.buffered == 0


def test_a_failed_write_is_held_and_written_once_the_store_works_again(started, tmp_path):
    """A database restart or a full disk loses nothing: the rows wait in memory, the writer
    tries again on its own (no new answer needed), and the live window sees the answer at
    once."""
    seen = []
    log = started(listeners=[seen.extend])
    folder = block(log, tmp_path)
    with request("held"):
        log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    assert (log.buffered, log.dropped) == (1, 0)
    assert [p.model_version for p in seen] == ["v1"]
    assert not folder.exists()
    log.store.folder = folder  # the disk has room again
    assert wait_for(lambda: log.buffered == 0), "the writer did not try again by itself"
    assert logged_ids(folder) == ["held"]
    assert log.dropped == 0


def test_past_the_buffer_the_oldest_held_answers_are_dropped_and_counted(
    started, tmp_path, monkeypatch
):
    # No retry before the close: longer than the test takes on the slowest machine.
    monkeypatch.setattr(prediction_log, "BACKOFF", 60.0)
    monkeypatch.setattr(prediction_log, "BACKOFF_MAX", 60.0)
    log = started(buffer=2)
    folder = block(log, tmp_path)
    for index in range(5):
        with request(f"r{index}"):
            log.record("/predict", "v1", [ROW], ["x"])
        assert log.flush()
    assert (log.buffered, log.dropped) == (2, 3)
    log.store.folder = folder
    log.close()  # the last try does not wait for the back-off
    assert logged_ids(folder) == ["r3", "r4"]
    assert (log.buffered, log.dropped) == (0, 3)


def test_what_the_last_try_at_close_cannot_write_is_counted_as_dropped(
    started, tmp_path, monkeypatch
):
    monkeypatch.setattr(prediction_log, "BACKOFF", 60.0)
    monkeypatch.setattr(prediction_log, "BACKOFF_MAX", 60.0)
    log = started()
    block(log, tmp_path)
    log.record("/predict", "v1", [ROW, ROW], ["x", "y"])
    log.record("/predict", "v1", [ROW], ["z"])
    assert log.flush()
    assert (log.buffered, log.dropped) == (2, 0)
    log.close()
    assert (log.buffered, log.dropped) == (0, 2)


def test_failed_writes_back_off_doubling_to_the_maximum_and_start_again_after_a_success(
    started, monkeypatch, caplog
):
    monkeypatch.setattr(prediction_log, "BACKOFF", 0.01)
    monkeypatch.setattr(prediction_log, "BACKOFF_MAX", 0.04)
    log = started()
    log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    [path] = files(log)
    sql(path, FULL)
    log.record("/predict", "v1", [ROW], ["x"])
    assert wait_for(lambda: len(failed_tries(caplog)) >= 5)
    assert failed_tries(caplog)[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]
    sql(path, "DROP TRIGGER full")
    assert wait_for(lambda: log.buffered == 0)
    caplog.clear()
    sql(path, FULL)
    log.record("/predict", "v1", [ROW], ["x"])
    assert wait_for(lambda: len(failed_tries(caplog)) >= 1)
    assert failed_tries(caplog)[0] == 0.01
    assert files(log) == [path]


def test_a_slow_stream_of_answers_is_written_in_few_transactions(started):
    """One transaction per request cost the gateway CPU at low rates: answers that arrive
    within the writer's linger go into one. The linger is long here, so that a stalled
    machine cannot split the stream; the flush at the end cuts it short."""
    log = started(listeners=[], linger=60.0)
    writes = []
    log.listeners.append(writes.append)  # called once per transaction, with its rows
    for index in range(40):
        with request(f"req-{index}"):
            log.record("/predict", "v1", [ROW], ["A fine film."])
        time.sleep(0.002)  # requests a few milliseconds apart, as at concurrency 1
    assert log.flush()
    assert sum(len(batch) for batch in writes) == 40
    assert len(writes) == 1, [len(batch) for batch in writes]


def test_a_full_disk_adds_no_file_per_try_backs_off_and_still_expires(
    started, tmp_path, monkeypatch, caplog
):
    """Each failed write used to open a new, empty file (about four a second under load),
    and nothing expired while the disk stayed full; expiring is what frees the disk."""
    # Longer than the flushes below take on the slowest machine.
    monkeypatch.setattr(prediction_log, "BACKOFF", 60.0)
    monkeypatch.setattr(prediction_log, "BACKOFF_MAX", 60.0)
    monkeypatch.setattr(prediction_log, "EXPIRE_EVERY", 0.0)  # every write looks
    now = time.time()
    log = started(retention=2 * 86_400)
    with request("before"):
        log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    [path] = files(log)
    sql(path, FULL)
    for index in range(5):
        with request(f"during-{index}"):
            log.record("/predict", "v1", [ROW], ["x"])
        assert log.flush()
    assert files(log) == [path]
    assert len(failed_tries(caplog)) == 1, "the next try waits for the back-off"
    assert (log.buffered, log.dropped) == (5, 0)
    # A replica that no longer runs left a file past the retention, and one within it; a
    # label's text is past it too.
    gone = tmp_path / "predictions" / "gone-replica"
    gone.mkdir()
    old, recent = gone / "20200101T000000Z.sqlite", gone / "20200102T000000Z.sqlite"
    for file, age in ((old, 3), (recent, 1)):
        sqlite3.connect(file).close()
        os.utime(file, (now - age * 86_400,) * 2)
    labels = SQLiteFiles(tmp_path, None, **LIMITS)
    old_label = iso(now - 3 * 86_400)
    labels.add_label(
        Feedback("before", 0, "positive", "old text", old_label, "v1", "positive", 0.9, "gw")
    )
    labels.close()
    with request("during-5"):
        log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    assert not old.exists() and recent.exists()
    with sqlite3.connect(labels.feedback_path) as db:
        assert db.execute("SELECT text FROM feedback").fetchall() == [(None,)]
    sql(path, "DROP TRIGGER full")  # room again: the last try writes all that was held
    log.close()
    assert files(log) == [path]
    assert logged_ids(path.parent) == ["before"] + [f"during-{i}" for i in range(6)]
    assert log.dropped == 0
