"""A large batch is shared between the live scoring server and its standby, and answered
exactly as one call to the live server would answer it."""

from __future__ import annotations

from tests.load import REVIEWS
from tests.reliability.conftest import serving


def calls(gw) -> float:
    for line in gw.http.get("/metrics").text.splitlines():
        if line.startswith("gateway_scoring_calls_total "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("gateway_scoring_calls_total not exported")


def test_a_large_batch_is_scored_half_by_the_standby_with_the_same_answers(gw, answers):
    gw.wait_for(lambda: gw.http.get("/info").json().get("standby_server"), timeout=120)
    version = f"v{serving(gw)}"
    texts = [REVIEWS[i % len(REVIEWS)] for i in range(400)]  # the split starts at 200
    before = calls(gw)
    response = gw.http.post("/predict/batch", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == version
    assert [p["confidence"] for p in body["predictions"]] == [
        answers[version][text] for text in texts
    ]
    assert calls(gw) == before + 2, "one call to the live server and one to its standby"
