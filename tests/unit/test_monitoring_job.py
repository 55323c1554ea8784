"""The monitor job's verdict rule and how it reads the log store (real SQLite files in the
layout the gateway writes, written through the store as the gateway does)."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from model.preprocess import clean_text
from monitoring.log_store.files import SQLiteFiles
from monitoring.log_store.postgres import PostgresStore
from monitoring.log_store.tables import Feedback, Prediction, iso
from pipelines import monitoring_job, promote
from pipelines.errors import MonitorError

LIMITS = {"max_bytes": 50_000_000, "max_age": 86_400.0}
EXPECTED = 0.88  # the reference's test accuracy


@pytest.mark.parametrize(
    ("case", "rows", "detected", "estimated", "measured", "labels", "verdict"),
    [
        ("nothing logged", 0, True, None, None, 0, "no_data"),
        ("stable and right", 1000, False, 0.87, 0.86, 200, "ok"),
        ("a shift the model copes with", 1000, True, 0.86, 0.87, 200, "drift"),
        ("labels say it is wrong", 1000, False, 0.87, 0.80, 200, "degraded"),
        ("too few labels to say so", 1000, False, 0.87, 0.50, monitoring_job.MIN_LABELS - 1, "ok"),
        ("confidence says it is wrong", 1000, True, 0.80, None, 0, "degraded"),
        (
            "exactly at the tolerance",
            1000,
            False,
            EXPECTED - monitoring_job.TOLERANCE,
            None,
            0,
            "ok",
        ),
        ("right labels do not hide a shift", 1000, True, 0.87, 0.99, 500, "drift"),
    ],
)
def test_verdict(case, rows, detected, estimated, measured, labels, verdict):
    assert (
        monitoring_job.verdict(rows, detected, EXPECTED, estimated, measured, labels) == verdict
    ), case


def write_log(state_dir, replica, predictions):
    """As a gateway replica writes: its own file under <state_dir>/monitoring."""
    store = SQLiteFiles(state_dir / "monitoring", replica, **LIMITS)
    store.write(predictions)
    store.close()


def row(at, request_id, version="v1", ratio=0.9, replica="gw:1"):
    return Prediction(
        time=iso(at),
        request_id=request_id,
        item=0,
        route="/predict",
        replica=replica,
        model_version=version,
        sentiment="positive",
        confidence=0.9,
        text_length=100,
        known_term_ratio=ratio,
    )


@pytest.fixture
def logged(tmp_path, monkeypatch):
    """Two replicas' logs under tmp_path (the state dir), read from the files."""
    monkeypatch.delenv(monitoring_job.LOG_URI, raising=False)
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    write_log(tmp_path, "gw:1", [row(now + timedelta(minutes=i), f"a{i}") for i in range(3)])
    write_log(
        tmp_path,
        "gw:2",
        [row(now + timedelta(minutes=5), "b0", "v2", replica="gw:2", ratio=None)],
    )
    return monitoring_job.log_store(tmp_path), now


def test_the_log_store_is_the_database_of_the_uri_else_the_files(tmp_path, monkeypatch):
    monkeypatch.delenv(monitoring_job.LOG_URI, raising=False)
    files = monitoring_job.log_store(tmp_path)
    assert isinstance(files, SQLiteFiles) and files.root == tmp_path / "monitoring"
    assert files.replica is None, "the job only reads"
    uri = "postgresql://reader:s3cret@db.example:5432/prediction_log"
    monkeypatch.setenv(monitoring_job.LOG_URI, uri)
    database = monitoring_job.log_store(tmp_path)  # no connection until a read
    assert isinstance(database, PostgresStore)
    assert "s3cret" not in repr(database) and "db.example" in repr(database)
    database.close()


def test_every_replicas_log_is_read_and_cut_to_the_period(logged):
    store, now = logged
    everything = monitoring_job.read_predictions(store, None, now + timedelta(hours=1))
    assert sorted(everything["request_id"]) == ["a0", "a1", "a2", "b0"]
    assert everything["at"].dt.tz is not None
    # (since, until]: the last run's end is not read again, this run's end is.
    period = monitoring_job.read_predictions(store, now, now + timedelta(minutes=2))
    assert sorted(period["request_id"]) == ["a1", "a2"]
    cut = monitoring_job.in_period(everything, now, now + timedelta(minutes=2))
    assert sorted(cut["request_id"]) == ["a1", "a2"]
    window = monitoring_job.window(everything[everything["model_version"] == "v2"])
    assert np.isnan(window["known_term_ratio"]).all()  # a version that does not report it


