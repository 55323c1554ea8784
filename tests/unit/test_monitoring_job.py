"""The monitor job's verdict rule and how it reads the gateways' files (real SQLite files in
the layout the gateway writes)."""

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from gateway.observability import feedback as gateway_feedback
from gateway.observability import prediction_store
from model.preprocess import clean_text
from pipelines import monitoring_job, promote
from pipelines.errors import MonitorError

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


def write_log(folder, replica, start, rows):
    path = folder / "predictions" / prediction_store.replica_folder(replica)
    path.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path / f"{start:%Y%m%dT%H%M%SZ}.sqlite") as db:
        db.executescript(prediction_store.SCHEMA)
        db.executemany("INSERT INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def row(at, request_id, version="v1", ratio=0.9, replica="gw:1"):
    time = at.isoformat(timespec="milliseconds")
    return (
        time,
        request_id,
        0,
        "/predict",
        replica,
        version,
        "positive",
        0.9,
        100,
        ratio,
        None,
        None,
    )


@pytest.fixture
def logged(tmp_path):
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    write_log(tmp_path, "gw:1", now, [row(now + timedelta(minutes=i), f"a{i}") for i in range(3)])
    write_log(
        tmp_path,
        "gw:2",
        now,
        [row(now + timedelta(minutes=5), "b0", "v2", replica="gw:2", ratio=None)],
    )
    return tmp_path, now


def test_every_replicas_log_is_read_and_cut_to_the_period(logged):
    folder, now = logged
    everything = monitoring_job.read_predictions(folder)
    assert sorted(everything["request_id"]) == ["a0", "a1", "a2", "b0"]
    period = monitoring_job.in_period(everything, now, now + timedelta(minutes=2))  # (since, until]
    assert sorted(period["request_id"]) == ["a1", "a2"]
    window = monitoring_job.window(everything[everything["model_version"] == "v2"])
    assert np.isnan(window["known_term_ratio"]).all()  # a version that does not report it


def test_without_a_gateway_the_served_version_is_the_one_that_answered_most(logged):
    """Not the last logged: a canary's challenger answers a small share, often last."""
    folder, _ = logged
    predictions = monitoring_job.read_predictions(folder)  # v1 three times, then v2 once
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
    predictions = monitoring_job.read_predictions(logged[0])
    monkeypatch.setenv("GATEWAY_API_KEY", "the-key")
    assert monitoring_job.served_version(keyed_gateway, predictions) == "7"
    monkeypatch.delenv("GATEWAY_API_KEY")
    with pytest.raises(MonitorError, match="set GATEWAY_API_KEY"):
        monitoring_job.served_version(keyed_gateway, predictions)
    monkeypatch.setenv("GATEWAY_API_KEY", "a-wrong-key")
    with pytest.raises(MonitorError, match="refused the key"):
        monitoring_job.served_version(keyed_gateway, predictions)


def test_no_files_read_as_no_rows(tmp_path):
    assert monitoring_job.read_predictions(tmp_path).empty
    assert monitoring_job.read_feedback(tmp_path).empty


def test_feedback_with_text_trains_but_never_a_held_out_review(tmp_path):
    with sqlite3.connect(tmp_path / "feedback.sqlite") as db:
        db.executescript(gateway_feedback.SCHEMA)
        now = "2026-11-27T12:00:00.000+00:00"
        db.executemany(
            "INSERT INTO feedback VALUES (?,?,?,?,?,?,?,?,?)",
            [
                ("r1", 0, "negative", "A dull film.", now, "v1", "positive", 0.6, "gw"),
                ("r2", 0, "positive", None, now, "v1", "positive", 0.9, "gw"),
                ("r3", 0, "positive", "In the validation split.", now, "v1", "negative", 0.7, "gw"),
                ("r4", 0, "positive", "A fine film.", now, "v1", "positive", 0.8, "gw"),
            ],
        )
    feedback = monitoring_job.read_feedback(tmp_path)
    held_out = {clean_text("In the validation split.")}
    added = monitoring_job.feedback_reviews(feedback, held_out)
    assert added.to_dict("list") == {"text": ["A dull film.", "A fine film."], "label": [0, 1]}
    # Another case, spacing or punctuation is the same review to the model.
    for twin in ("in the VALIDATION split ", "In the validation split!!", "a DULL film"):
        with sqlite3.connect(tmp_path / "feedback.sqlite") as db:
            db.execute(
                "INSERT INTO feedback VALUES (?,?,?,?,?,?,?,?,?)",
                (twin, 0, "negative", twin, now, "v1", "positive", 0.6, "gw"),
            )
    added = monitoring_job.feedback_reviews(monitoring_job.read_feedback(tmp_path), held_out)
    assert "in the VALIDATION split " not in set(added["text"])
    assert "In the validation split!!" not in set(added["text"])
    assert len(added) == 2, "a DULL film is A dull film once cleaned"


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
