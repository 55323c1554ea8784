"""The one error type, the request middleware's handling of failures, and what is scrubbed
before anything is shown or logged. In-process: ASGI apps driven message by message."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from gateway.api.dataplane import _public
from gateway.api.middleware import Observe
from gateway.errors import ApiError
from gateway.logs import JsonLogs
from gateway.redact import remember, scrub, without_credentials


class Recorder:
    def __init__(self):
        self.seen: list[tuple[str, int]] = []

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.seen.append((endpoint, status))


def run(app, disconnected: bool = False) -> tuple[list[dict], list[tuple[str, int]]]:
    """One POST /predict through Observe; the messages sent and what the metrics saw."""
    sent, metrics = [], Recorder()
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}

    async def receive():
        if disconnected:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(Observe(app, metrics)(scope, receive, send))
    return sent, metrics.seen


def starts(sent: list[dict]) -> list[int]:
    return [m["status"] for m in sent if m["type"] == "http.response.start"]


async def fails_before_answering(scope, receive, send):
    raise RuntimeError("boom")


async def fails_after_a_500_started(scope, receive, send):
    await send({"type": "http.response.start", "status": 500, "headers": []})
    raise RuntimeError("boom while streaming the body")


async def fails_after_a_200_started(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise RuntimeError("boom while streaming the body")


def test_an_error_before_any_answer_gets_one_500():
    sent, seen = run(fails_before_answering)
    assert starts(sent) == [500]
    assert json.loads(sent[-1]["body"]) == {"detail": "Internal server error."}
    assert seen == [("/predict", 500)]


@pytest.mark.parametrize(
    "app,status", [(fails_after_a_500_started, 500), (fails_after_a_200_started, 200)]
)
def test_an_error_after_the_answer_started_sends_no_second_answer(app, status, caplog):
    with caplog.at_level(logging.INFO, logger="gateway"):
        sent, seen = run(app)
    assert starts(sent) == [status], "a second response after the first one started"
    assert seen == [("/predict", status)], "the metric must count the status really sent"
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert line.fields["status"] == status and line.fields["incomplete"] is True


async def answers_400_to_a_body_it_could_not_read(scope, receive, send):
    assert (await receive())["type"] == "http.disconnect"
    await ApiError(400, "There was an error parsing the body").send(send)


def test_a_client_that_left_before_its_answer_is_counted_apart(caplog):
    with caplog.at_level(logging.INFO, logger="gateway"):
        _, seen = run(answers_400_to_a_body_it_could_not_read, disconnected=True)
    assert seen == [("/predict", 499)], "no 400 was delivered: nobody was there"
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert line.fields["client_disconnected"] is True


def test_api_error_sent_from_middleware_is_the_same_body_and_headers():
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(ApiError(503, "Busy.", {"Retry-After": "1"}).send(send))
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"detail": "Busy."}
    response = ApiError(503, "Busy.", {"Retry-After": "1"}).response()
    assert json.loads(response.body) == {"detail": "Busy."}
    assert response.headers["retry-after"] == "1"


def test_known_terms_become_a_flag_only_when_none_was_known():
    row = {"sentiment": "negative", "confidence": 0.5, "known_terms": 0}
    assert _public(row) == {"sentiment": "negative", "confidence": 0.5, "no_known_terms": True}
    assert _public({"sentiment": "positive", "confidence": 0.9, "known_terms": 3}) == {
        "sentiment": "positive",
        "confidence": 0.9,
    }
    assert _public({"sentiment": "positive", "confidence": 0.9}) == {
        "sentiment": "positive",
        "confidence": 0.9,
    }, "a version without the column"
    assert "no_known_terms" not in _public(
        {"sentiment": "positive", "confidence": 0.5, "known_terms": False}
    )


def test_credentials_are_scrubbed_from_text_and_logs():
    remember("http://alice:S3cr%40t-pass@tracking.example:5000")
    quoted = "API request to http://alice:S3cr%40t-pass@tracking.example:5000/api failed"
    assert scrub(quoted) == "API request to http://tracking.example:5000/api failed"
    assert "S3cr@t-pass" not in scrub("password was S3cr@t-pass")
    assert without_credentials("https://bob:pw@h:1/x") == "https://h:1/x"
    record = logging.LogRecord(
        "mlflow", logging.WARNING, __file__, 1, "failed: %s", (quoted,), None
    )
    record.fields = {"url": "http://alice:S3cr%40t-pass@tracking.example:5000"}
    line = JsonLogs().format(record)
    assert "S3cr" not in line and "alice" not in line
    assert json.loads(line)["msg"] == "failed: " + scrub(quoted)