def test_without_a_gateway_the_served_version_is_the_one_that_answered_most(logged):
    """Not the last logged: a canary's challenger answers a small share, often last."""
    store, now = logged
    predictions = monitoring_job.read_predictions(store, None, now + timedelta(hours=1))
    # v1 three times, then v2 once
    assert monitoring_job.served_version("http://127.0.0.1:9", predictions) == "1"
    assert monitoring_job.served_version("http://127.0.0.1:9", predictions.iloc[:0]) is None


@pytest.fixture
def keyed_gateway():
    """A real HTTP server answering /info as a gateway with API keys does."""

    class Info(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("X-API-Key") != "the-key":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"model_version": "v7", "challenger": None}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Info)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_served_version_is_asked_with_the_key_and_a_refusal_is_an_error(
    logged, keyed_gateway, monkeypatch
):
    store, now = logged
    predictions = monitoring_job.read_predictions(store, None, now + timedelta(hours=1))
    monkeypatch.setenv("GATEWAY_API_KEY", "the-key")
    assert monitoring_job.served_version(keyed_gateway, predictions) == "7"
    monkeypatch.delenv("GATEWAY_API_KEY")
    with pytest.raises(MonitorError, match="set GATEWAY_API_KEY"):
        monitoring_job.served_version(keyed_gateway, predictions)
    monkeypatch.setenv("GATEWAY_API_KEY", "a-wrong-key")
    with pytest.raises(MonitorError, match="refused the key"):
        monitoring_job.served_version(keyed_gateway, predictions)


def test_no_files_read_as_no_rows(tmp_path, monkeypatch):
    monkeypatch.delenv(monitoring_job.LOG_URI, raising=False)
    store = monitoring_job.log_store(tmp_path)
    until = datetime.now(UTC)
    predictions = monitoring_job.read_predictions(store, None, until)
    feedback = monitoring_job.read_feedback(store, None, until)
    assert predictions.empty and {"model_version", "at"} <= set(predictions.columns)
    assert feedback.empty and {"label", "text", "at"} <= set(feedback.columns)
    assert not (tmp_path / "monitoring").exists(), "reading creates nothing"


def test_feedback_with_text_trains_but_never_a_held_out_review(tmp_path, monkeypatch):
    monkeypatch.delenv(monitoring_job.LOG_URI, raising=False)
    labels = SQLiteFiles(tmp_path / "monitoring", None, **LIMITS)
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)

    def add(request_id, label, text, sentiment="positive", at=now):
        labels.add_label(Feedback(request_id, 0, label, text, iso(at), "v1", sentiment, 0.7, "gw"))

    add("r1", "negative", "A dull film.")
    add("r2", "positive", None)
    add("r3", "positive", "In the validation split.", sentiment="negative")
    add("r4", "positive", "A fine film.")
    add("r0", "negative", "Before the period.", at=now - timedelta(days=1))
    store = monitoring_job.log_store(tmp_path)
    since, until = now - timedelta(hours=1), now + timedelta(hours=1)
    feedback = monitoring_job.read_feedback(store, since, until)
    assert sorted(feedback["request_id"]) == ["r1", "r2", "r3", "r4"]
    held_out = {clean_text("In the validation split.")}
    added = monitoring_job.feedback_reviews(feedback, held_out)
    assert added.to_dict("list") == {"text": ["A dull film.", "A fine film."], "label": [0, 1]}
    # Another case, spacing or punctuation is the same review to the model.
    for twin in ("in the VALIDATION split ", "In the validation split!!", "a DULL film"):
        add(twin, "negative", twin)
    feedback = monitoring_job.read_feedback(store, since, until)
    added = monitoring_job.feedback_reviews(feedback, held_out)
    assert "in the VALIDATION split " not in set(added["text"])
    assert "In the validation split!!" not in set(added["text"])
    assert len(added) == 2, "a DULL film is A dull film once cleaned"
    labels.close()


def test_a_challenger_with_feedback_in_training_faces_the_champion_on_its_validation_rows():
    # Feedback adds training rows only: the data digest, seed and sample that fix the
    # validation and test rows are the champion's, so the two are compared, not refused.
    trained_on = promote.TrainedOn("abc123", 42, 1500)
    champion = promote.Champion("1", promote.TrainedOn("abc123", 42, 1500), val_f1=0.85)
    decision = promote.decide("if_better", 0.86, trained_on, champion)
    assert decision.promote and "on the same validation rows" in decision.reason
    assert not promote.decide("if_better", 0.84, trained_on, champion).promote


def test_since_must_be_an_iso_time():
    with pytest.raises(SystemExit):
        monitoring_job.main(["--since", "yesterday"])
    assert pd.Timestamp(monitoring_job._since("2026-11-27T12:00:00+00:00")).tzinfo is not None
