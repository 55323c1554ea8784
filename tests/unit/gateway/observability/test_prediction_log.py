"""The prediction log on real SQLite files: what a row holds, rotation, restarts, drops."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.logs import REQUEST_ID
from gateway.observability import prediction_log
from gateway.observability.prediction_log import PredictionLog
from gateway.observability.prediction_store import find, replica_folder

ROW = {"sentiment": "positive", "confidence": 0.9, "known_terms": 3, "known_term_ratio": 0.75}


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
    return sorted(log.folder.glob("*.sqlite"))


@pytest.fixture
def started(tmp_path):
    logs = []

    def start(**options) -> PredictionLog:
        log = PredictionLog(tmp_path, options.pop("replica", "host:8000"), **options)
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
    assert log.folder == tmp_path / "predictions" / "host_8000"
    [path] = files(log)
    assert len(path.stem) == len("20261127T180000Z") and path.stem.endswith("Z")
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


def test_the_file_rotates_by_age(started):
    log = started(max_age=0.05)
    log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    first = log.path
    time.sleep(0.1)  # the age the rotation is about, not a wait for something to happen
    log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    assert log.path != first and len(files(log)) == 2


def test_a_restart_writes_a_new_file_and_keeps_the_old_one(tmp_path):
    before = PredictionLog(tmp_path, "gw")
    before.start()
    with request("old"):
        before.record("/predict", "v1", [ROW], ["x"])
    before.close()
    after = PredictionLog(tmp_path, "gw")
    after.start()
    with request("new"):
        after.record("/predict", "v1", [ROW], ["x"])
    assert after.flush()
    after.close()
    assert len(files(after)) == 2
    assert find(tmp_path, "old") is not None and find(tmp_path, "new") is not None


def test_replicas_write_side_by_side(started, tmp_path):
    one, two = started(replica="gateway-1"), started(replica="gateway-2")
    with request("a"):
        one.record("/predict", "v1", [ROW], ["x"])
    with request("b"):
        two.record("/predict", "v1", [ROW], ["x"])
    assert one.flush() and two.flush()
    assert one.folder != two.folder
    assert find(tmp_path, "a").replica == "gateway-1"
    assert find(tmp_path, "b").replica == "gateway-2"
    assert find(tmp_path, "c") is None and find(tmp_path, "a", item=1) is None


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path):
    log = PredictionLog(tmp_path, "gw", queue_size=2)  # not started: nothing drains the queue
    for _ in range(5):
        log.record("/predict", "v1", [ROW], ["x"])  # returns at once: no thread to wait for
    assert log.dropped == 3
    log.start()
    assert log.flush()
    log.close()
    assert len(rows(files(log)[0])) == 2


def test_files_past_the_retention_are_deleted(tmp_path):
    folder = tmp_path / "predictions" / "gw"
    folder.mkdir(parents=True)
    old, recent = folder / "20200101T000000Z.sqlite", folder / "20990101T000000Z.sqlite"
    for path in (old, recent):
        sqlite3.connect(path).close()
    os.utime(old, (time.time() - 3 * 86_400,) * 2)
    log = PredictionLog(tmp_path, "gw", retention=2 * 86_400)
    log.start()
    log.close()
    assert not old.exists() and recent.exists()


def test_listeners_see_what_was_written(started):
    seen = []
    log = started(listeners=[seen.extend])
    log.record("/predict", "v4", [ROW], ["x"])
    assert log.flush()
    assert [(p.model_version, p.text_length) for p in seen] == [("v4", 1)]


def test_replica_folder_names():
    assert replica_folder("host:8000") == "host_8000"
    assert replica_folder("gateway-1") == "gateway-1"
    assert replica_folder("a/b@c") == "a_b_c"


def test_a_text_sqlite_cannot_encode_is_kept_with_a_replacement(started):
    # A lone surrogate is valid JSON; SQLite's UTF-8 refuses it, and the batch must not be lost.
    log = started(keep_texts=True)
    log.record("/predict/batch", "v1", [ROW, ROW], ["bad \ud800 text", "fine"])
    assert log.flush()
    assert [r["text"] for r in rows(files(log)[0])] == ["bad ? text", "fine"]
    assert log.dropped == 0


def test_a_failed_write_is_counted_and_the_live_window_still_sees_the_answer(started, tmp_path):
    seen = []
    log = started(listeners=[seen.extend])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log.store.folder = blocker / "predictions"  # the disk refuses: no file can be made there
    log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    assert log.dropped == 1
    assert [p.model_version for p in seen] == ["v1"]


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
    started, tmp_path, monkeypatch
):
    """Each failed write used to open a new, empty file (about four a second under load),
    and nothing expired while the disk stayed full."""
    # Longer than the flushes below take on the slowest machine.
    monkeypatch.setattr(prediction_log, "BACKOFF", 60.0)
    cutoffs = []
    log = started(retention=2 * 86_400, expiring=[cutoffs.append])
    log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    attempts = []

    def full(db, predictions):
        attempts.append(len(predictions))
        raise sqlite3.OperationalError("database or disk is full")

    log.store._insert = full
    for _ in range(5):
        log.record("/predict", "v1", [ROW], ["x"])
        assert log.flush()
    assert len(files(log)) == 1, files(log)
    assert log.dropped == 5
    assert len(attempts) == 1, "the next try waits for the back-off"
    # A replica that no longer runs left a file past the retention: it goes anyway.
    gone = tmp_path / "predictions" / "gone-replica"
    gone.mkdir()
    old = gone / "20200101T000000Z.sqlite"
    sqlite3.connect(old).close()
    os.utime(old, (time.time() - 3 * 86_400,) * 2)
    log.store._next_expiry = 0.0  # the next minute's look
    log.record("/predict", "v1", [ROW], ["x"])
    assert log.flush()
    assert not old.exists() and not gone.exists()
    assert cutoffs and abs(cutoffs[-1] - (time.time() - 2 * 86_400)) < 60
